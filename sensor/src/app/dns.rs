//! DNS (RFC 1035) over UDP and TCP: the first query's name and type, and
//! its response's code and first answers. Names are written as Wireshark
//! writes them (`dns.qry.name`): labels joined by dots, as sent (case
//! kept), `<Root>` for the root, other than printable ASCII as `\DDD`.

use std::fmt::Write as _;

use vigil_proto::app::Dns;

use super::{AppError, Texts};

/// Most answers kept.
const MAX_ANSWERS: usize = 8;
/// Most labels followed through compression pointers in one name.
const MAX_POINTERS: usize = 16;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Whether a UDP payload on no DNS port is a DNS query or response all
/// the same: a header with one question, a standard opcode and zero Z
/// bit, whose question name and class (IN, or mDNS's IN with its top bit)
/// end inside the payload.
pub(super) fn looks_like(p: &[u8]) -> bool {
    if p.len() < 17 || be16(p, 4) != Some(1) {
        return false;
    }
    let flags = u16::from_be_bytes([p[2], p[3]]);
    if (flags >> 11) & 0xf != 0 || flags & 0x0040 != 0 {
        return false;
    }
    // Counts beyond what a datagram could hold are not DNS.
    let (an, ns, ar) = (
        be16(p, 6).unwrap_or(0),
        be16(p, 8).unwrap_or(0),
        be16(p, 10).unwrap_or(0),
    );
    if an > 256 || ns > 256 || ar > 256 || (flags & 0x8000 == 0 && an > 0) {
        return false;
    }
    let mut at = 12;
    let mut labels = 0;
    loop {
        let Some(&len) = p.get(at) else { return false };
        match len {
            0 => {
                at += 1;
                break;
            }
            1..=63 => {
                let label = match p.get(at + 1..at + 1 + usize::from(len)) {
                    Some(l) => l,
                    None => return false,
                };
                if !label.iter().all(|c| c.is_ascii_graphic()) {
                    return false;
                }
                at += 1 + usize::from(len);
                labels += 1;
            }
            _ => return false,
        }
    }
    let class = be16(p, at + 2).unwrap_or(0) & 0x7fff;
    labels > 0 && class == 1 && matches!(be16(p, at), Some(1..=259))
}

/// Whether `p` starts with a DNS header a real message could have: a
/// standard opcode, at most a few questions, counts a message could hold.
/// What the sniffer asks of a payload on a DNS port.
pub(super) fn plausible(p: &[u8]) -> bool {
    if p.len() < 12 {
        return false;
    }
    let flags = u16::from_be_bytes([p[2], p[3]]);
    let count = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    (flags >> 11) & 0xf <= 6
        && count(4) <= 8
        && count(6) <= 512
        && count(8) <= 512
        && count(10) <= 512
        && (flags & 0x8000 != 0 || count(6) == 0)
}

/// For a DNS message over TCP (two-byte length first): the bytes it goes
/// on past `p`, or `None` when `p` does not start one.
pub(super) fn tcp_more(p: &[u8]) -> Option<u32> {
    if p.len() == 1 {
        // The length itself cut in two: its second byte comes next.
        return Some(1);
    }
    let len = usize::from(be16(p, 0)?);
    if len < 12 || (p.len() >= 14 && !plausible(&p[2..])) {
        return None;
    }
    Some((len + 2).saturating_sub(p.len()) as u32)
}

/// Parses a DNS message over TCP: its length, then the message.
pub(super) fn parse_tcp(p: &[u8], dns: &mut Dns, answers: &mut Texts<'_>) -> Result<(), AppError> {
    let len = usize::from(be16(p, 0).ok_or(AppError::Dns)?);
    let msg = p.get(2..2 + len).unwrap_or(p.get(2..).unwrap_or_default());
    parse(msg, dns, answers)
}

