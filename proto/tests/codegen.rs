//! The generated Rust code in `src/gen/` is committed (no `protoc` at build
//! time). This test regenerates it from `proto/` with the pure-Rust `protox`
//! compiler and fails on any difference; `VIGIL_BLESS=1` rewrites it.

use std::path::Path;

#[test]
fn generated_code_matches_the_proto_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(["vigil/v1/vigil.proto"], [root.join("proto")])
        .unwrap_or_else(|e| panic!("compiling proto/vigil/v1/vigil.proto: {e}"));
    let out = tempfile::tempdir().expect("temp dir");
    tonic_prost_build::configure()
        .build_transport(false)
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("generating code");
    let fresh = std::fs::read_to_string(out.path().join("vigil.v1.rs")).expect("generated file");
    let committed_path = root.join("src/gen/vigil.v1.rs");
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if std::env::var_os("VIGIL_BLESS").is_some() {
        if committed != fresh {
            std::fs::write(&committed_path, &fresh).expect("writing src/gen/vigil.v1.rs");
        }
        return;
    }
    assert!(
        committed == fresh,
        "src/gen/vigil.v1.rs is stale: regenerate with `VIGIL_BLESS=1 cargo test -p vigil-proto --test codegen`"
    );
}
