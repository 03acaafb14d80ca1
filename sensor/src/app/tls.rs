//! TLS ClientHello and ServerHello (RFC 8446, 5246): server name, ALPN,
//! the negotiated version, and FoxIO's JA4 and JA4S fingerprints
//! (github.com/FoxIO-LLC/ja4, `technical_details/JA4.md` and `JA4S.md`).

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use vigil_proto::app::Tls;

use super::{AppError, Texts, put};

/// Most ALPN values kept.
const MAX_ALPN: usize = 8;
/// Longest server name kept.
const MAX_SNI: usize = 255;

/// For a payload that starts a handshake record holding a ClientHello or
/// ServerHello: the bytes the hello goes on past it (0 when whole).
pub(super) fn hello(p: &[u8]) -> Option<u32> {
    if p.len() < 6 || p[0] != 0x16 || p[1] != 3 || p[2] > 4 || !matches!(p[5], 1 | 2) {
        return None;
    }
    let rec = usize::from(u16::from_be_bytes([p[3], p[4]]));
    if rec < 4 {
        return None;
    }
    let need = match p.get(6..9) {
        Some(l) => 9 + (usize::from(l[0]) << 16 | usize::from(l[1]) << 8 | usize::from(l[2])),
        None => 5 + rec,
    };
    Some(need.saturating_sub(p.len()) as u32)
}

/// A GREASE value (RFC 8701): 0x?a?a with both bytes equal.
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn be16(b: &[u8], at: usize) -> Result<u16, AppError> {
    match b.get(at..at + 2) {
        Some(x) => Ok(u16::from_be_bytes([x[0], x[1]])),
        None => Err(AppError::Tls),
    }
}

fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8], AppError> {
    b.get(at..at + len).ok_or(AppError::Tls)
}

/// Most cipher suites, extensions or signature algorithms read from a hello.
const MAX_IDS: usize = 128;

/// Up to [`MAX_IDS`] 16-bit values, on the stack.
struct Ids {
    v: [u16; MAX_IDS],
    n: usize,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            v: [0; MAX_IDS],
            n: 0,
        }
    }

    fn push(&mut self, x: u16) {
        if self.n < MAX_IDS {
            self.v[self.n] = x;
            self.n += 1;
        }
    }

    fn as_slice(&self) -> &[u16] {
        &self.v[..self.n]
    }

    /// The non-GREASE values of a list of 16-bit values.
    fn of(b: &[u8]) -> Ids {
        let mut ids = Ids::new();
        for c in b.chunks_exact(2) {
            let x = u16::from_be_bytes([c[0], c[1]]);
            if !grease(x) {
                ids.push(x);
            }
        }
        ids
    }
}

/// Parses the hello the records in `p` start with into `tls` (its ALPN
/// values into `alpn`); a hello spanning records is gathered in `scratch`.
pub(super) fn parse(
    p: &[u8],
    tls: &mut Tls,
    alpn: &mut Texts<'_>,
    scratch: &mut Vec<u8>,
) -> Result<(), AppError> {
    if p.len() < 9 || p[0] != 0x16 {
        return Err(AppError::Tls);
    }
    let rec = usize::from(u16::from_be_bytes([p[3], p[4]]));
    let need = 4 + (usize::from(p[6]) << 16 | usize::from(p[7]) << 8 | usize::from(p[8]));
    let msg: &[u8] = if rec >= need && p.len() >= 5 + need {
        &p[5..5 + need]
    } else {
        // The message goes on in the next records.
        scratch.clear();
        let mut at = 0;
        while at + 5 <= p.len() && p[at] == 0x16 && scratch.len() < need {
            let len = usize::from(u16::from_be_bytes([p[at + 3], p[at + 4]]));
            let body = p.get(at + 5..at + 5 + len).unwrap_or(&p[at + 5..]);
            scratch.extend_from_slice(body);
            at += 5 + len;
        }
        let n = scratch.len().min(need);
        &scratch[..n]
    };
    handshake(msg, 't', tls, alpn)
}

