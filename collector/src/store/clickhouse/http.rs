//! A small blocking client for ClickHouse's HTTP interface.
//!
//! One request per connection (`Connection: close`), so a response is read
//! to the end of the stream; chunked bodies are decoded. Statements go in
//! the body (SELECT, DDL) or, for INSERT with data, in the `query` URL
//! parameter with the data as the body. Credentials travel as the
//! `user`/`password` parameters, which every ClickHouse release accepts
//! (18.16 included); over `https://` (rustls, TLS 1.2 and 1.3) they travel
//! encrypted, and the server's certificate is checked against the CA given
//! or, without one, the system's CA bundle.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use thiserror::Error;

/// A ClickHouse request failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The URL is not `http://HOST:PORT` or `https://HOST:PORT`.
    #[error("clickhouse URL {0:?}: expected http://HOST[:PORT] or https://HOST[:PORT]")]
    Url(String),
    /// The TLS set-up failed: no CA certificates, a bad file.
    #[error("clickhouse TLS: {0}")]
    Tls(String),
    /// The server could not be reached or the connection broke.
    #[error("clickhouse at {addr}: {source}")]
    Io {
        /// host:port.
        addr: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The server answered with an error.
    #[error("clickhouse at {addr}: HTTP {status}: {message}")]
    Server {
        /// host:port.
        addr: String,
        /// HTTP status.
        status: u16,
        /// ClickHouse's message (its first line).
        message: String,
    },
    /// The answer is not HTTP as expected.
    #[error("clickhouse at {addr}: malformed response: {what}")]
    Protocol {
        /// host:port.
        addr: String,
        /// What was wrong.
        what: &'static str,
    },
}

/// Where and as whom.
#[derive(Clone, Debug)]
pub struct Endpoint {
    host: String,
    port: u16,
    user: String,
    password: String,
    timeout: Duration,
    /// An `https://` URL.
    secure: bool,
    /// What `https://` is checked with: the CA file given, else the
    /// system's bundle; `None` without either (requests then fail).
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

/// Where the system keeps its CA bundle (Debian, Fedora, Alpine, SUSE).
const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

impl Endpoint {
    /// Parses `http://HOST[:PORT][/]` (port 8123 by default) or
    /// `https://HOST[:PORT][/]` (port 8443 by default; the server's
    /// certificate checked against the system's CA bundle, see
    /// [`Endpoint::with_ca_file`]).
    pub fn parse(url: &str, user: &str, password: &str) -> Result<Endpoint, HttpError> {
        let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => return Err(HttpError::Url(url.to_string())),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(HttpError::Url(url.to_string()));
        }
        let default_port = if secure { 8443 } else { 8123 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().map_err(|_| HttpError::Url(url.to_string()))?,
            ),
            _ => (rest.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(HttpError::Url(url.to_string()));
        }
        let mut e = Endpoint {
            host,
            port,
            user: user.to_string(),
            password: password.to_string(),
            timeout: Duration::from_secs(300),
            secure,
            tls: None,
        };
        if secure {
            let system = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .chain(SYSTEM_CA_FILES.iter().map(std::path::PathBuf::from))
                .find(|p| p.is_file());
            // A bundle that cannot be read or holds no certificate is as
            // good as none: the CA file may still be given (`with_ca_file`).
            e.tls = system
                .and_then(|p| read_certs(&p).ok())
                .and_then(|c| e.tls_with(&c).ok());
        }
        Ok(e)
    }

