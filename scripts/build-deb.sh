#!/bin/sh
# Builds the Debian package: the release binary, its man pages and shell
# completions (generated from the CLI), then `cargo deb` (the cargo-deb
# tool: `cargo install cargo-deb`). Prints the package's path last.
#
#   scripts/build-deb.sh [CARGO BUILD FLAGS...]   e.g. --features libpcap
set -eu
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || {
    echo "build-deb: cargo-deb is not installed (cargo install cargo-deb)" >&2
    exit 69
}
cargo build --release --locked "$@"
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
assets="$target/release/deb-assets"
rm -rf "$assets"
mkdir -p "$assets/completions"
"$target/release/vigil" man --out "$assets/man"
"$target/release/vigil" completions bash > "$assets/completions/vigil.bash"
"$target/release/vigil" completions zsh > "$assets/completions/_vigil"
"$target/release/vigil" completions fish > "$assets/completions/vigil.fish"
# The binary stripped; its debug symbols in a vigil-dbgsym .ddeb beside it.
rm -rf "$target/debian"
cargo deb --no-build --locked --dbgsym "$@" --output "$target/debian/" >/dev/null
ls "$target"/debian/vigil_*.deb