/// Parses a handshake message (its type, length and body): a ClientHello
/// or ServerHello, whose JA4 or JA4S gets `proto` as its first character
/// (`t` TLS over TCP, `q` QUIC).
pub(super) fn handshake(
    msg: &[u8],
    proto: char,
    tls: &mut Tls,
    alpn: &mut Texts<'_>,
) -> Result<(), AppError> {
    if msg.len() < 4 {
        return Err(AppError::Tls);
    }
    let body = &msg[4..];
    match msg[0] {
        1 => client_hello(body, proto, tls, alpn),
        2 => server_hello(body, proto, tls),
        _ => Err(AppError::Tls),
    }
}

/// `(type, data)` of each extension in `b`.
fn extensions(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let t = be16(b, at).ok()?;
        let len = usize::from(be16(b, at + 2).ok()?);
        let d = b.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        Some((t, d))
    })
}

/// The protocol names of an ALPN extension's data.
fn alpn_values(d: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 2;
    std::iter::from_fn(move || {
        let l = usize::from(*d.get(at)?);
        let v = d.get(at + 1..at + 1 + l)?;
        at += 1 + l;
        Some(v)
    })
}

fn client_hello(
    b: &[u8],
    proto: char,
    tls: &mut Tls,
    alpn: &mut Texts<'_>,
) -> Result<(), AppError> {
    let legacy = be16(b, 0)?;
    let sid = usize::from(*b.get(34).ok_or(AppError::Tls)?);
    let mut at = 35 + sid;
    let clen = usize::from(be16(b, at)?);
    let ciphers = Ids::of(slice(b, at + 2, clen)?);
    at += 2 + clen;
    let comp = usize::from(*b.get(at).ok_or(AppError::Tls)?);
    at += 1 + comp;
    let exts: &[u8] = match be16(b, at) {
        Ok(len) => b
            .get(at + 2..at + 2 + usize::from(len))
            .ok_or(AppError::Tls)?,
        // A hello without extensions (SSLv3-era clients).
        Err(_) if at == b.len() => &[],
        Err(e) => return Err(e),
    };
    let mut sni = false;
    let mut first_alpn: &[u8] = &[];
    let mut versions: Option<&[u8]> = None;
    let mut sigalgs = Ids::new();
    let mut ext_ids = Ids::new();
    for (t, d) in extensions(exts) {
        if grease(t) {
            continue;
        }
        ext_ids.push(t);
        match t {
            0x0000 => {
                sni = true;
                // server_name_list: type 0, a host name.
                if let (Some(0), Ok(len)) = (d.get(2), be16(d, 3))
                    && let Some(name) = d.get(5..5 + usize::from(len))
                {
                    put(&mut tls.sni, name, MAX_SNI);
                }
            }
            0x0010 => {
                for (i, v) in alpn_values(d).enumerate() {
                    if i == 0 {
                        first_alpn = v;
                    }
                    if alpn.len() < MAX_ALPN {
                        put(alpn.next(), v, 255);
                    }
                }
            }
            0x002b => versions = d.get(1..),
            0x000d => sigalgs = Ids::of(d.get(2..).unwrap_or_default()),
            _ => {}
        }
    }
    let version = versions
        .map(|v| Ids::of(v).as_slice().iter().copied().max().unwrap_or(0))
        .unwrap_or(legacy);
    tls.ja4.clear();
    ja4(
        &mut tls.ja4,
        proto,
        version,
        sni,
        &ciphers,
        &ext_ids,
        first_alpn,
        &sigalgs,
    );
    Ok(())
}

fn server_hello(b: &[u8], proto: char, tls: &mut Tls) -> Result<(), AppError> {
    let legacy = be16(b, 0)?;
    let sid = usize::from(*b.get(34).ok_or(AppError::Tls)?);
    let at = 35 + sid;
    let cipher = be16(b, at)?;
    let exts: &[u8] = match be16(b, at + 3) {
        Ok(len) => b
            .get(at + 5..at + 5 + usize::from(len))
            .ok_or(AppError::Tls)?,
        Err(_) if at + 3 == b.len() => &[],
        Err(e) => return Err(e),
    };
    let mut version = legacy;
    let mut chosen: &[u8] = &[];
    let mut ext_ids = Ids::new();
    for (t, d) in extensions(exts) {
        ext_ids.push(t);
        match t {
            0x002b => version = be16(d, 0).unwrap_or(legacy),
            0x0010 => chosen = alpn_values(d).next().unwrap_or_default(),
            _ => {}
        }
    }
    tls.version = version;
    put(&mut tls.server_alpn, chosen, 255);
    tls.ja4s.clear();
    ja4s(
        &mut tls.ja4s,
        proto,
        version,
        cipher,
        ext_ids.as_slice(),
        chosen,
    );
    Ok(())
}

