//! Application-layer metadata: what a flow's DNS, TLS, QUIC, HTTP, SSH or
//! ICS protocol said, extracted from its first packets (ICS: from every
//! PDU).
//!
//! Two halves, on either side of the hand-off to the flow workers:
//!
//! - [`Sniffer::keep`], where packets are decoded: a few byte comparisons
//!   on the start of each payload recognize an application PDU by its
//!   content ([`detect`]; ports only break ties), and only such payloads,
//!   and the continuations a PDU's own length says it needs (a ClientHello
//!   over two segments, an SSH KEXINIT after its banner), are copied into
//!   the batch's payload buffer. Bulk data is neither copied nor parsed.
//! - [`FlowApp`], a flow's application state in its worker's table: the
//!   kept payloads are reassembled in sequence where one PDU spans
//!   segments (at most [`REASM_MAX`] bytes) and parsed into a
//!   [`vigil_proto::App`], which every record of the flow carries.
//!
//! Nothing here allocates per packet once warm: the payload buffer is the
//! batch's, reused; a flow's state is allocated when its protocol is first
//! recognized, from a pool its ended flows return to. Malformed application
//! data is counted by reason ([`AppStats`]) and never panics (fuzzed
//! through the decode targets, which run the sniffer and parsers too).

use vigil_proto::app::{App, AppProto, Dns, Http, Ics, Ssh, Tls};

use crate::decode::PacketMeta;

mod dns;
mod http;
mod ics;
pub(crate) mod quic;
mod ssh;
#[cfg(test)]
mod tests;
mod tls;

/// Most bytes of one packet's payload kept for the application layer.
pub const KEEP_MAX: usize = 8192;
/// Most bytes reassembled for one PDU (a ClientHello, a KEXINIT).
pub const REASM_MAX: usize = 16384;
/// Continuations the sniffer awaits at once (direct-mapped by flow).
const CONT_SLOTS: usize = 1024;

/// Why application data could not be read. Counted, never logged per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AppError {
    /// A DNS message cut or malformed.
    Dns,
    /// A TLS hello cut or malformed.
    Tls,
    /// An HTTP request or status line malformed.
    Http,
    /// An SSH banner or KEXINIT malformed.
    Ssh,
    /// An ICS PDU malformed.
    Ics,
    /// A segment missing inside a PDU being reassembled.
    Gap,
    /// A PDU longer than [`REASM_MAX`].
    TooLong,
    /// A QUIC Initial packet that does not decrypt or parse.
    Quic,
}

impl AppError {
    /// Every reason, in counter order.
    pub const ALL: [AppError; 8] = [
        AppError::Dns,
        AppError::Tls,
        AppError::Http,
        AppError::Ssh,
        AppError::Ics,
        AppError::Gap,
        AppError::TooLong,
        AppError::Quic,
    ];

    /// A bounded label for metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            AppError::Dns => "dns_malformed",
            AppError::Tls => "tls_malformed",
            AppError::Http => "http_malformed",
            AppError::Ssh => "ssh_malformed",
            AppError::Ics => "ics_malformed",
            AppError::Gap => "reassembly_gap",
            AppError::TooLong => "pdu_too_long",
            AppError::Quic => "quic_malformed",
        }
    }
}

/// Application-layer counters of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Flows whose application protocol was recognized.
    pub flows: u64,
    /// Payloads parsed.
    pub payloads: u64,
    /// Unreadable application data by reason, indexed like [`AppError::ALL`].
    pub errors: [u64; AppError::ALL.len()],
}

impl AppStats {
    /// Adds another table's counters.
    pub fn merge(&mut self, o: &AppStats) {
        self.flows += o.flows;
        self.payloads += o.payloads;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn error_counts(&self) -> impl Iterator<Item = (AppError, u64)> + '_ {
        AppError::ALL
            .iter()
            .zip(self.errors)
            .filter(|(_, n)| *n > 0)
            .map(|(e, n)| (*e, n))
    }

    fn count(&mut self, e: AppError) {
        self.errors[e as usize] += 1;
    }
}

