//! One flow's state and how a packet moves it: the 128-byte slot, the
//! history letters, Zeek's TCP endpoint state machine and the connection
//! state derived from it, and the timeouts that apply to a flow in its
//! state.

use vigil_proto::{ConnState, EndReason, History};

use crate::decode::PacketMeta;
use crate::decode::key::FlowKey;

// History letter bits: originator in the low byte, responder in the next.
pub(super) const H_SYN: u32 = 1 << 0;
pub(super) const H_SYNACK: u32 = 1 << 1;
pub(super) const H_ACK: u32 = 1 << 2;
pub(super) const H_DATA: u32 = 1 << 3;
pub(super) const H_FIN: u32 = 1 << 4;
pub(super) const H_RST: u32 = 1 << 5;
pub(super) const H_ZWIN: u32 = 1 << 6;
pub(super) const H_MULTI: u32 = 1 << 7;
pub(super) const H_FLIP: u32 = 1 << 16;
pub(super) const LETTERS: &[u8; 8] = b"SHADFRWQ";

// Flow state bits.
pub(super) const IN_USE: u8 = 1 << 0;
pub(super) const SEEN_ORIG: u8 = 1 << 1;
pub(super) const SEEN_RESP: u8 = 1 << 2;
pub(super) const CLOSED: u8 = 1 << 3;
pub(super) const TUNNELED: u8 = 1 << 4;
pub(super) const LO_IS_ORIG: u8 = 1 << 5;
/// The flow has application state (in the table's `apps`).
pub(super) const HAS_APP: u8 = 1 << 6;

/// Zeek's TCP endpoint states (`TCP_ENDPOINT_*` of its `TCP_Endpoint`), from
/// which it derives `conn_state`.
pub(super) mod ep {
    pub const INACTIVE: u8 = 0;
    pub const SYN_SENT: u8 = 1;
    pub const SYN_ACK_SENT: u8 = 2;
    pub const PARTIAL: u8 = 3;
    pub const ESTABLISHED: u8 = 4;
    pub const CLOSED: u8 = 5;
    pub const RESET: u8 = 6;
    /// `RESET` entered from `CLOSED` (Zeek's `prev_state == CLOSED`): a FIN
    /// from the peer makes it `CLOSED` again, a FIN-then-RST close being a
    /// normal termination.
    pub const RESET_AFTER_CLOSE: u8 = 7;

    /// Either kind of `RESET`.
    pub fn is_reset(s: u8) -> bool {
        s >= RESET
    }
}

pub(super) const TCP_FIN: u8 = 0x01;
pub(super) const TCP_SYN: u8 = 0x02;
pub(super) const TCP_RST: u8 = 0x04;
pub(super) const TCP_ACK: u8 = 0x10;

/// One flow slot: 128 bytes, cache-line aligned so that it spans exactly
/// two lines (unaligned, a slot touches three).
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
pub(super) struct Flow {
    pub(super) key: FlowKey,
    pub(super) flow_id: u64,
    /// First packet of the current record (segment).
    pub(super) first_ns: u64,
    pub(super) last_ns: u64,
    pub(super) bytes: [u64; 2],
    pub(super) pkts: [u32; 2],
    pub(super) generation: u32,
    pub(super) seen: u32,
    pub(super) history: History,
    /// Sequence number of the originator's last SYN (TCP).
    pub(super) syn_seq: u32,
    pub(super) flags: [u8; 2],
    pub(super) init_flags: [u8; 2],
    pub(super) icmp: [u8; 2],
    pub(super) state: u8,
    /// Zeek's TCP endpoint states ([`ep`]): the originator's in bits 0-2,
    /// the responder's in bits 4-6.
    pub(super) tcp: u8,
}

impl Flow {
    /// Whether the key's lower endpoint is the originator.
    #[inline]
    pub(super) fn lo_is_orig(&self) -> bool {
        self.state & LO_IS_ORIG != 0
    }
}