/// JA4's two characters for a version.
fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// JA4's two characters for an ALPN value: its first and last characters
/// when both are alphanumeric, else the first and last of its hex form
/// (`00` for none).
fn alpn_code(a: &[u8]) -> [char; 2] {
    let (Some(&f), Some(&l)) = (a.first(), a.last()) else {
        return ['0', '0'];
    };
    if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
        return [char::from(f), char::from(l)];
    }
    [
        char::from(HEX[usize::from(f >> 4)]),
        char::from(HEX[usize::from(l & 0xf)]),
    ]
}

/// Hashes `v` as JA4 lists its values: four lowercase hex digits each,
/// separated by commas.
fn hash_list(h: &mut Sha256, v: &[u16]) {
    for (i, x) in v.iter().enumerate() {
        let mut b = [b','; 5];
        for (j, shift) in [12, 8, 4, 0].into_iter().enumerate() {
            b[1 + j] = HEX[usize::from((x >> shift) & 0xf)];
        }
        h.update(if i == 0 { &b[1..] } else { &b[..] });
    }
}

/// Appends the first 12 hex digits of a digest, or twelve zeros when
/// nothing was hashed (`empty`).
fn put_hash12(out: &mut String, h: Sha256, empty: bool) {
    if empty {
        out.push_str("000000000000");
        return;
    }
    for b in &h.finalize()[..6] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Appends the JA4 of a ClientHello (GREASE already left out of the lists).
#[allow(clippy::too_many_arguments)]
fn ja4(
    out: &mut String,
    proto: char,
    version: u16,
    sni: bool,
    ciphers: &Ids,
    exts: &Ids,
    alpn: &[u8],
    sigalgs: &Ids,
) {
    let [a0, a1] = alpn_code(alpn);
    let _ = write!(
        out,
        "{proto}{}{}{:02}{:02}{a0}{a1}_",
        version_code(version),
        if sni { 'd' } else { 'i' },
        ciphers.n.min(99),
        exts.n.min(99),
    );
    let mut c = Ids::new();
    for &x in ciphers.as_slice() {
        c.push(x);
    }
    c.v[..c.n].sort_unstable();
    let mut h = Sha256::new();
    hash_list(&mut h, c.as_slice());
    put_hash12(out, h, c.n == 0);
    out.push('_');
    let mut e = Ids::new();
    for &x in exts.as_slice() {
        if x != 0x0000 && x != 0x0010 {
            e.push(x);
        }
    }
    e.v[..e.n].sort_unstable();
    let mut h = Sha256::new();
    hash_list(&mut h, e.as_slice());
    if sigalgs.n > 0 {
        h.update(b"_");
        hash_list(&mut h, sigalgs.as_slice());
    }
    put_hash12(out, h, e.n == 0);
}

/// Appends the JA4S of a ServerHello.
fn ja4s(out: &mut String, proto: char, version: u16, cipher: u16, exts: &[u16], alpn: &[u8]) {
    let [a0, a1] = alpn_code(alpn);
    let _ = write!(
        out,
        "{proto}{}{:02}{a0}{a1}_{cipher:04x}_",
        version_code(version),
        exts.len().min(99),
    );
    let mut h = Sha256::new();
    hash_list(&mut h, exts);
    put_hash12(out, h, exts.is_empty());
}

#[cfg(test)]
pub(super) fn ja4_of(
    version: u16,
    sni: bool,
    ciphers: &[u16],
    exts: &[u16],
    alpn: &[u8],
    sigalgs: &[u16],
) -> String {
    let ids = |v: &[u16]| {
        let mut i = Ids::new();
        for &x in v {
            i.push(x);
        }
        i
    };
    let mut s = String::new();
    ja4(
        &mut s,
        't',
        version,
        sni,
        &ids(ciphers),
        &ids(exts),
        alpn,
        &ids(sigalgs),
    );
    s
}