/// A PDU that continues past its packet: the sniffer keeps the next
/// `left` bytes of this direction.
#[derive(Clone, Copy, Default)]
struct Cont {
    tag: u64,
    next_seq: u32,
    left: u32,
}

/// Chooses, where packets are decoded, the payloads the application layer
/// needs, and copies them into the batch's payload buffer. One per
/// decoding thread.
pub struct Sniffer {
    enabled: bool,
    cont: Box<[Cont]>,
    live: u32,
}

impl std::fmt::Debug for Sniffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sniffer")
            .field("enabled", &self.enabled)
            .field("awaiting", &self.live)
            .finish()
    }
}

impl Sniffer {
    /// A sniffer; `enabled` false keeps nothing (extraction off).
    pub fn new(enabled: bool) -> Sniffer {
        Sniffer {
            enabled,
            cont: vec![Cont::default(); if enabled { CONT_SLOTS } else { 0 }].into_boxed_slice(),
            live: 0,
        }
    }

    /// Keeps the application layer's part of `payload`, `m`'s transport
    /// payload as the decoder handed it over, in `buf`, recording where
    /// in `m`.
    #[inline(always)]
    pub fn keep(&mut self, m: &mut PacketMeta, payload: &[u8], buf: &mut Vec<u8>) {
        if !self.enabled || payload.is_empty() {
            return;
        }
        self.keep_payload(m, payload, buf);
    }

    /// Adds packet `m` to a batch (`metas`), keeping what the application
    /// layer needs of its transport payload in the batch's `payloads`.
    #[inline(always)]
    pub fn push(
        &mut self,
        mut m: PacketMeta,
        payload: &[u8],
        metas: &mut Vec<PacketMeta>,
        payloads: &mut Vec<u8>,
    ) {
        self.keep(&mut m, payload, payloads);
        metas.push(m);
    }

    /// [`Sniffer::keep`] for a packet whose payload is at its
    /// `payload_at` in `base` (the frame it was decoded from, or what its
    /// offset was made relative to).
    #[inline(always)]
    pub fn keep_at(&mut self, m: &mut PacketMeta, base: &[u8], buf: &mut Vec<u8>) {
        if !self.enabled || m.payload_cap == 0 {
            return;
        }
        self.keep_payload(m, m.payload(base), buf);
    }

    fn keep_payload(&mut self, m: &mut PacketMeta, p: &[u8], buf: &mut Vec<u8>) {
        let n = self.wanted(m, p).min(p.len()).min(KEEP_MAX);
        if n == 0 || buf.len() + n > u32::MAX as usize {
            return;
        }
        m.app_at = buf.len() as u32;
        m.app_len = n as u32;
        buf.extend_from_slice(&p[..n]);
    }

