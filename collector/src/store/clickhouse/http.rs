//! A small blocking client for ClickHouse's HTTP interface.
//!
//! One request per connection (`Connection: close`), so a response is read
//! to the end of the stream; chunked bodies are decoded. Statements go in
//! the body (SELECT, DDL) or, for INSERT with data, in the `query` URL
//! parameter with the data as the body. Credentials travel as the
//! `user`/`password` parameters, which every ClickHouse release accepts
//! (18.16 included). Plain HTTP only: for a remote server, put it behind
//! a TLS tunnel until the store speaks HTTPS.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

/// A ClickHouse request failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The URL is not `http://HOST:PORT`.
    #[error("clickhouse URL {0:?}: expected http://HOST[:PORT]")]
    Url(String),
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
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/]` (port 8123 by default).
    pub fn parse(url: &str, user: &str, password: &str) -> Result<Endpoint, HttpError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| HttpError::Url(url.to_string()))?
            .trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(HttpError::Url(url.to_string()));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().map_err(|_| HttpError::Url(url.to_string()))?,
            ),
            _ => (rest.to_string(), 8123),
        };
        if host.is_empty() {
            return Err(HttpError::Url(url.to_string()));
        }
        Ok(Endpoint {
            host,
            port,
            user: user.to_string(),
            password: password.to_string(),
            timeout: Duration::from_secs(300),
        })
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
        self.post(&[], sql.as_bytes())
    }

    /// Runs `INSERT … FORMAT …` with `data` as the rows.
    pub fn insert(&self, statement: &str, data: &[u8]) -> Result<(), HttpError> {
        self.post(&[("query", statement)], data).map(|_| ())
    }

    fn post(&self, params: &[(&str, &str)], body: &[u8]) -> Result<Vec<u8>, HttpError> {
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
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(|e| self.io(e))?;
        s.write_all(body).map_err(|e| self.io(e))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(|e| self.io(e))?;
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
        let raw = &resp[end + 4..];
        let body = if chunked {
            dechunk(raw).ok_or_else(|| bad("bad chunked body"))?
        } else {
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
        for bad in [
            "https://x",
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
