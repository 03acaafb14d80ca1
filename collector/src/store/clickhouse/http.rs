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

use std::io;
use std::path::Path;

use thiserror::Error;

use crate::http::{Client, Failure, percent_encode};

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
    client: Client,
    user: String,
    password: String,
}

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
        Ok(Endpoint {
            client: Client::new(&host, port, secure),
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// Trusts only the CA certificates (PEM) in `path` for `https://`.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Endpoint, HttpError> {
        self.client = self.client.with_ca_file(path).map_err(|e| match e {
            Failure::Tls(m) => HttpError::Tls(m),
            e => HttpError::Tls(e.to_string()),
        })?;
        Ok(self)
    }

    /// Whether requests go over TLS.
    pub fn is_tls(&self) -> bool {
        self.client.is_tls()
    }

    /// host:port, for messages.
    pub fn addr(&self) -> String {
        self.client.addr()
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
        let addr = self.addr();
        let r = self
            .client
            .request("POST", &path, &[], body)
            .map_err(|e| match e {
                Failure::Tls(m) => HttpError::Tls(format!("{m} (give store.clickhouse.ca)")),
                Failure::Io(source) => HttpError::Io {
                    addr: addr.clone(),
                    source,
                },
                Failure::Protocol(what) => HttpError::Protocol {
                    addr: addr.clone(),
                    what,
                },
            })?;
        if r.status != 200 {
            let text = String::from_utf8_lossy(&r.body);
            return Err(HttpError::Server {
                addr,
                status: r.status,
                message: text.lines().next().unwrap_or("").trim().to_string(),
            });
        }
        Ok(r.body)
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
}
