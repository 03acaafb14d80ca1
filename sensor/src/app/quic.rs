//! QUIC (RFC 9000, 9001; version 2, RFC 9369): the Initial packets of both
//! sides, decrypted with the keys any observer derives from the client's
//! first Destination Connection ID (RFC 9001 §5.2), and the TLS
//! ClientHello and ServerHello their CRYPTO frames carry, reassembled by
//! offset (clients split a hello over frames and packets, and shuffle the
//! frames): the server name, ALPN, JA4 (prefix `q`) and JA4S.
//!
//! Only Initial packets are read; everything after them is encrypted with
//! keys an observer does not have.

use ring::aead::quic::{AES_128, HeaderProtectionKey};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};

use super::AppError;

/// QUIC version 1.
const V1: u32 = 1;
/// QUIC version 2 (RFC 9369).
const V2: u32 = 0x6b33_43cf;
/// The Initial salts (RFC 9001 §5.2, RFC 9369 §3.3.1).
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];
/// CRYPTO stream bytes gathered per direction: a hello is rarely over
/// 2 KiB (post-quantum key shares included).
pub(super) const MAX_CRYPTO: usize = 8192;
/// Separate pieces of a CRYPTO stream kept: hellos come in a few frames;
/// a peer sending hundreds of one-byte frames gets no more work than this.
const MAX_RANGES: usize = 32;
/// Initial packets decrypted per direction: a hello takes one to three.
const MAX_PACKETS: u8 = 8;

/// A long-header packet's version, when it is an Initial of a version read
/// here.
fn initial_version(p: &[u8]) -> Option<u32> {
    let first = *p.first()?;
    let version = u32::from_be_bytes(p.get(1..5)?.try_into().ok()?);
    // Long header with the fixed bit; Initial is type 0 in version 1 and
    // type 1 in version 2.
    let kind = (first >> 4) & 3;
    let ok = first & 0xc0 == 0xc0
        && match version {
            V1 => kind == 0,
            V2 => kind == 1,
            _ => false,
        };
    ok.then_some(version)
}

/// Whether a UDP payload starts with a QUIC Initial packet: a long header
/// of version 1 or 2 with its fixed bit, a Destination Connection ID of at
/// most 20 bytes, and room for a packet's header and tag.
pub(super) fn initial(p: &[u8]) -> bool {
    p.len() >= 40 && initial_version(p).is_some() && p.get(5).is_some_and(|l| *l <= 20)
}

/// A QUIC variable-length integer at `*at`, advancing it.
fn varint(p: &[u8], at: &mut usize) -> Option<u64> {
    let first = *p.get(*at)?;
    let len = 1usize << (first >> 6);
    let b = p.get(*at..*at + len)?;
    let mut v = u64::from(first & 0x3f);
    for x in &b[1..] {
        v = v << 8 | u64::from(*x);
    }
    *at += len;
    Some(v)
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(prk: &ring::hkdf::Prk, label: &[u8], out: &mut [u8]) -> Result<(), AppError> {
    struct Len(usize);
    impl KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let n = u16::try_from(out.len()).map_err(|_| AppError::Quic)?;
    let full = 6 + label.len();
    let info: [&[u8]; 5] = [
        &n.to_be_bytes(),
        &[u8::try_from(full).map_err(|_| AppError::Quic)?],
        b"tls13 ",
        label,
        &[0],
    ];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| AppError::Quic)
}

/// One side's Initial keys.
struct Keys {
    aead: LessSafeKey,
    iv: [u8; 12],
    hp: HeaderProtectionKey,
}

impl Keys {
    /// The keys of the client (`server` false) or the server for a
    /// connection whose client chose `dcid`.
    fn new(version: u32, dcid: &[u8], server: bool) -> Result<Keys, AppError> {
        let (key, iv, hp) = key_bytes(version, dcid, server)?;
        Ok(Keys {
            aead: LessSafeKey::new(
                UnboundKey::new(&AES_128_GCM, &key).map_err(|_| AppError::Quic)?,
            ),
            iv,
            hp: HeaderProtectionKey::new(&AES_128, &hp).map_err(|_| AppError::Quic)?,
        })
    }
}

/// One side's AEAD key, IV and header protection key.
pub(super) type KeyBytes = ([u8; 16], [u8; 12], [u8; 16]);

/// The AEAD key, IV and header protection key of one side (RFC 9001 §5.2).
pub(super) fn key_bytes(version: u32, dcid: &[u8], server: bool) -> Result<KeyBytes, AppError> {
    let (salt, key_l, iv_l, hp_l): (&[u8], &[u8], &[u8], &[u8]) = if version == V2 {
        (&SALT_V2, b"quicv2 key", b"quicv2 iv", b"quicv2 hp")
    } else {
        (&SALT_V1, b"quic key", b"quic iv", b"quic hp")
    };
    let initial = Salt::new(HKDF_SHA256, salt).extract(dcid);
    let mut secret = [0u8; 32];
    let who: &[u8] = if server { b"server in" } else { b"client in" };
    expand_label(&initial, who, &mut secret)?;
    let prk = ring::hkdf::Prk::new_less_safe(HKDF_SHA256, &secret);
    let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
    expand_label(&prk, key_l, &mut key)?;
    expand_label(&prk, iv_l, &mut iv)?;
    expand_label(&prk, hp_l, &mut hp)?;
    Ok((key, iv, hp))
}