    /// Bytes of `p` to keep.
    fn wanted(&mut self, m: &PacketMeta, p: &[u8]) -> usize {
        let (sport, dport) = if m.src_is_lo {
            (m.key.port_lo, m.key.port_hi)
        } else {
            (m.key.port_hi, m.key.port_lo)
        };
        let tcp = m.key.proto == 6;
        let tag = (m.hash ^ u64::from(m.src_is_lo).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        if tcp && self.live > 0 {
            let e = &mut self.cont[tag as usize % CONT_SLOTS];
            if e.tag == tag {
                if m.tcp_seq == e.next_seq {
                    let n = (e.left as usize).min(p.len());
                    e.next_seq = e.next_seq.wrapping_add(p.len() as u32);
                    e.left -= n as u32;
                    if e.left == 0 {
                        e.tag = 0;
                        self.live -= 1;
                    }
                    return p.len();
                }
                if (m.tcp_seq.wrapping_sub(e.next_seq) as i32) <= 0 {
                    // Sent again: kept the first time.
                    return 0;
                }
                // A segment missing: the PDU cannot be completed, and this
                // segment may start another.
                e.tag = 0;
                self.live -= 1;
            }
        }
        let Some((_, more)) = detect(m.key.proto, sport, dport, p) else {
            return 0;
        };
        if tcp && more > 0 {
            let e = &mut self.cont[tag as usize % CONT_SLOTS];
            if e.tag == 0 {
                self.live += 1;
            }
            *e = Cont {
                tag,
                next_seq: m.tcp_seq.wrapping_add(p.len() as u32),
                left: more.min(REASM_MAX as u32),
            };
        }
        p.len()
    }
}

/// First bytes a TCP PDU of a protocol read here may start with: TLS
/// (0x16), HTTP methods and responses, SSH, DNP3 (0x05), TPKT (0x03),
/// IEC 104 (0x68), EtherNet/IP commands, OPC UA message types.
const FIRST: [bool; 256] = {
    let mut t = [false; 256];
    let firsts: &[u8] = b"\x16GPHDOCTSMNRAE\x05\x03\x68\x01\x04\x63\x64\x65\x66\x6f\x70\x72\x73";
    let mut i = 0;
    while i < firsts.len() {
        t[firsts[i] as usize] = true;
        i += 1;
    }
    t
};

/// The application protocol whose PDU `p` starts with (a packet from
/// `sport` to `dport` of IP protocol `proto`), and how many bytes past `p`
/// its first PDU (or the part of it a field needs) goes on.
pub fn detect(proto: u8, sport: u16, dport: u16, p: &[u8]) -> Option<(AppProto, u32)> {
    let port = |n: u16| sport == n || dport == n;
    match proto {
        // Most payloads are bulk data: one table look-up and one compare
        // turn them away. Every PDU this module reads starts with one of
        // the first bytes in `FIRST`, or (Modbus, whose transaction id
        // comes first) has zeros in its third and fourth bytes.
        6 if p.first().is_none_or(|&b| !FIRST[usize::from(b)])
            && p.get(2..4) != Some(&[0, 0])
            && !port(53)
            && !port(2404)
            && !port(5353)
            && !port(5355) =>
        {
            None
        }
        6 => {
            if let Some(more) = tls::hello(p) {
                return Some((AppProto::Tls, more));
            }
            if http::starts(p) {
                return Some((AppProto::Http, 0));
            }
            if p.starts_with(b"SSH-") {
                return Some((AppProto::Ssh, ssh::more_after_banner(p)));
            }
            if let Some(x) = ics::detect_tcp(p, &port) {
                return Some(x);
            }
            if port(53) || port(5353) || port(5355) {
                return dns::tcp_more(p).map(|m| (AppProto::Dns, m));
            }
            None
        }
        17 => {
            if quic::initial(p) {
                return Some((AppProto::Quic, 0));
            }
            if let Some(a) = ics::detect_udp(p, &port) {
                return Some((a, 0));
            }
            if http::starts(p) && port(1900) {
                return Some((AppProto::Http, 0));
            }
            // NetBIOS name service borrows DNS's format: it is not DNS.
            if port(137) {
                return None;
            }
            if ((port(53) || port(5353) || port(5355)) && dns::plausible(p)) || dns::looks_like(p) {
                return Some((AppProto::Dns, 0));
            }
            None
        }
        _ => None,
    }
}

/// The bytes a PDU of `proto` that `p` starts goes on past it.
fn pdu_more(proto: AppProto, p: &[u8]) -> u32 {
    match proto {
        AppProto::Dns => dns::tcp_more(p).unwrap_or(0),
        AppProto::Tls => tls::hello(p).unwrap_or(0),
        AppProto::Ssh => ssh::pdu_more(p),
        AppProto::Http | AppProto::Quic => 0,
        ics => ics::tcp_more(ics, p),
    }
}

/// A PDU of one direction being reassembled.
#[derive(Debug, Default)]
struct Reasm {
    buf: Vec<u8>,
    next_seq: u32,
    /// Bytes the PDU needs in all; 0: nothing under way.
    need: usize,
}

/// Sets `s` to the text of `b` (at most `max` bytes, invalid UTF-8
/// replaced), reusing its buffer.
pub(super) fn put(s: &mut String, b: &[u8], max: usize) {
    s.clear();
    append(s, &b[..b.len().min(max)]);
}

/// Appends the text of `b`, invalid UTF-8 replaced.
fn append(s: &mut String, b: &[u8]) {
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            s.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// A list of strings of which the first `n` are in use: the others keep
/// their buffers for the next flow.
pub(super) struct Texts<'a> {
    pub(super) v: &'a mut Vec<String>,
    pub(super) n: &'a mut usize,
}

impl Texts<'_> {
    /// The next string, emptied.
    pub(super) fn next(&mut self) -> &mut String {
        if *self.n == self.v.len() {
            self.v.push(String::new());
        }
        let s = &mut self.v[*self.n];
        *self.n += 1;
        s.clear();
        s
    }

