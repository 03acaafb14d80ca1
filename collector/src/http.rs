//! A small blocking HTTP/1.1 client, shared by the ClickHouse store and the
//! TAXII push: one request per connection (`Connection: close`), so a
//! response is read to the end of the stream; chunked bodies are decoded.
//! Over `https://` (rustls, TLS 1.2 and 1.3) the server's certificate is
//! checked against the CA file given or, without one, the system's CA
//! bundle; a client certificate may be presented.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;

/// A request failed before an HTTP status was read.
#[derive(Debug, Error)]
pub enum Failure {
    /// The TLS set-up failed: no CA certificates, a bad file.
    #[error("{0}")]
    Tls(String),
    /// The server could not be reached or the connection broke.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The answer is not HTTP as expected.
    #[error("malformed response: {0}")]
    Protocol(&'static str),
}

/// An answer.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where the system keeps its CA bundle (Debian, Fedora, Alpine, SUSE).
const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// A server to send requests to.
#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    secure: bool,
    timeout: Duration,
    roots: Option<Arc<rustls::RootCertStore>>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    tls: Option<Tls>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr())
            .field("secure", &self.secure)
            .finish()
    }
}

impl Client {
    /// `host:port`, plain or over TLS; for TLS the system's CA bundle is
    /// trusted until [`Client::with_ca_file`] says otherwise.
    pub fn new(host: &str, port: u16, secure: bool) -> Client {
        let mut c = Client {
            host: host.to_string(),
            port,
            secure,
            timeout: Duration::from_secs(300),
            roots: None,
            identity: None,
            tls: None,
        };
        if secure {
            let system = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .chain(SYSTEM_CA_FILES.iter().map(std::path::PathBuf::from))
                .find(|p| p.is_file());
            // A bundle that cannot be read or holds no certificate is as
            // good as none: a CA file may still be given.
            if let Some(certs) = system.and_then(|p| read_certs(&p).ok()) {
                let _ = c.set_roots(&certs);
            }
        }
        c
    }

    /// Per-request read and write timeout (default 300 s).
    pub fn with_timeout(mut self, t: Duration) -> Client {
        self.timeout = t;
        self
    }

    /// Trusts only the CA certificates (PEM) in `path`.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Client, Failure> {
        if !self.secure {
            return Err(Failure::Tls(format!(
                "a CA file ({}) is for https:// URLs only",
                path.display()
            )));
        }
        let certs = read_certs(path)?;
        self.set_roots(&certs)?;
        Ok(self)
    }

    /// Presents this client certificate chain and key (PEM files).
    pub fn with_client_cert(mut self, cert: &Path, key: &Path) -> Result<Client, Failure> {
        let chain = read_certs(cert)?;
        let pem =
            std::fs::read(key).map_err(|e| Failure::Tls(format!("{}: {e}", key.display())))?;
        let k = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| Failure::Tls(format!("{}: no private key: {e}", key.display())))?;
        self.identity = Some((chain, Arc::new(k)));
        self.rebuild()?;
        Ok(self)
    }

    fn set_roots(&mut self, certs: &[CertificateDer<'static>]) -> Result<(), Failure> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(Failure::Tls(
                "no CA certificate to check the server's against".into(),
            ));
        }
        self.roots = Some(Arc::new(roots));
        self.rebuild()
    }

    fn rebuild(&mut self) -> Result<(), Failure> {
        let Some(roots) = &self.roots else {
            return Ok(());
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Tls(e.to_string()))?
        .with_root_certificates(roots.clone());
        let config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| Failure::Tls(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| Failure::Tls(format!("server name {:?}: {e}", self.host)))?;
        self.tls = Some(Tls {
            config: Arc::new(config),
            name,
        });
        Ok(())
    }

    /// Whether requests go over TLS.
    pub fn is_tls(&self) -> bool {
        self.secure
    }

    /// host:port, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends one request (`path` with its query string) with `headers`
    /// and `body` (parts sent one after another); reads the whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[&[u8]],
    ) -> Result<Response, Failure> {
        if self.secure && self.tls.is_none() {
            return Err(Failure::Tls(
                "no CA certificate to check the server's against: no system CA bundle, \
                 and no CA file given"
                    .into(),
            ));
        }
        // Each address the name resolves to, in turn (localhost is ::1
        // and 127.0.0.1; a server may listen on one only).
        let mut last = io::Error::other("the name resolves to no address");
        let mut conn = None;
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    conn = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(mut s) = conn else {
            return Err(Failure::Io(last));
        };
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let _ = s.set_nodelay(true);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr(),
            body.iter().map(|p| p.len()).sum::<usize>()
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut resp = Vec::new();
        match &self.tls {
            None => exchange(&mut s, head.as_bytes(), body, &mut resp),
            Some(t) => {
                let conn = rustls::ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(|e| Failure::Tls(e.to_string()))?;
                let mut tls = rustls::StreamOwned::new(conn, s);
                match exchange(&mut tls, head.as_bytes(), body, &mut resp) {
                    // A server that closes without TLS's close_notify: the
                    // response's own framing says whether it is whole.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !resp.is_empty() => {
                        Ok(())
                    }
                    r => r,
                }
            }
        }?;
        parse_response(&resp)
    }
}