/// Idle and active timeouts in nanoseconds, resolved once.
#[derive(Clone, Copy, Debug)]
pub(super) struct TimeoutsNs {
    /// [protocol class][new, established]; class 0 tcp, 1 udp, 2 icmp, 3 other.
    pub(super) idle: [[u64; 2]; 4],
    pub(super) tcp_closed: u64,
    pub(super) active: u64,
    /// Early report interval; 0: off.
    pub(super) report: u64,
    pub(super) report_min_packets: u32,
}

impl TimeoutsNs {
    #[inline]
    pub(super) fn idle_timeout(&self, f: &Flow) -> u64 {
        let class = match f.key.proto {
            6 => {
                if f.state & CLOSED != 0 {
                    return self.tcp_closed;
                }
                0
            }
            17 => 1,
            1 | 58 => 2,
            _ => 3,
        };
        let est = usize::from(f.state & SEEN_RESP != 0);
        self.idle[class][est]
    }

    /// Whether the flow's unreported packets are to be reported early once
    /// the report interval has passed: it is one-way so far, or heavy.
    #[inline]
    pub(super) fn reportable(&self, f: &Flow) -> bool {
        self.report != 0
            && f.pkts[0] + f.pkts[1] > 0
            && (f.state & SEEN_RESP == 0 || f.pkts[0] + f.pkts[1] >= self.report_min_packets)
    }

    /// Whether the flow's current record ends before a packet (or a wheel
    /// visit) at `now_ns`: the active timeout, or an early report.
    #[inline]
    pub(super) fn record_due(&self, f: &Flow, now_ns: u64) -> bool {
        f.pkts[0] + f.pkts[1] > 0
            && (now_ns > f.first_ns.saturating_add(self.active)
                || (self.reportable(f) && now_ns > f.first_ns.saturating_add(self.report)))
    }

    /// Whether `f` has been idle past its timeout at `now_ns`.
    #[inline]
    pub(super) fn idle_past(&self, f: &Flow, now_ns: u64) -> bool {
        now_ns > f.last_ns.saturating_add(self.idle_timeout(f))
    }

    /// Whether a one-way flow's early report is due at `now_ns`.
    #[inline]
    pub(super) fn one_way_due(&self, f: &Flow, now_ns: u64) -> bool {
        self.report != 0
            && f.state & SEEN_RESP == 0
            && f.pkts[0] + f.pkts[1] > 0
            && now_ns > f.first_ns.saturating_add(self.report)
    }
}

/// Whether a packet reopens its flow: a new SYN from the side that opened
/// it, with another initial sequence number, is a new connection on a reused
/// 4-tuple (Wireshark's and Suricata's rule).
#[inline]
pub(super) fn reopens(f: &Flow, m: &PacketMeta) -> bool {
    m.key.proto == 6
        && m.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
        && f.seen & H_SYN != 0
        && (m.src_is_lo == f.lo_is_orig())
        && m.tcp_seq != f.syn_seq
}