/// Parses one DNS message into `dns`: the first query fills the name and
/// type; a response to it (the same id), or the first response when no
/// query was seen, fills the code and answers (into `answers`, whose
/// strings are `dns.answers`).
pub(super) fn parse(p: &[u8], dns: &mut Dns, answers: &mut Texts<'_>) -> Result<(), AppError> {
    if p.len() < 12 {
        return Err(AppError::Dns);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    let response = flags & 0x8000 != 0;
    let qd = usize::from(u16::from_be_bytes([p[4], p[5]]));
    let an = u16::from_be_bytes([p[6], p[7]]);
    let have_query = !dns.qname.is_empty() || dns.qtype != 0;
    if have_query && (dns.rcode.is_some() || !response || id != dns.id) {
        // Only the first exchange is kept.
        return Ok(());
    }
    let mut at = 12;
    if !have_query {
        dns.id = id;
        if qd > 0 {
            dns.qname.clear();
            at = name(p, at, &mut dns.qname)?;
            dns.qtype = be16(p, at).ok_or(AppError::Dns)?;
            at += 4;
        }
    } else if qd > 0 {
        at = skip_name(p, at)? + 4;
    }
    if !response {
        return Ok(());
    }
    dns.rcode = Some((flags & 0xf) as u8);
    dns.answer_count = an;
    // Any further questions are skipped.
    for _ in 1..qd {
        at = skip_name(p, at)? + 4;
    }
    for _ in 0..an {
        if answers.len() >= MAX_ANSWERS {
            break;
        }
        at = skip_name(p, at)?;
        let t = be16(p, at).ok_or(AppError::Dns)?;
        let rdlen = usize::from(be16(p, at + 8).ok_or(AppError::Dns)?);
        let rdata = at + 10;
        let end = rdata + rdlen;
        if end > p.len() {
            return Err(AppError::Dns);
        }
        match t {
            1 if rdlen == 4 => {
                let a = std::net::Ipv4Addr::new(p[rdata], p[rdata + 1], p[rdata + 2], p[rdata + 3]);
                let _ = write!(answers.next(), "{a}");
            }
            28 if rdlen == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&p[rdata..end]);
                let _ = write!(answers.next(), "{}", std::net::Ipv6Addr::from(o));
            }
            5 => {
                name(p, rdata, answers.next())?;
            }
            _ => {}
        }
        at = end;
    }
    Ok(())
}

/// Reads the name at `at` (following compression pointers) into `out`;
/// returns where the name ends in place.
/// Whether the question of message `m` names `qname` (as [`name`] writes
/// names), without case; a name compressed or escaped is taken for
/// another one.
pub(super) fn asks(m: &[u8], qname: &str) -> bool {
    let mut at = 12;
    let mut rest = qname.as_bytes();
    loop {
        let Some(&len) = m.get(at) else { return false };
        if len == 0 {
            return rest.is_empty();
        }
        if len > 63 {
            return false;
        }
        let Some(label) = m.get(at + 1..at + 1 + usize::from(len)) else {
            return false;
        };
        let Some(head) = rest.get(..label.len()) else {
            return false;
        };
        if !head.eq_ignore_ascii_case(label) || label.iter().any(|c| *c == b'.' || *c == b'\\') {
            return false;
        }
        rest = &rest[label.len()..];
        match rest.first() {
            Some(b'.') => rest = &rest[1..],
            Some(_) => return false,
            None => {}
        }
        at += 1 + usize::from(len);
    }
}

fn name(p: &[u8], mut at: usize, out: &mut String) -> Result<usize, AppError> {
    let mut end = None;
    let mut jumps = 0;
    let mut total = 0;
    loop {
        let len = *p.get(at).ok_or(AppError::Dns)?;
        match len {
            0 => {
                if out.is_empty() {
                    out.push_str("<Root>");
                }
                return Ok(end.unwrap_or(at + 1));
            }
            1..=63 => {
                let l = usize::from(len);
                let label = p.get(at + 1..at + 1 + l).ok_or(AppError::Dns)?;
                total += l + 1;
                if total > 255 {
                    return Err(AppError::Dns);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &c in label {
                    if c.is_ascii_graphic() && c != b'\\' && c != b'.' {
                        out.push(char::from(c));
                    } else {
                        let _ = write!(out, "\\{c:03}");
                    }
                }
                at += 1 + l;
            }
            0xc0..=0xff => {
                let to = usize::from(
                    u16::from_be_bytes([len, *p.get(at + 1).ok_or(AppError::Dns)?]) & 0x3fff,
                );
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > MAX_POINTERS || to >= p.len() {
                    return Err(AppError::Dns);
                }
                at = to;
            }
            _ => return Err(AppError::Dns),
        }
    }
}

/// Where the name at `at` ends in place.
fn skip_name(p: &[u8], mut at: usize) -> Result<usize, AppError> {
    loop {
        let len = *p.get(at).ok_or(AppError::Dns)?;
        match len {
            0 => return Ok(at + 1),
            1..=63 => at += 1 + usize::from(len),
            0xc0..=0xff => return Ok(at + 2),
            _ => return Err(AppError::Dns),
        }
    }
}