fn parse_response(resp: &[u8]) -> Result<Response, Failure> {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(Failure::Protocol("no end of headers"))?;
    let head =
        std::str::from_utf8(&resp[..end]).map_err(|_| Failure::Protocol("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(Failure::Protocol("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
    let raw = &resp[end + 4..];
    let body = if chunked {
        dechunk(raw).ok_or(Failure::Protocol("bad chunked body"))?
    } else {
        if length.is_some_and(|n| n != raw.len()) {
            return Err(Failure::Protocol(
                "body shorter or longer than its Content-Length",
            ));
        }
        raw.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Writes the request, reads the response to the end of the stream.
fn exchange(
    s: &mut (impl Read + Write),
    head: &[u8],
    body: &[&[u8]],
    resp: &mut Vec<u8>,
) -> io::Result<()> {
    s.write_all(head)?;
    for part in body {
        s.write_all(part)?;
    }
    s.flush()?;
    s.read_to_end(resp).map(|_| ())
}

/// The certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let pem = std::fs::read(path).map_err(|e| Failure::Tls(format!("{}: {e}", path.display())))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Tls(format!("{}: {e}", path.display())))
}

/// Appends `v` percent-encoded (everything but unreserved characters).
pub fn percent_encode(v: &str, out: &mut String) {
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// `http[s]://HOST[:PORT]/PATH`, split: (TLS, host, port, path beginning
/// with `/`). Default ports 80 and 443.
pub fn split_url(url: &str) -> Option<(bool, String, u16, String)> {
    let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default = if secure { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            if h.contains(':') && !h.starts_with('[') {
                return None;
            }
            (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().ok()?,
            )
        }
        _ => (
            authority
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            default,
        ),
    };
    if host.is_empty() {
        return None;
    }
    Some((secure, host, port, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_none());
    }

    #[test]
    fn values_are_percent_encoded() {
        let mut s = String::new();
        percent_encode("INSERT INTO t FORMAT RowBinary&x=1", &mut s);
        assert_eq!(s, "INSERT%20INTO%20t%20FORMAT%20RowBinary%26x%3D1");
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("https://taxii.example/api1/").unwrap(),
            (true, "taxii.example".into(), 443, "/api1/".into())
        );
        assert_eq!(
            split_url("http://127.0.0.1:6100/api1/").unwrap(),
            (false, "127.0.0.1".into(), 6100, "/api1/".into())
        );
        assert_eq!(
            split_url("http://[::1]:8/x").unwrap(),
            (false, "::1".into(), 8, "/x".into())
        );
        for bad in ["ftp://x/", "http:///a", "http://u@h/", "http://h:x/"] {
            assert!(split_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn responses_parse_with_headers() {
        let r = parse_response(
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/taxii+json;version=2.1\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(r.status, 202);
        assert_eq!(
            r.header("content-type"),
            Some("application/taxii+json;version=2.1")
        );
        assert_eq!(r.body, b"{}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
    }
}