/// Adds a packet to its flow's counters, flags and history. Returns whether
/// a packet counter is full: the flow then reports what it has and starts a
/// new record, so that counters stay exact.
#[inline]
pub(super) fn apply(f: &mut Flow, m: &PacketMeta) -> bool {
    let dir = usize::from(m.src_is_lo != f.lo_is_orig());
    if f.pkts[dir] == 0 && f.state & (if dir == 0 { SEEN_ORIG } else { SEEN_RESP }) == 0 {
        f.init_flags[dir] = m.tcp_flags;
        if dir == 0 {
            f.icmp = m.icmp;
        }
    }
    f.state |= if dir == 0 { SEEN_ORIG } else { SEEN_RESP };
    if f.pkts[0] + f.pkts[1] == 0 {
        f.first_ns = m.ts_ns;
    }
    f.pkts[dir] += 1;
    f.bytes[dir] += u64::from(m.ip_bytes);
    f.last_ns = f.last_ns.max(m.ts_ns);
    f.flags[dir] |= m.tcp_flags;
    let fl = m.tcp_flags;
    let mut ev = 0u32;
    if m.key.proto == 6 {
        const CONTROL: u8 = TCP_SYN | TCP_FIN | TCP_RST;
        if fl & CONTROL != 0 {
            let syn = fl & TCP_SYN != 0;
            if syn {
                if dir == 0 {
                    f.syn_seq = m.tcp_seq;
                }
                if fl & (TCP_FIN | TCP_RST) != 0 {
                    ev |= H_MULTI;
                }
                ev |= if fl & TCP_ACK != 0 { H_SYNACK } else { H_SYN };
            }
            if fl & TCP_FIN != 0 {
                ev |= H_FIN;
            }
            if fl & TCP_RST != 0 {
                ev |= H_RST;
            }
            f.tcp = tcp_step(f.tcp, dir, fl, m.payload_len > 0);
        } else if (f.tcp >> (4 * dir)) & 7 == ep::INACTIVE {
            // Without control flags only an endpoint's first packets move it.
            f.tcp = tcp_step(f.tcp, dir, fl, m.payload_len > 0);
        }
        if m.payload_len > 0 {
            ev |= H_DATA;
        } else if fl & (TCP_ACK | CONTROL) == TCP_ACK {
            ev |= H_ACK;
        }
        if m.tcp_zero_window {
            ev |= H_ZWIN;
        }
    } else if m.payload_len > 0 {
        ev |= H_DATA;
    }
    let ev = ev << (8 * dir);
    let new = ev & !f.seen;
    if new != 0 {
        for (i, c) in LETTERS.iter().enumerate() {
            for d in 0..2 {
                if new & (1 << (i + 8 * d)) != 0 {
                    f.history
                        .push(if d == 0 { *c } else { c.to_ascii_lowercase() });
                }
            }
        }
        f.seen |= new;
        if m.key.proto == 6 {
            let both_fin = f.seen & H_FIN != 0 && f.seen & (H_FIN << 8) != 0;
            let rst = f.seen & (H_RST | (H_RST << 8)) != 0;
            if both_fin || rst {
                f.state |= CLOSED;
            }
        }
    }
    f.pkts[dir] == u32::MAX
}

/// One packet's step of Zeek's TCP endpoint state machine
/// (`TCPSessionAdapter::UpdateStateMachine`): `states` holds both sides'
/// [`ep`] states, `dir` is the sender (0 the originator). Zeek's SYN/SYN-ACK
/// reversal cannot arise here: a flow whose first packet is a SYN-ACK is
/// oriented at creation with that packet's sender as the responder.
#[inline(always)]
pub(super) fn tcp_step(states: u8, dir: usize, fl: u8, payload: bool) -> u8 {
    let (me_at, peer_at) = (4 * dir, 4 * (1 - dir));
    let mut me = (states >> me_at) & 7;
    let mut peer = (states >> peer_at) & 7;
    let (syn, fin, rst, ack) = (
        fl & TCP_SYN != 0,
        fl & TCP_FIN != 0,
        fl & TCP_RST != 0,
        fl & TCP_ACK != 0,
    );
    let reset = |from: u8| {
        if from == ep::CLOSED {
            ep::RESET_AFTER_CLOSE
        } else {
            ep::RESET
        }
    };
    match me {
        ep::INACTIVE => {
            if syn {
                if dir == 0 {
                    me = if ack { ep::SYN_ACK_SENT } else { ep::SYN_SENT };
                } else {
                    // A SYN answer (or a simultaneous open) establishes both.
                    if peer == ep::SYN_SENT {
                        peer = ep::ESTABLISHED;
                    }
                    me = ep::ESTABLISHED;
                }
            }
            if fin {
                me = ep::CLOSED;
            }
            if rst {
                me = reset(me);
            }
            if me == ep::INACTIVE {
                if dir == 1 && !payload && peer == ep::SYN_SENT {
                    // A bare ACK of a SYN before its SYN-ACK (some stacks
                    // do): not yet a partial connection.
                } else if ack && peer == ep::ESTABLISHED {
                    // The SYN was missed, the SYN-ACK was not.
                    me = ep::ESTABLISHED;
                } else {
                    me = ep::PARTIAL;
                }
            }
        }
        ep::SYN_SENT | ep::SYN_ACK_SENT => {
            if fin {
                me = ep::CLOSED;
            }
            if rst {
                me = reset(me);
            }
        }
        ep::ESTABLISHED | ep::PARTIAL => {
            if syn && me == ep::PARTIAL && peer == ep::INACTIVE && !ack {
                me = ep::SYN_SENT;
            }
            if fin && !rst {
                me = ep::CLOSED;
                if peer == ep::RESET_AFTER_CLOSE {
                    peer = ep::CLOSED;
                }
            }
            if rst {
                me = ep::RESET;
            }
        }
        // A RST after both sides' FINs changes nothing.
        ep::CLOSED if rst && peer != ep::CLOSED => me = ep::RESET_AFTER_CLOSE,
        _ => {}
    }
    (me << me_at) | (peer << peer_at)
}

