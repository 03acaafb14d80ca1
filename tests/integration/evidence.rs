//! Evidence (issue #26): the collector's signing key, made on its first
//! start, kept across restarts, printed by `vigil evidence key` from the
//! data directory and over gRPC alike, and interoperable with OpenSSL
//! (fingerprint, signatures both ways).

use std::path::Path;
use std::process::Command;

use vigil_collector::evidence::{CollectorKey, DEFAULT_KEY, public_path};
use vigil_collector::server::{self, CollectorConfig};

use crate::util::{ran_with, rt, skip};

fn vigil(args: &[&str], dir: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("vigil");
    assert!(
        o.status.success(),
        "vigil {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn openssl(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("openssl").args(args).output() {
        Ok(o) => Some(o),
        Err(e) => {
            skip(&format!(
                "openssl not runnable ({e}): apt-get install openssl"
            ));
            None
        }
    }
}

#[test]
fn the_collector_key_is_made_once_and_agrees_with_openssl() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = || {
        rt().block_on(async {
            let c = server::start(CollectorConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                data.clone(),
            ))
            .await
            .expect("collector");
            let url = format!("http://{}", c.addr);
            let out = vigil(&["evidence", "key", "--collector", &url], tmp.path());
            c.shutdown().await.unwrap();
            out
        })
    };
    let remote = start();
    let key = data.join(DEFAULT_KEY);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is the owner's only");
    let local = vigil(
        &["evidence", "key", "--data-dir", data.to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(
        remote, local,
        "the same key, from the collector and from its directory"
    );
    assert_eq!(start(), remote, "kept across restarts");
    assert!(
        remote.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{remote}"
    );
    let fp = remote
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: sha256:"))
        .expect("a fingerprint line")
        .to_string();
    // OpenSSL: the fingerprint is the SHA-256 of the key's DER; a
    // signature of ours verifies with its tools, and one of its verifies
    // with the key's public half.
    let public = public_path(&key);
    let Some(der) = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        public.to_str().unwrap(),
        "-outform",
        "DER",
    ]) else {
        return;
    };
    ran_with("openssl");
    assert!(
        der.status.success(),
        "{}",
        String::from_utf8_lossy(&der.stderr)
    );
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(&der.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, fp);
    let msg = tmp.path().join("manifest.json");
    std::fs::write(&msg, b"{\"format\":1}").unwrap();
    let sig = tmp.path().join("manifest.sig");
    let k = CollectorKey::load_or_create(&key).unwrap();
    std::fs::write(&sig, k.sign(b"{\"format\":1}")).unwrap();
    let v = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        public.to_str().unwrap(),
        "-rawin",
        "-in",
        msg.to_str().unwrap(),
        "-sigfile",
        sig.to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        v.status.success(),
        "openssl refused our signature: {}",
        String::from_utf8_lossy(&v.stdout)
    );
    let theirs = tmp.path().join("theirs.sig");
    let s = openssl(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        key.to_str().unwrap(),
        "-rawin",
        "-in",
        msg.to_str().unwrap(),
        "-out",
        theirs.to_str().unwrap(),
    ])
    .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    use ed25519_dalek::Verifier as _;
    let bytes: [u8; 64] = std::fs::read(&theirs).unwrap().try_into().unwrap();
    k.verifying_key()
        .verify(
            b"{\"format\":1}",
            &ed25519_dalek::Signature::from_bytes(&bytes),
        )
        .expect("OpenSSL's signature with the key verifies");
}
