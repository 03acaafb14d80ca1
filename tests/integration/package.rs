//! The Debian package as an operator meets it: built by
//! `scripts/build-deb.sh` (cargo-deb), installed on this machine with dpkg,
//! its units checked by `systemd-analyze verify`, and the collector started
//! from the installed binary and configuration as the unit's user (a plain
//! process: no systemd runs here), then the package purged.
//!
//! Needs root, dpkg, systemd-analyze and cargo-deb (`cargo install
//! cargo-deb`); `.ci/run` provides them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::{http_get, ran_with, skip};

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What the test needs, or the reason it cannot run.
fn missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| text(&o));
    if uid.as_deref().map(str::trim) != Some("0") {
        return Some("installing a package needs root".into());
    }
    for tool in ["dpkg", "systemd-analyze"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    let deb = Command::new("cargo").args(["deb", "--version"]).output();
    if deb.map_or(true, |o| !o.status.success()) {
        return Some("cargo-deb is not installed (cargo install cargo-deb)".into());
    }
    None
}

/// Removes the package (and the state it made, if there was none before)
/// when the test ends, passed or not.
struct Installed {
    state_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "vigil"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !self.state_existed {
            let _ = std::fs::remove_dir_all("/var/lib/vigil");
            let _ = std::fs::remove_dir_all("/etc/vigil");
        }
    }
}

#[test]
fn debian_package_builds_installs_verifies_and_runs() {
    if let Some(why) = missing() {
        skip(&format!("Debian package not built: {why}"));
        return;
    }
    if Path::new("/usr/bin/vigil").exists()
        && !Command::new("dpkg")
            .args(["-s", "vigil"])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        panic!("/usr/bin/vigil exists and is not the vigil package's: not overwriting it");
    }
    ran_with("deb");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // In the environment a user's shell has: the variables `cargo test`
    // sets for tests would make the nested build's fingerprints differ
    // from every other release build's, and each would rebuild.
    let mut build = Command::new(root.join("scripts/build-deb.sh"));
    build.current_dir(root).env_clear();
    for var in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_INCREMENTAL",
        "TMPDIR",
    ] {
        if let Some(v) = std::env::var_os(var) {
            build.env(var, v);
        }
    }
    let built = run(&mut build);
    let deb = PathBuf::from(text(&built).lines().last().unwrap().trim());
    assert!(deb.exists(), "{}", deb.display());

    // Its contents: the binary, a man page per command, completions, the
    // units, commented configurations as conffiles.
    let listing = text(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    for path in [
        "./usr/bin/vigil",
        "./usr/share/man/man1/vigil.1",
        "./usr/share/man/man1/vigil-sensor.1",
        "./usr/share/man/man1/vigil-collector.1",
        "./usr/share/man/man1/vigil-pki-issue.1",
        "./usr/share/bash-completion/completions/vigil",
        "./usr/share/zsh/vendor-completions/_vigil",
        "./usr/share/fish/vendor_completions.d/vigil.fish",
        "./usr/lib/systemd/system/vigil-collector.service",
        "./usr/lib/systemd/system/vigil-sensor@.service",
        "./etc/vigil/collector.toml",
        "./etc/vigil/sensor.toml",
        "./usr/share/doc/vigil/contrib/prometheus/vigil-rules.yml",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{listing}"
        );
    }
    let conffiles = text(&run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles")));
    assert!(
        conffiles.contains("/etc/vigil/collector.toml"),
        "{conffiles}"
    );
    assert!(conffiles.contains("/etc/vigil/sensor.toml"), "{conffiles}");

    let _installed = Installed {
        state_existed: Path::new("/var/lib/vigil").exists(),
    };
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let user = text(&run(Command::new("getent").args(["passwd", "vigil"])));
    assert!(user.contains("/var/lib/vigil"), "{user}");
    assert!(Path::new("/var/lib/vigil/collector").is_dir());

    // The units, as systemd reads them: no warning at all.
    for unit in [
        "/usr/lib/systemd/system/vigil-collector.service",
        "vigil-sensor@eth0.service",
    ] {
        let o = run(Command::new("systemd-analyze").args(["verify", unit]));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            said.trim().is_empty(),
            "systemd-analyze verify {unit}: {said}"
        );
    }
    let sensor_unit =
        std::fs::read_to_string("/usr/lib/systemd/system/vigil-sensor@.service").unwrap();
    assert!(sensor_unit.contains("CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN\n"));
    let collector_unit =
        std::fs::read_to_string("/usr/lib/systemd/system/vigil-collector.service").unwrap();
    assert!(collector_unit.contains("CapabilityBoundingSet=\n"));
    for unit in [&sensor_unit, &collector_unit] {
        assert!(unit.contains("User=vigil\n") && unit.contains("ProtectSystem=strict\n"));
    }

    // The installed binary accepts the installed configurations.
    run(Command::new("/usr/bin/vigil").args([
        "collector",
        "--check-config",
        "/etc/vigil/collector.toml",
    ]));
    run(Command::new("/usr/bin/vigil").args([
        "sensor",
        "--config",
        "/etc/vigil/sensor.toml",
        "--interface",
        "lo",
        "--sensor-id",
        "pkg-test",
        "--spool-dir",
        "/var/lib/vigil/spool/lo",
        "--check-config",
    ]));

    // The collector as its unit runs it (the vigil user, the installed
    // configuration), on free ports rather than the configured ones.
    let grpc = crate::util::free_port();
    let http = crate::util::free_port();
    // Spawned as the user itself (not through runuser, whose child would
    // outlive the kill and hold the test's output open).
    let id = |flag: &str| -> u32 {
        text(&run(Command::new("id").args([flag, "vigil"])))
            .trim()
            .parse()
            .unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let mut collector = crate::metrics::Reaped(
        std::os::unix::process::CommandExt::gid(
            std::os::unix::process::CommandExt::uid(&mut Command::new("/usr/bin/vigil"), uid),
            gid,
        )
        .arg("collector")
        .args(["--config", "/etc/vigil/collector.toml"])
        .args(["--listen", &grpc.to_string()])
        .args(["--http-listen", &http.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let lines = crate::metrics::announced(
        &mut collector.0,
        &[
            "vigil collector: listening on ",
            "vigil collector: HTTP API on ",
        ],
    );
    assert_eq!(lines[0], grpc.to_string());
    let (status, _, body) = http_get(http, "/api/v1/sensors");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let o = run(Command::new("/usr/bin/vigil").args([
        "query",
        "--collector",
        &format!("http://{grpc}"),
        "--status",
    ]));
    let _ = text(&o);
    // The store was made by the vigil user, in the state directory.
    let owner = text(&run(Command::new("stat").args([
        "-c",
        "%U",
        "/var/lib/vigil/collector",
    ])));
    assert_eq!(owner.trim(), "vigil");
    drop(collector);
}