pub(super) fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn closed_reason(f: &Flow) -> EndReason {
    if f.seen & (H_RST | (H_RST << 8)) != 0 {
        EndReason::Rst
    } else {
        EndReason::Fin
    }
}

/// Zeek's `conn_state` (its `Conn::conn_state`): for TCP from both sides'
/// endpoint states, for UDP from which sides have sent.
pub(super) fn conn_state(proto: u8, f: &Flow) -> ConnState {
    match proto {
        6 => {}
        17 => {
            return if f.state & SEEN_RESP != 0 {
                ConnState::SF
            } else {
                ConnState::S0
            };
        }
        _ => return ConnState::OTH,
    }
    let (os, rs) = (f.tcp & 7, (f.tcp >> 4) & 7);
    let inactive = |s: u8| s == ep::INACTIVE || s == ep::PARTIAL;
    if ep::is_reset(rs) {
        let no_data = f.seen & (H_DATA | (H_DATA << 8)) == 0;
        if os == ep::SYN_SENT || os == ep::SYN_ACK_SENT || (ep::is_reset(os) && no_data) {
            ConnState::REJ
        } else if inactive(os) {
            ConnState::RSTRH
        } else {
            ConnState::RSTR
        }
    } else if ep::is_reset(os) {
        if !inactive(rs) {
            ConnState::RSTO
        } else if syn_then_rst(f.history.as_str().as_bytes()) {
            ConnState::RSTOS0
        } else {
            ConnState::OTH
        }
    } else if os == ep::CLOSED && rs == ep::CLOSED {
        ConnState::SF
    } else if os == ep::CLOSED {
        if inactive(rs) {
            ConnState::SH
        } else {
            ConnState::S2
        }
    } else if rs == ep::CLOSED {
        if inactive(os) {
            ConnState::SHR
        } else {
            ConnState::S3
        }
    } else if os == ep::SYN_SENT && rs == ep::INACTIVE {
        ConnState::S0
    } else if os == ep::ESTABLISHED && rs == ep::ESTABLISHED {
        ConnState::S1
    } else {
        ConnState::OTH
    }
}

/// Whether a history reads as Zeek's RSTOS0 pattern `^?S[^HAFGIQ]*R.*`: the
/// originator's SYN, then its RST, with no SYN-ACK, ACK, FIN, gap or odd
/// flags from it in between.
pub(super) fn syn_then_rst(h: &[u8]) -> bool {
    let h = h.strip_prefix(b"^").unwrap_or(h);
    let Some(rest) = h.strip_prefix(b"S") else {
        return false;
    };
    for &c in rest {
        if c == b'R' {
            return true;
        }
        if b"HAFGIQ".contains(&c) {
            return false;
        }
    }
    false
}
