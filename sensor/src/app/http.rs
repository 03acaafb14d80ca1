//! HTTP/1.x: the first request's method, target, Host and User-Agent, and
//! the first response's status (as Zeek's http.log and Wireshark's
//! `http.request.method`, `http.host`).

use vigil_proto::app::Http;

use super::{AppError, put};

/// Longest target or User-Agent kept.
const MAX_FIELD: usize = 256;

const METHODS: [&[u8]; 11] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"PATCH ",
    b"TRACE ",
    // SSDP (HTTP over UDP): discovery, and the reflection it is abused for.
    b"M-SEARCH ",
    b"NOTIFY ",
];

/// Whether `p` starts an HTTP/1.x request or response.
pub(super) fn starts(p: &[u8]) -> bool {
    p.starts_with(b"HTTP/1.") || METHODS.iter().any(|m| p.starts_with(m))
}

/// Parses a request's or response's head into `h`: the first of each only.
pub(super) fn parse(p: &[u8], h: &mut Http) -> Result<(), AppError> {
    let newline = p.iter().position(|&c| c == b'\n');
    let line_end = newline.unwrap_or(p.len());
    let line = p[..line_end].strip_suffix(b"\r").unwrap_or(&p[..line_end]);
    if let Some(rest) = line.strip_prefix(b"HTTP/1.") {
        if h.status != 0 {
            return Ok(());
        }
        // "HTTP/1.1 200 OK"
        let code = rest.get(2..5).ok_or(AppError::Http)?;
        if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
            return Err(AppError::Http);
        }
        h.status = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
        return Ok(());
    }
    if !h.method.is_empty() {
        return Ok(());
    }
    let mut parts = line.splitn(3, |&c| c == b' ');
    let method = parts.next().ok_or(AppError::Http)?;
    let target = parts.next().ok_or(AppError::Http)?;
    let version = parts.next().unwrap_or_default();
    // A line cut by the capture's snap length keeps what it shows.
    if newline.is_some() && !version.starts_with(b"HTTP/") {
        return Err(AppError::Http);
    }
    put(&mut h.method, method, 16);
    put(&mut h.path, target, MAX_FIELD);
    for raw in p[line_end..].split(|&c| c == b'\n').skip(1) {
        let l = raw.strip_suffix(b"\r").unwrap_or(raw);
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&c| c == b':') else {
            continue;
        };
        let (name, value) = (&l[..colon], l[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"host") && h.host.is_empty() {
            put(&mut h.host, value, MAX_FIELD);
        } else if name.eq_ignore_ascii_case(b"user-agent") && h.user_agent.is_empty() {
            put(&mut h.user_agent, value, MAX_FIELD);
        }
    }
    Ok(())
}