    /// Trusts only the CA certificates (PEM) in `path` for `https://`.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Endpoint, HttpError> {
        if !self.secure {
            return Err(HttpError::Tls(format!(
                "a CA file ({}) is for https:// URLs only",
                path.display()
            )));
        }
        let certs = read_certs(path)?;
        self.tls = Some(self.tls_with(&certs)?);
        Ok(self)
    }

    fn tls_with(&self, certs: &[CertificateDer<'static>]) -> Result<Tls, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(HttpError::Tls(
                "no CA certificate to check the server's against (give store.clickhouse.ca)".into(),
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| HttpError::Tls(format!("server name {:?}: {e}", self.host)))?;
        Ok(Tls {
            config: Arc::new(config),
            name,
        })
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

    fn io(&self, source: io::Error) -> HttpError {
        HttpError::Io {
            addr: self.addr(),
            source,
        }
    }

    /// Runs a statement given in the body; returns the response body.
    pub fn query(&self, sql: &str) -> Result<Vec<u8>, HttpError> {
        self.post(&[], &[sql.as_bytes()])
    }

    /// Runs `INSERT … FORMAT …` with `data` as the rows.
    pub fn insert(&self, statement: &str, data: &[u8]) -> Result<(), HttpError> {
        self.insert_parts(statement, &[data])
    }

    /// [`Self::insert`] with the data given as parts sent one after another
    /// (column buffers, without copying them into one).
    pub fn insert_parts(&self, statement: &str, parts: &[&[u8]]) -> Result<(), HttpError> {
        self.post(&[("query", statement)], parts).map(|_| ())
    }

    fn post(&self, params: &[(&str, &str)], body: &[&[u8]]) -> Result<Vec<u8>, HttpError> {
        if self.secure && self.tls.is_none() {
            return Err(HttpError::Tls(
                "no CA certificate to check the server's against: no system CA bundle \
                 (give store.clickhouse.ca)"
                    .into(),
            ));
        }
        let mut path = String::from("/?");
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("user", &self.user));
        if !self.password.is_empty() {
            all.push(("password", &self.password));
        }
        for (i, (k, v)) in all.iter().enumerate() {
            if i > 0 {
                path.push('&');
            }
            path.push_str(k);
            path.push('=');
            percent_encode(v, &mut path);
        }
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| self.io(e))?
            .next()
            .ok_or_else(|| self.io(io::Error::other("no address")))?;
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| self.io(e))?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        let _ = s.set_nodelay(true);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr(),
            body.iter().map(|p| p.len()).sum::<usize>()
        );
        let mut resp = Vec::new();
        match &self.tls {
            None => exchange(&mut s, head.as_bytes(), body, &mut resp),
            Some(t) => {
                let conn = rustls::ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(|e| HttpError::Tls(e.to_string()))?;
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
        }
        .map_err(|e| self.io(e))?;
        self.parse_response(&resp)
    }

    fn parse_response(&self, resp: &[u8]) -> Result<Vec<u8>, HttpError> {
        let bad = |what| HttpError::Protocol {
            addr: self.addr(),
            what,
        };
        let end = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("no end of headers"))?;
        let head = std::str::from_utf8(&resp[..end]).map_err(|_| bad("headers not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let chunked = lines.any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let length = head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        });
        let raw = &resp[end + 4..];
        let body = if chunked {
            dechunk(raw).ok_or_else(|| bad("bad chunked body"))?
        } else {
            if length.is_some_and(|n| n != raw.len()) {
                return Err(bad("body shorter or longer than its Content-Length"));
            }
            raw.to_vec()
        };
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            return Err(HttpError::Server {
                addr: self.addr(),
                status,
                message: text.lines().next().unwrap_or("").trim().to_string(),
            });
        }
        Ok(body)
    }
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
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let pem =
        std::fs::read(path).map_err(|e| HttpError::Tls(format!("{}: {e}", path.display())))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpError::Tls(format!("{}: {e}", path.display())))
}

fn percent_encode(v: &str, out: &mut String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_named() {
        let e = Endpoint::parse("http://127.0.0.1:18123", "default", "").unwrap();
        assert_eq!(e.addr(), "127.0.0.1:18123");
        let e = Endpoint::parse("http://ch.example/", "u", "p").unwrap();
        assert_eq!(e.addr(), "ch.example:8123");
        let e = Endpoint::parse("http://[::1]:9000", "u", "").unwrap();
        assert_eq!(e.addr(), "[::1]:9000");
        assert!(!e.is_tls());
        // With or without a system CA bundle (a CA file may follow).
        let e = Endpoint::parse("https://ch.example", "u", "").unwrap();
        assert_eq!(e.addr(), "ch.example:8443");
        assert!(e.is_tls());
        let e = Endpoint::parse("http://h", "u", "")
            .unwrap()
            .with_ca_file(Path::new("/nonexistent.pem"))
            .unwrap_err();
        assert!(e.to_string().contains("https:// URLs only"), "{e}");
        for bad in [
            "ftp://x",
            "x:1",
            "http://",
            "http://a/b",
            "http://u@h:1",
            "http://h:x",
        ] {
            assert!(Endpoint::parse(bad, "u", "").is_err(), "{bad}");
        }
    }

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
}