    /// Strings in use.
    pub(super) fn len(&self) -> usize {
        *self.n
    }
}

/// A flow's application state in its worker's table. Its fields keep
/// their buffers when the state goes back to the pool, so that once warm
/// reading a flow's metadata allocates nothing; the record's copy is made
/// when a record is emitted.
#[derive(Debug, Default)]
pub struct FlowApp {
    proto: Option<AppProto>,
    /// Per direction: its banner was read.
    seen: [bool; 2],
    /// Per direction: its KEXINIT was read.
    done: [bool; 2],
    /// `answers` stays empty in this: the strings are kept in the list
    /// below, of which the first `answers_used` are in use.
    dns: Dns,
    answers: Vec<String>,
    answers_used: usize,
    /// The rest, for flows other than DNS over UDP (most flows with
    /// metadata are DNS: their state stays in two cache lines).
    cold: Option<Box<Cold>>,
}

/// The state of TCP and ICS flows, allocated the first time a slab entry
/// holds such a flow and kept with it.
#[derive(Debug, Default)]
struct Cold {
    /// `alpn` stays empty in this, as `answers` in `dns`.
    tls: Tls,
    alpn: Vec<String>,
    alpn_used: usize,
    http: Http,
    ssh: Ssh,
    ics: Ics,
    /// A hello gathered from several records.
    scratch: Vec<u8>,
    /// QUIC's Initial packets, decrypted and their CRYPTO streams.
    quic: quic::Quic,
    reasm: [Reasm; 2],
}

/// One packet's payload as the application layer gets it.
#[derive(Debug)]
pub struct Payload<'a> {
    /// 0 from the flow's originator, 1 from its responder.
    pub dir: usize,
    /// IP protocol.
    pub proto: u8,
    /// The packet's source and destination ports.
    pub ports: (u16, u16),
    /// TCP sequence number.
    pub seq: u32,
    /// The kept payload bytes.
    pub data: &'a [u8],
}

fn clear_ics(i: &mut Ics) {
    i.functions.clear();
    i.causes.clear();
    i.reads = 0;
    i.writes = 0;
    i.control = 0;
    i.diagnostics = 0;
    i.discovery = 0;
    i.exceptions = 0;
    i.malformed = 0;
}

