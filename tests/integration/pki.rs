//! `vigil pki`: the three commands of an mTLS site (an authority, the
//! collector's certificate, a sensor's) and an analyst's, checked by
//! OpenSSL (chain, names, key usages) and used for real: a collector
//! process with them, a sensor streaming over mTLS, the analyst reading,
//! the sensor's certificate refused for reading.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::{free_port, ran_with, skip, vigil};

/// `vigil ARGS --dir DIR`.
pub(crate) fn run(args: &[&str], dir: &Path) -> Output {
    vigil().args(args).arg("--dir").arg(dir).output().unwrap()
}

/// Asserts `o` succeeded, with its standard error and `what` if not.
pub(crate) fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `openssl ARGS`, its standard output.
fn openssl(args: &[&str]) -> String {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn three_commands_make_an_mtls_site_that_works() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    ok(&run(&["pki", "init"], &pki), "init");
    ok(
        &run(
            &[
                "pki",
                "issue",
                "collector",
                "localhost",
                "--ip",
                "127.0.0.1",
            ],
            &pki,
        ),
        "collector",
    );
    ok(&run(&["pki", "issue", "sensor", "site-1"], &pki), "sensor");
    ok(&run(&["pki", "issue", "analyst", "alice"], &pki), "analyst");
    {
        use std::os::unix::fs::PermissionsExt as _;
        for k in ["ca.key", "localhost.key", "site-1.key", "alice.key"] {
            let mode = std::fs::metadata(pki.join(k)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
        }
    }
    // Made once; names the collector would refuse are refused here.
    let again = run(&["pki", "init"], &pki);
    assert_eq!(again.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let again = run(&["pki", "issue", "sensor", "site-1"], &pki);
    assert_eq!(again.status.code(), Some(64));
    let bad = run(&["pki", "issue", "analyst", "bob smith"], &pki);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("[access] analysts"));
    let bad = run(&["pki", "issue", "sensor", "s2", "--ip", "10.0.0.1"], &pki);
    assert_eq!(bad.status.code(), Some(64));
    let none = run(
        &["pki", "issue", "sensor", "s3"],
        &tmp.path().join("nowhere"),
    );
    assert_eq!(none.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&none.stderr).contains("vigil pki init"));

    let have_openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if have_openssl {
        let p = |f: &str| pki.join(f).to_str().unwrap().to_string();
        let ca = p("ca.pem");
        for (cert, purpose) in [
            ("localhost.pem", "sslserver"),
            ("localhost.pem", "sslclient"),
            ("site-1.pem", "sslclient"),
            ("alice.pem", "sslclient"),
        ] {
            let out = openssl(&["verify", "-CAfile", &ca, "-purpose", purpose, &p(cert)]);
            assert!(out.contains(": OK"), "{cert} for {purpose}: {out}");
        }
        // A sensor's certificate is no server's.
        let o = Command::new("openssl")
            .args([
                "verify",
                "-CAfile",
                &ca,
                "-purpose",
                "sslserver",
                &p("site-1.pem"),
            ])
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "a sensor certificate verified as a server's"
        );
        let text = openssl(&["x509", "-in", &p("localhost.pem"), "-noout", "-text"]);
        assert!(
            text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
            "{text}"
        );
        let text = openssl(&["x509", "-in", &p("site-1.pem"), "-noout", "-text"]);
        assert!(text.contains("DNS:site-1"), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        let text = openssl(&["x509", "-in", &ca, "-noout", "-text"]);
        assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
        ran_with("openssl");
    } else {
        skip("openssl is not installed (apt-get install openssl)");
    }

    // Used for real: collector, sensor and analyst over mTLS.
    let addr = free_port();
    let data = tmp.path().join("data");
    let f = |n: &str| pki.join(n).to_str().unwrap().to_string();
    let mut collector = vigil()
        .args(["collector", "--listen", &addr.to_string(), "--data-dir"])
        .arg(&data)
        .args([
            "--tls-cert",
            &f("localhost.pem"),
            "--tls-key",
            &f("localhost.key"),
        ])
        .args(["--tls-ca", &f("ca.pem"), "--analyst", "alice"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let url = format!("https://localhost:{}", addr.port());
    let pcap = crate::cli::sample(tmp.path());
    let o = vigil()
        .args(["sensor", "-r", pcap.to_str().unwrap(), "--collector", &url])
        .args(["--sensor-id", "site-1", "--spool-dir"])
        .arg(tmp.path().join("spool"))
        .args([
            "--tls-cert",
            &f("site-1.pem"),
            "--tls-key",
            &f("site-1.key"),
        ])
        .args(["--tls-ca", &f("ca.pem")])
        .output()
        .unwrap();
    ok(&o, "sensor over mTLS");
    let query = |who: &str| {
        vigil()
            .args(["query", "--count", "--format", "jsonl", "--collector", &url])
            .args(["--tls-cert", &f(&format!("{who}.pem"))])
            .args([
                "--tls-key",
                &f(&format!("{who}.key")),
                "--tls-ca",
                &f("ca.pem"),
            ])
            .output()
            .unwrap()
    };
    let o = query("alice");
    ok(&o, "analyst query");
    let totals: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(totals["flows"], 2, "{totals}");
    let o = query("site-1");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not an analyst"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = collector.kill();
    let _ = collector.wait();
}