/// One direction's CRYPTO stream from offset 0, as far as it arrived.
#[derive(Debug, Default)]
pub(super) struct Crypto {
    /// The bytes, written at their offsets.
    buf: Vec<u8>,
    /// Byte ranges received, sorted and merged.
    have: Vec<(usize, usize)>,
    /// The hello was read.
    pub(super) done: bool,
}

impl Crypto {
    fn clear(&mut self) {
        self.buf.clear();
        self.have.clear();
        self.done = false;
    }

    fn add(&mut self, offset: usize, data: &[u8]) {
        let end = (offset + data.len()).min(MAX_CRYPTO);
        if offset >= end {
            return;
        }
        if self.have.len() >= MAX_RANGES {
            return;
        }
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[offset..end].copy_from_slice(&data[..end - offset]);
        self.have.push((offset, end));
        self.have.sort_unstable();
        // Merged in place.
        let mut w = 0;
        for r in 0..self.have.len() {
            let (a, b) = self.have[r];
            if w > 0 && a <= self.have[w - 1].1 {
                self.have[w - 1].1 = self.have[w - 1].1.max(b);
            } else {
                self.have[w] = (a, b);
                w += 1;
            }
        }
        self.have.truncate(w);
    }

    /// The first handshake message, once all of it arrived.
    fn message(&self) -> Option<&[u8]> {
        let (0, upto) = *self.have.first()? else {
            return None;
        };
        let head = self.buf.get(..4)?;
        let len =
            4 + (usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]));
        (upto >= len).then(|| &self.buf[..len])
    }
}

/// A QUIC connection's Initial state: the client's first Destination
/// Connection ID (both sides' keys come from it) and each direction's
/// CRYPTO stream.
#[derive(Debug, Default)]
pub(super) struct Quic {
    dcid: Vec<u8>,
    version: u32,
    pub(super) crypto: [Crypto; 2],
    /// A decrypted payload (reused).
    plain: Vec<u8>,
    /// Initial packets decrypted per direction.
    packets: [u8; 2],
}

impl Quic {
    /// Clears the state for another flow, keeping its buffers.
    pub(super) fn reset(&mut self) {
        self.dcid.clear();
        self.version = 0;
        self.crypto[0].clear();
        self.crypto[1].clear();
        self.packets = [0; 2];
    }

    /// Reads the Initial packets of a datagram from the client (`dir` 0)
    /// or the server into that direction's CRYPTO stream; returns its
    /// first handshake message once complete (a ClientHello or a
    /// ServerHello), once.
    pub(super) fn datagram(&mut self, dir: usize, mut p: &[u8]) -> Result<Option<&[u8]>, AppError> {
        if self.crypto[dir].done {
            return Ok(None);
        }
        // Coalesced packets (RFC 9000 §12.2): Initial first, then others.
        while let Some(version) = initial_version(p) {
            let len = self.packet(dir, version, p)?;
            p = &p[len..];
        }
        let c = &mut self.crypto[dir];
        if c.message().is_some() {
            c.done = true;
        }
        Ok(c.message())
    }

    /// Decrypts one Initial packet at the start of `p` into its direction's
    /// CRYPTO stream; the packet's length.
    fn packet(&mut self, dir: usize, version: u32, p: &[u8]) -> Result<usize, AppError> {
        let bad = AppError::Quic;
        let mut at = 5;
        let dlen = usize::from(*p.get(at).ok_or(bad)?);
        let dcid = p.get(at + 1..at + 1 + dlen).ok_or(bad)?;
        at += 1 + dlen;
        let slen = usize::from(*p.get(at).ok_or(bad)?);
        at += 1 + slen;
        if dir == 0 {
            let token = usize::try_from(varint(p, &mut at).ok_or(bad)?).map_err(|_| bad)?;
            at += token;
        } else if varint(p, &mut at).ok_or(bad)? != 0 {
            // A server's Initial carries no token.
            return Err(bad);
        }
        let length = usize::try_from(varint(p, &mut at).ok_or(bad)?).map_err(|_| bad)?;
        let pn_at = at;
        let end = pn_at
            .checked_add(length)
            .filter(|e| *e <= p.len())
            .ok_or(bad)?;
        if dir == 0 && self.dcid.is_empty() {
            self.dcid.extend_from_slice(dcid);
            self.version = version;
        }
        if self.dcid.is_empty() || version != self.version || self.packets[dir] >= MAX_PACKETS {
            // The server's first, without the client's: no keys; or a
            // peer that never completes its hello.
            return Ok(end);
        }
        self.packets[dir] += 1;
        let keys = Keys::new(version, &self.dcid, dir == 1)?;
        let sample = p.get(pn_at + 4..pn_at + 20).ok_or(bad)?;
        let mask = keys.hp.new_mask(sample).map_err(|_| bad)?;
        let first = p[0] ^ (mask[0] & 0x0f);
        let pn_len = usize::from(first & 3) + 1;
        let plain = &mut self.plain;
        plain.clear();
        plain.extend_from_slice(&p[..end]);
        plain[0] = first;
        let mut pn = 0u64;
        for i in 0..pn_len {
            plain[pn_at + i] ^= mask[1 + i];
            pn = pn << 8 | u64::from(plain[pn_at + i]);
        }
        let mut nonce = keys.iv;
        for (n, b) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= b;
        }
        let (head, body) = plain.split_at_mut(pn_at + pn_len);
        let frames = keys
            .aead
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&*head), body)
            .map_err(|_| bad)?;
        read_frames(frames, &mut self.crypto[dir])?;
        Ok(end)
    }
}

