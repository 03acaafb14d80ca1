//! Access to the HTTP API and console over HTTPS, with curl as the client:
//! nothing without credentials, an analyst's client certificate or an API
//! token from `vigil access token create` (stored hashed, revocable
//! without a restart), a certificate that is no analyst's refused, and the
//! console's sign-in page setting its cookie.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::metrics::{Reaped, announced};
use crate::util::{ran_with, skip, vigil};

/// `curl` with ARGS: (HTTP status, headers, body).
fn curl(args: &[&str]) -> (u16, String, String) {
    let o = Command::new("curl")
        .args(["-s", "-S", "-D", "-", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `vigil pki ARGS` into `pki`.
fn issue(pki: &Path, args: &[&str]) {
    crate::pki::ok(&crate::pki::run(args, pki), &args.join(" "));
}

/// `vigil access token ARGS --data-dir DATA`, its standard output.
fn access_token(data: &Path, args: &[&str]) -> String {
    let o = vigil()
        .args(["access", "token"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn https_api_and_console_need_an_analyst_certificate_or_token() {
    if Command::new("curl").arg("--version").output().is_err() {
        skip("curl is not installed: HTTPS access not checked");
        return;
    }
    ran_with("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let data = tmp.path().join("data");
    issue(&pki, &["pki", "init"]);
    issue(
        &pki,
        &[
            "pki",
            "issue",
            "collector",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
    );
    issue(&pki, &["pki", "issue", "analyst", "alice"]);
    issue(&pki, &["pki", "issue", "analyst", "mallory"]);
    let p = |f: &str| pki.join(f).to_str().unwrap().to_string();

    let mut collector = Reaped(
        vigil()
            .args(["collector", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--http-listen", "127.0.0.1:0", "--analyst", "alice"])
            .args([
                "--tls-cert",
                &p("localhost.pem"),
                "--tls-key",
                &p("localhost.key"),
            ])
            .args(["--tls-ca", &p("ca.pem")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let http = announced(&mut collector.0, &["vigil collector: HTTP API on "]);
    let base = http[0]
        .trim_end_matches("/api/v1/")
        .replace("http://", "https://");
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let url = |path: &str| format!("{base}{path}");
    let ca = p("ca.pem");
    let tls = ["--cacert", ca.as_str()];

    // Nothing without credentials; the API's description is open.
    let (s, head, body) = curl(&[&tls[..], &[&url("/api/v1/sensors")]].concat());
    assert_eq!(s, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("API token"), "{body}");
    assert_eq!(
        curl(&[&tls[..], &[&url("/api/v1/openapi.json")]].concat()).0,
        200
    );
    // A browser goes to the sign-in page, and back after.
    let (s, head, _) = curl(&[&tls[..], &[&url("/alerts?kind=scan")]].concat());
    assert_eq!(s, 303);
    assert!(
        head.contains("location: /login?next=%2falerts%3fkind%3dscan"),
        "{head}"
    );
    // Plaintext on the HTTPS port gets no answer.
    let plain = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(url("/api/v1/sensors").replace("https://", "http://"))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("\"sensors\""),
        "plaintext answered"
    );

    // An analyst's certificate; another certificate of the same CA that
    // is no analyst's is refused.
    let alice = ["--cert", &p("alice.pem"), "--key", &p("alice.key")].map(String::from);
    let alice: Vec<&str> = alice.iter().map(String::as_str).collect();
    let (s, _, body) = curl(&[&tls[..], &alice, &[&url("/api/v1/sensors")]].concat());
    assert_eq!(s, 200, "{body}");
    let mallory = ["--cert", &p("mallory.pem"), "--key", &p("mallory.key")].map(String::from);
    let mallory: Vec<&str> = mallory.iter().map(String::as_str).collect();
    let (s, _, body) = curl(&[&tls[..], &mallory, &[&url("/api/v1/alerts")]].concat());
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("mallory") && body.contains("not an analyst"),
        "{body}"
    );

    // An API token: printed once, kept hashed, taken while the collector
    // runs, refused once revoked.
    let token = access_token(&data, &["create", "bob"]).trim().to_string();
    assert!(token.starts_with("vigil_"), "{token}");
    let stored = std::fs::read_to_string(data.join("access/tokens.json")).unwrap();
    assert!(!stored.contains(&token["vigil_".len()..]), "{stored}");
    let bearer = format!("Authorization: Bearer {token}");
    let (s, _, body) = curl(&[&tls[..], &["-H", &bearer, &url("/api/v1/alerts")]].concat());
    assert_eq!(s, 200, "{body}");
    let wrong = format!("Authorization: Bearer {token}x");
    let (s, _, body) = curl(&[&tls[..], &["-H", &wrong, &url("/api/v1/alerts")]].concat());
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("not valid or was revoked"), "{body}");

    // The console: signing in with the token sets a cookie a browser keeps
    // to this site's HTTPS only and never shows to scripts.
    let form = format!("token={token}&next=%2Fsensors");
    let (s, head, _) = curl(&[&tls[..], &["--data", &form, &url("/login")]].concat());
    assert_eq!(s, 303, "{head}");
    assert!(head.contains("location: /sensors"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .to_string();
    for attr in ["httponly", "secure", "samesite=strict", "path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let jar = format!("vigil_token={token}");
    let (s, _, page) = curl(&[&tls[..], &["--cookie", &jar, &url("/sensors")]].concat());
    assert_eq!(s, 200);
    assert!(page.contains("Sensors"), "{page}");
    let (s, _, page) = curl(
        &[
            &tls[..],
            &["--data", "token=vigil_nope&next=%2F", &url("/login")],
        ]
        .concat(),
    );
    assert_eq!(s, 401);
    assert!(page.contains("not valid or was revoked"), "{page}");

    access_token(&data, &["revoke", "bob"]);
    let (s, _, _) = curl(&[&tls[..], &["-H", &bearer, &url("/api/v1/alerts")]].concat());
    assert_eq!(s, 401, "a revoked token is refused without a restart");
    let (s, _, _) = curl(&[&tls[..], &["--cookie", &jar, &url("/sensors")]].concat());
    assert_eq!(s, 303);
    drop(collector);
}

/// Off loopback, the HTTP listener needs TLS: refused at load without it,
/// accepted with it.
#[test]
fn http_off_loopback_needs_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("c.toml");
    let data = tmp.path().join("d");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"0.0.0.0:8680\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let o = vigil()
        .args(["collector", "--check-config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("collector.http.listen") && e.contains("[tls]"),
        "{e}"
    );
    let tls = "[tls]\ncert = \"c.pem\"\nkey = \"c.key\"\nca = \"ca.pem\"\n";
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        format!(
            "{}{tls}",
            text.replace("[http]", "listen = \"127.0.0.1:50051\"\n[http]")
        ),
    )
    .unwrap();
    let o = vigil()
        .args(["collector", "--check-config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