impl FlowApp {
    /// Clears the state for another flow, keeping its buffers.
    pub fn reset(&mut self) {
        self.proto = None;
        self.next_dns_exchange();
        if let Some(c) = &mut self.cold {
            let t = &mut c.tls;
            t.sni.clear();
            t.version = 0;
            t.ja4.clear();
            t.ja4s.clear();
            t.server_alpn.clear();
            c.alpn_used = 0;
            let h = &mut c.http;
            h.method.clear();
            h.host.clear();
            h.path.clear();
            h.status = 0;
            h.user_agent.clear();
            let x = &mut c.ssh;
            x.client.clear();
            x.server.clear();
            x.hassh.clear();
            x.hassh_server.clear();
            clear_ics(&mut c.ics);
            c.ics.units.clear();
            c.quic.reset();
            for r in &mut c.reasm {
                r.buf.clear();
                r.need = 0;
            }
        }
        self.seen = [false; 2];
        self.done = [false; 2];
    }

    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Default::default)
    }

    /// Whether `p`, a payload of this flow, asks another name than the
    /// exchange read, once that is complete (its response read): each name
    /// a DNS flow asks is a record of its own, so that a socket that asks
    /// many (a tunnel, a forwarder on a fixed port, DNS over TCP) reports
    /// every one, not the first. The same name asked again (AAAA after A,
    /// as `getaddrinfo` does on one socket) stays in the record.
    pub fn new_dns_exchange(&self, proto: u8, p: &[u8]) -> bool {
        if self.proto != Some(AppProto::Dns) || self.dns.rcode.is_none() {
            return false;
        }
        let msg = if proto == 6 { p.get(2..) } else { Some(p) };
        msg.filter(|m| m.len() >= 12).is_some_and(|m| {
            m[2] & 0x80 == 0
                && u16::from_be_bytes([m[0], m[1]]) != self.dns.id
                && !dns::asks(m, &self.dns.qname)
        })
    }

    /// Forgets the DNS exchange read, for the flow's next one.
    pub fn next_dns_exchange(&mut self) {
        let d = &mut self.dns;
        d.id = 0;
        d.qname.clear();
        d.qtype = 0;
        d.rcode = None;
        d.answer_count = 0;
        self.answers_used = 0;
    }

    /// The metadata a record carries, `None` before the protocol is
    /// recognized. ICS counts start again for the next record.
    pub fn take_for_record(&mut self) -> Option<Box<App>> {
        let proto = self.proto?;
        let mut app = App {
            proto: Some(proto),
            ..App::default()
        };
        match proto {
            AppProto::Dns => {
                let d = &self.dns;
                app.dns = Some(Box::new(Dns {
                    id: d.id,
                    qname: d.qname.clone(),
                    qtype: d.qtype,
                    rcode: d.rcode,
                    answers: self.answers[..self.answers_used].to_vec(),
                    answer_count: d.answer_count,
                }));
            }
            AppProto::Tls | AppProto::Quic => {
                let c = self.cold();
                let t = &c.tls;
                app.tls = Some(Box::new(Tls {
                    sni: t.sni.clone(),
                    alpn: c.alpn[..c.alpn_used].to_vec(),
                    version: t.version,
                    ja4: t.ja4.clone(),
                    ja4s: t.ja4s.clone(),
                    server_alpn: t.server_alpn.clone(),
                }));
            }
            AppProto::Http => app.http = Some(Box::new(self.cold().http.clone())),
            AppProto::Ssh => app.ssh = Some(Box::new(self.cold().ssh.clone())),
            _ => {
                let c = self.cold();
                app.ics = Some(Box::new(c.ics.clone()));
                clear_ics(&mut c.ics);
            }
        }
        Some(Box::new(app))
    }

    /// Applies one packet's kept payload.
    pub fn packet(&mut self, p: &Payload<'_>, stats: &mut AppStats) {
        stats.payloads += 1;
        let was = self.proto.is_some();
        if p.proto == 6 && self.cold.as_ref().is_some_and(|c| c.reasm[p.dir].need > 0) {
            self.continue_pdu(p, stats);
        } else {
            self.first(p, stats);
        }
        if !was && self.proto.is_some() {
            stats.flows += 1;
        }
    }

    /// A payload that starts a PDU.
    fn first(&mut self, p: &Payload<'_>, stats: &mut AppStats) {
        let ssh_next = self.proto == Some(AppProto::Ssh) && !self.done[p.dir] && p.proto == 6;
        let (proto, more) = match detect(p.proto, p.ports.0, p.ports.1, p.data) {
            // An SSH KEXINIT in a segment of its own carries no signature:
            // it is what follows the banner.
            Some((AppProto::Ssh, _)) => (AppProto::Ssh, ssh::pdu_more(p.data)),
            Some(x) => x,
            None if ssh_next => (AppProto::Ssh, ssh::pdu_more(p.data)),
            None => return,
        };
        match self.proto {
            None => self.proto = Some(proto),
            Some(known) if known != proto => return,
            Some(_) => {}
        }
        if more > 0 && p.proto == 6 {
            let need = p.data.len() + more as usize;
            if need > REASM_MAX {
                stats.count(AppError::TooLong);
                // What is there may still hold the fields sought.
                self.parse(p, p.data, true, stats);
                return;
            }
            let r = &mut self.cold().reasm[p.dir];
            r.buf.clear();
            r.buf.extend_from_slice(p.data);
            r.next_seq = p.seq.wrapping_add(p.data.len() as u32);
            r.need = need;
            return;
        }
        self.parse(p, p.data, false, stats);
    }

    /// A payload continuing the PDU under reassembly in its direction.
    fn continue_pdu(&mut self, p: &Payload<'_>, stats: &mut AppStats) {
        let proto = self.proto;
        let r = &mut self.cold().reasm[p.dir];
        let off = p.seq.wrapping_sub(r.next_seq) as i32;
        if off > 0 {
            // A segment is missing: read what there is, and this segment
            // as the start of what comes next.
            stats.count(AppError::Gap);
            self.parse_reassembled(p, true, stats);
            self.first(p, stats);
            return;
        }
        // Retransmitted bytes are skipped.
        let skip = off.unsigned_abs() as usize;
        if skip >= p.data.len() {
            return;
        }
        let data = &p.data[skip..];
        r.buf.extend_from_slice(data);
        r.next_seq = r.next_seq.wrapping_add(data.len() as u32);
        if r.buf.len() >= r.need {
            // What arrived may tell of more to come (a length that was cut).
            let more = proto.map_or(0, |a| pdu_more(a, &r.buf)) as usize;
            if more > 0 && r.buf.len() + more <= REASM_MAX {
                r.need = r.buf.len() + more;
                return;
            }
            self.parse_reassembled(p, false, stats);
        }
    }

    /// Parses the PDU reassembled in `p`'s direction (as much as arrived:
    /// `cut`), and empties the buffer, keeping it.
    fn parse_reassembled(&mut self, p: &Payload<'_>, cut: bool, stats: &mut AppStats) {
        let r = &mut self.cold().reasm[p.dir];
        let buf = std::mem::take(&mut r.buf);
        r.need = 0;
        self.parse(p, &buf, cut, stats);
        let r = &mut self.cold().reasm[p.dir];
        r.buf = buf;
        r.buf.clear();
    }

    /// Parses one whole PDU (or as much of it as arrived, `cut`).
    fn parse(&mut self, p: &Payload<'_>, data: &[u8], cut: bool, stats: &mut AppStats) {
        let Some(proto) = self.proto else { return };
        let res = match proto {
            AppProto::Dns => {
                let mut answers = Texts {
                    v: &mut self.answers,
                    n: &mut self.answers_used,
                };
                if p.proto == 6 {
                    dns::parse_tcp(data, &mut self.dns, &mut answers)
                } else {
                    dns::parse(data, &mut self.dns, &mut answers)
                }
            }
            AppProto::Tls => {
                let c = self.cold();
                let mut alpn = Texts {
                    v: &mut c.alpn,
                    n: &mut c.alpn_used,
                };
                tls::parse(data, &mut c.tls, &mut alpn, &mut c.scratch)
            }
            AppProto::Quic => {
                let c = self.cold();
                let mut alpn = Texts {
                    v: &mut c.alpn,
                    n: &mut c.alpn_used,
                };
                match c.quic.datagram(p.dir, data) {
                    Ok(Some(msg)) => tls::handshake(msg, 'q', &mut c.tls, &mut alpn),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            AppProto::Http => http::parse(data, &mut self.cold().http),
            AppProto::Ssh => self.ssh(p.dir, data, cut),
            ics => ics::parse(ics, data, p.dir, p.ports, &mut self.cold().ics),
        };
        if let Err(e) = res {
            if proto.is_ics() {
                self.cold().ics.malformed += 1;
            }
            stats.count(e);
        }
    }

    /// An SSH PDU: a banner (and what follows it in its segment), or a
    /// KEXINIT. Each direction's first KEXINIT is read, nothing after.
    fn ssh(&mut self, dir: usize, data: &[u8], cut: bool) -> Result<(), AppError> {
        let x = &mut self.cold.get_or_insert_with(Default::default).ssh;
        let mut rest = data;
        if data.starts_with(b"SSH-") {
            if self.seen[dir] {
                return Ok(());
            }
            self.seen[dir] = true;
            rest = ssh::banner(data, x, dir)?;
        }
        if rest.is_empty() || self.done[dir] {
            return Ok(());
        }
        self.done[dir] = true;
        match ssh::kexinit(rest, x, dir) {
            Err(_) if cut => Ok(()),
            r => r,
        }
    }
}