/// Gathers the CRYPTO frames of a decrypted Initial payload; the other
/// frames an Initial may carry (PADDING, PING, ACK, CONNECTION_CLOSE) are
/// skipped.
fn read_frames(f: &[u8], c: &mut Crypto) -> Result<(), AppError> {
    let bad = AppError::Quic;
    let mut at = 0;
    while at < f.len() {
        match varint(f, &mut at).ok_or(bad)? {
            0x00 | 0x01 => {}
            t @ (0x02 | 0x03) => {
                // ACK: largest, delay, range count, first range, ranges.
                for _ in 0..2 {
                    varint(f, &mut at).ok_or(bad)?;
                }
                let ranges = varint(f, &mut at).ok_or(bad)?;
                varint(f, &mut at).ok_or(bad)?;
                for _ in 0..ranges.min(256) * 2 {
                    varint(f, &mut at).ok_or(bad)?;
                }
                if t == 0x03 {
                    for _ in 0..3 {
                        varint(f, &mut at).ok_or(bad)?;
                    }
                }
            }
            0x06 => {
                let offset = usize::try_from(varint(f, &mut at).ok_or(bad)?).map_err(|_| bad)?;
                let len = usize::try_from(varint(f, &mut at).ok_or(bad)?).map_err(|_| bad)?;
                let data = f.get(at..at.checked_add(len).ok_or(bad)?).ok_or(bad)?;
                c.add(offset, data);
                at += len;
            }
            // CONNECTION_CLOSE: nothing more to read.
            0x1c | 0x1d => return Ok(()),
            _ => return Err(bad),
        }
    }
    Ok(())
}

/// Client and server Initial packets made here, for the tests and the
/// synthesizer's captures (checked by tshark).
pub mod testing {
    use super::*;

    /// An Initial of `version` from the client (`server` false) of a
    /// connection whose client chose `dcid`, carrying `frames`, padded to
    /// 1,200 bytes when from the client.
    pub fn initial(
        version: u32,
        dcid: &[u8],
        scid: &[u8],
        server: bool,
        pn: u32,
        frames: &[u8],
    ) -> Vec<u8> {
        let keys = Keys::new(version, dcid, server).unwrap();
        let kind: u8 = if version == V2 { 1 } else { 0 };
        let mut payload = frames.to_vec();
        let mut head = vec![0xc0 | kind << 4 | 3];
        head.extend_from_slice(&version.to_be_bytes());
        let (d, s) = if server { (scid, dcid) } else { (dcid, scid) };
        head.push(d.len() as u8);
        head.extend_from_slice(d);
        head.push(s.len() as u8);
        head.extend_from_slice(s);
        head.push(0); // no token
        let fixed = head.len() + 2 + 4 + 16;
        if !server && fixed + payload.len() < 1200 {
            payload.resize(1200 - fixed, 0); // PADDING frames
        }
        let length = (4 + payload.len() + 16) as u16 | 0x4000;
        head.extend_from_slice(&length.to_be_bytes());
        let pn_at = head.len();
        head.extend_from_slice(&pn.to_be_bytes());
        let mut nonce = keys.iv;
        for (n, b) in nonce[4..].iter_mut().zip(u64::from(pn).to_be_bytes()) {
            *n ^= b;
        }
        keys.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&head),
                &mut payload,
            )
            .unwrap();
        let mut out = head;
        out.extend_from_slice(&payload);
        let mask = keys.hp.new_mask(&out[pn_at + 4..pn_at + 20]).unwrap();
        out[0] ^= mask[0] & 0x0f;
        for i in 0..4 {
            out[pn_at + i] ^= mask[1 + i];
        }
        out
    }

    /// A CRYPTO frame.
    pub fn crypto(offset: u16, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x06];
        f.extend_from_slice(&(offset | 0x4000).to_be_bytes());
        f.extend_from_slice(&(data.len() as u16 | 0x4000).to_be_bytes());
        f.extend_from_slice(data);
        f
    }
}
