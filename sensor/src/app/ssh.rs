//! SSH (RFC 4253): each side's identification string, and the HASSH and
//! HASSHServer fingerprints (Salesforce's, github.com/salesforce/hassh) of
//! their first KEXINIT.

use md5::{Digest, Md5};
use std::fmt::Write as _;

use vigil_proto::app::Ssh;

use super::{AppError, put};

/// Longest banner kept (RFC 4253 allows 255 characters).
const MAX_BANNER: usize = 255;
/// Bytes the sniffer keeps after a banner that ends its segment: the
/// KEXINIT that follows.
const AFTER_BANNER: u32 = 4096;

/// For a payload starting with a banner: the bytes to keep past it.
pub(super) fn more_after_banner(p: &[u8]) -> u32 {
    match p.iter().position(|&c| c == b'\n') {
        Some(i) if i + 1 < p.len() => pdu_more(&p[i + 1..]).max(1),
        _ => AFTER_BANNER,
    }
}

/// For a payload holding a banner, a binary packet, or both: the bytes
/// its binary packet goes on past it.
pub(super) fn pdu_more(p: &[u8]) -> u32 {
    let rest = if p.starts_with(b"SSH-") {
        match p.iter().position(|&c| c == b'\n') {
            Some(i) => &p[i + 1..],
            None => return 0,
        }
    } else {
        p
    };
    match packet_len(rest) {
        Some(n) => n.saturating_sub(rest.len()) as u32,
        None => 0,
    }
}

/// The whole length of the binary packet `p` starts with.
pub(super) fn packet_len(p: &[u8]) -> Option<usize> {
    let b = p.get(..4)?;
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    (5..=35_000).contains(&n).then_some(n + 4)
}

/// Reads the banner `p` starts with into the client's or the server's
/// field; returns what follows it. The client is the side that sent to
/// port 22 or, failing that, the flow's originator (`dir` 0).
pub(super) fn banner<'a>(p: &'a [u8], x: &mut Ssh, dir: usize) -> Result<&'a [u8], AppError> {
    let end = p.iter().position(|&c| c == b'\n').unwrap_or(p.len());
    let line = p[..end].strip_suffix(b"\r").unwrap_or(&p[..end]);
    if !line.starts_with(b"SSH-") {
        return Err(AppError::Ssh);
    }
    let side = if dir == 0 {
        &mut x.client
    } else {
        &mut x.server
    };
    put(side, line, MAX_BANNER);
    Ok(p.get(end + 1..).unwrap_or_default())
}

fn name_list<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a [u8], AppError> {
    let l = b.get(*at..*at + 4).ok_or(AppError::Ssh)?;
    let n = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
    let v = b.get(*at + 4..*at + 4 + n).ok_or(AppError::Ssh)?;
    *at += 4 + n;
    Ok(v)
}

/// Reads the KEXINIT packet `p` starts with: HASSH from the client's,
/// HASSHServer from the server's. A packet of another type is no error
/// (a server may send its KEXINIT late); it is ignored.
pub(super) fn kexinit(p: &[u8], x: &mut Ssh, dir: usize) -> Result<(), AppError> {
    packet_len(p).ok_or(AppError::Ssh)?;
    if p.get(5) != Some(&20) {
        return Ok(());
    }
    // length (4), padding length (1), type (1), cookie (16).
    let mut at = 22;
    let kex = name_list(p, &mut at)?;
    let _host_key = name_list(p, &mut at)?;
    let enc_cs = name_list(p, &mut at)?;
    let enc_sc = name_list(p, &mut at)?;
    let mac_cs = name_list(p, &mut at)?;
    let mac_sc = name_list(p, &mut at)?;
    let comp_cs = name_list(p, &mut at)?;
    let comp_sc = name_list(p, &mut at)?;
    let (enc, mac, comp) = if dir == 0 {
        (enc_cs, mac_cs, comp_cs)
    } else {
        (enc_sc, mac_sc, comp_sc)
    };
    let mut h = Md5::new();
    h.update(kex);
    h.update(b";");
    h.update(enc);
    h.update(b";");
    h.update(mac);
    h.update(b";");
    h.update(comp);
    let hex = if dir == 0 {
        &mut x.hassh
    } else {
        &mut x.hassh_server
    };
    hex.clear();
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(())
}
