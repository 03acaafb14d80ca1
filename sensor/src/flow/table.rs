//! One shard's flow table.
//!
//! Layout: flows live in a slab of fixed-size chunks (so growth never copies
//! and slack stays below one chunk), found through a `hashbrown::HashTable`
//! of `u32` slot numbers keyed by the canonical key's hash. A timer wheel of
//! quarter-second ticks holds one `(slot, generation)` entry per flow; entries
//! are checked lazily, so touching a flow never moves it in the wheel.
//!
//! Invariants:
//! - every flow in use has exactly one wheel entry carrying its generation;
//!   entries whose generation no longer matches are stale and skipped;
//! - expiry decisions depend only on packet timestamps: a packet that finds
//!   its flow idle for longer than the timeout ends it before starting a new
//!   one, whether or not the wheel already got there, so the records are the
//!   same for any batch size and shard count;
//! - the active timeout is applied when a packet arrives more than the
//!   timeout after the start of its flow's current record: the record so far
//!   is emitted (`active`) and the packet starts the next one. The wheel only
//!   expires idle flows, so a flow's last record always carries the reason it
//!   ended (idle, fin, rst, …) and the output does not depend on when the
//!   wheel happens to run;
//! - early reports (`report_interval`, for detection) are the exception: a
//!   one-way record is cut `report_interval` after its first packet even if
//!   no packet follows (an unanswered SYN), by the wheel, by its next packet
//!   or by the final flush, whichever comes first, and always at the same
//!   point, so records stay independent of shards and batches. Such a flow
//!   that then ends with nothing more to report emits no further record: its
//!   last record says `active`. Heavy two-way records are cut by packets only;
//! - nothing here allocates per packet once the slab, index and wheel have
//!   grown to the working set.

use std::mem::size_of;

use hashbrown::HashMap;
use vigil_proto::flow::proto_has_ports;
use vigil_proto::{ConnState, EndReason, FlowRecord, History, TunnelInfo, Vlans};

use super::FlowConfig;
use super::community_id::community_id;
use super::index::FlowIndex;
use crate::cpu::prefetch;
use crate::decode::key::{FlowKey, addr_from};
use crate::decode::{PacketMeta, TunnelMeta};

const CHUNK: usize = 4096;
/// How many packets ahead [`FlowTable::process_batch`] requests flows.
const PREFETCH_AHEAD: usize = 8;
/// Flows from which [`FlowTable::process_batch`] prefetches: 2 MiB of
/// slots, about a core's L2 cache.
const PREFETCH_MIN_FLOWS: usize = 16_384;
const WHEEL_TICKS: usize = 8192;
// Quarter-second ticks: early reports (one-way flows) are due within a
// tick of their time; 8192 ticks span 34 minutes, past the active timeout.
const TICK_NS: u64 = 250_000_000;
const FLOW_ID_MASK: u64 = (1 << 53) - 1;

// History letter bits: originator in the low byte, responder in the next.
const H_SYN: u32 = 1 << 0;
const H_SYNACK: u32 = 1 << 1;
const H_ACK: u32 = 1 << 2;
const H_DATA: u32 = 1 << 3;
const H_FIN: u32 = 1 << 4;
const H_RST: u32 = 1 << 5;
const H_ZWIN: u32 = 1 << 6;
const H_MULTI: u32 = 1 << 7;
const H_FLIP: u32 = 1 << 16;
const LETTERS: &[u8; 8] = b"SHADFRWQ";

// Flow state bits.
const IN_USE: u8 = 1 << 0;
const SEEN_ORIG: u8 = 1 << 1;
const SEEN_RESP: u8 = 1 << 2;
const CLOSED: u8 = 1 << 3;
const TUNNELED: u8 = 1 << 4;
const LO_IS_ORIG: u8 = 1 << 5;

/// Zeek's TCP endpoint states (`TCP_ENDPOINT_*` of its `TCP_Endpoint`), from
/// which it derives `conn_state`.
mod ep {
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

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// One flow slot: 128 bytes, cache-line aligned so that it spans exactly
/// two lines (unaligned, a slot touches three).
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Flow {
    key: FlowKey,
    flow_id: u64,
    /// First packet of the current record (segment).
    first_ns: u64,
    last_ns: u64,
    bytes: [u64; 2],
    pkts: [u32; 2],
    generation: u32,
    seen: u32,
    history: History,
    /// Sequence number of the originator's last SYN (TCP).
    syn_seq: u32,
    flags: [u8; 2],
    init_flags: [u8; 2],
    icmp: [u8; 2],
    state: u8,
    /// Zeek's TCP endpoint states ([`ep`]): the originator's in bits 0-2,
    /// the responder's in bits 4-6.
    tcp: u8,
}

impl Flow {
    /// Whether the key's lower endpoint is the originator.
    #[inline]
    fn lo_is_orig(&self) -> bool {
        self.state & LO_IS_ORIG != 0
    }
}

/// Counters of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Packets applied.
    pub packets: u64,
    /// Flows created.
    pub flows: u64,
    /// Records emitted, by end reason (indexed like [`END_REASONS`]).
    pub records: [u64; 8],
    /// Flows evicted because the table was full.
    pub evicted: u64,
}

/// End reasons in the order of [`TableStats::records`].
pub const END_REASONS: [EndReason; 8] = EndReason::ALL;

fn reason_index(r: EndReason) -> usize {
    END_REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

impl TableStats {
    /// Adds another table's counters.
    pub fn merge(&mut self, o: &TableStats) {
        self.packets += o.packets;
        self.flows += o.flows;
        for (a, b) in self.records.iter_mut().zip(o.records) {
            *a += b;
        }
        self.evicted += o.evicted;
    }

    /// Total records emitted.
    pub fn record_total(&self) -> u64 {
        self.records.iter().sum()
    }
}

/// Idle and active timeouts in nanoseconds, resolved once.
#[derive(Clone, Copy, Debug)]
struct TimeoutsNs {
    /// [protocol class][new, established]; class 0 tcp, 1 udp, 2 icmp, 3 other.
    idle: [[u64; 2]; 4],
    tcp_closed: u64,
    active: u64,
    /// Early report interval; 0: off.
    report: u64,
    report_min_packets: u32,
}

impl TimeoutsNs {
    #[inline]
    fn idle_timeout(&self, f: &Flow) -> u64 {
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
    fn reportable(&self, f: &Flow) -> bool {
        self.report != 0
            && f.pkts[0] + f.pkts[1] > 0
            && (f.state & SEEN_RESP == 0 || f.pkts[0] + f.pkts[1] >= self.report_min_packets)
    }

    /// Whether the flow's current record ends before a packet (or a wheel
    /// visit) at `now_ns`: the active timeout, or an early report.
    #[inline]
    fn record_due(&self, f: &Flow, now_ns: u64) -> bool {
        f.pkts[0] + f.pkts[1] > 0
            && (now_ns > f.first_ns.saturating_add(self.active)
                || (self.reportable(f) && now_ns > f.first_ns.saturating_add(self.report)))
    }

    /// Whether `f` has been idle past its timeout at `now_ns`.
    #[inline]
    fn idle_past(&self, f: &Flow, now_ns: u64) -> bool {
        now_ns > f.last_ns.saturating_add(self.idle_timeout(f))
    }

    /// Whether a one-way flow's early report is due at `now_ns`.
    #[inline]
    fn one_way_due(&self, f: &Flow, now_ns: u64) -> bool {
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
fn reopens(f: &Flow, m: &PacketMeta) -> bool {
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
fn apply(f: &mut Flow, m: &PacketMeta) -> bool {
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
fn tcp_step(states: u8, dir: usize, fl: u8, payload: bool) -> u8 {
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

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A bounded flow table driven by packet time.
pub struct FlowTable {
    timeouts: TimeoutsNs,
    max_flows: usize,
    seed: u16,
    index: FlowIndex,
    chunks: Vec<Box<[Flow; CHUNK]>>,
    free: Vec<u32>,
    /// Slots ever handed out.
    high_water: u32,
    len: usize,
    tunnels: HashMap<u32, TunnelMeta>,
    wheel: Vec<Vec<(u32, u32)>>,
    spare: Vec<(u32, u32)>,
    /// Last tick the wheel has processed.
    tick: u64,
    /// Latest time given to [`FlowTable::advance`].
    now_ns: u64,
    wheel_started: bool,
    out: Vec<FlowRecord>,
    /// Counters.
    pub stats: TableStats,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len)
            .field("stats", &self.stats)
            .finish()
    }
}

impl FlowTable {
    /// A table holding at most `max_flows` flows.
    pub fn new(cfg: &FlowConfig, max_flows: usize) -> Self {
        let t = &cfg.timeouts;
        FlowTable {
            timeouts: TimeoutsNs {
                idle: [
                    [ns(t.tcp_new), ns(t.tcp_established)],
                    [ns(t.udp_new), ns(t.udp_established)],
                    [ns(t.icmp_new), ns(t.icmp_established)],
                    [ns(t.other_new), ns(t.other_established)],
                ],
                tcp_closed: ns(t.tcp_closed),
                active: ns(cfg.active_timeout),
                report: cfg.report_interval.map_or(0, ns),
                report_min_packets: cfg.report_min_packets,
            },
            max_flows: max_flows.max(1),
            seed: cfg.community_id_seed,
            index: FlowIndex::with_capacity(max_flows.clamp(1, 1 << 16)),
            chunks: Vec::new(),
            free: Vec::new(),
            high_water: 0,
            len: 0,
            tunnels: HashMap::new(),
            wheel: (0..WHEEL_TICKS).map(|_| Vec::new()).collect(),
            spare: Vec::new(),
            tick: 0,
            now_ns: 0,
            wheel_started: false,
            out: Vec::new(),
            stats: TableStats::default(),
        }
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory the table holds: slab, index, wheel, free list.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * size_of::<Flow>()
            + self.index.allocation_size()
            + self.wheel.iter().map(|w| w.capacity()).sum::<usize>() * size_of::<(u32, u32)>()
            + self.wheel.capacity() * size_of::<Vec<(u32, u32)>>()
            + self.free.capacity() * size_of::<u32>()
            + self.tunnels.allocation_size()
    }

    /// Records emitted since the last call.
    pub fn take_records(&mut self) -> Vec<FlowRecord> {
        std::mem::take(&mut self.out)
    }

    /// Records emitted and not yet taken.
    pub fn records(&self) -> &[FlowRecord] {
        &self.out
    }

    #[inline]
    fn flow(&self, slot: u32) -> &Flow {
        &self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }

    #[inline]
    fn flow_mut(&mut self, slot: u32) -> &mut Flow {
        &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }

    /// The packet time at which the flow's next timer is due.
    fn due(&self, f: &Flow) -> u64 {
        let idle = f
            .last_ns
            .saturating_add(self.timeouts.idle_timeout(f))
            .saturating_add(1);
        if f.pkts[0] + f.pkts[1] > 0 {
            let mut d = idle.min(
                f.first_ns
                    .saturating_add(self.timeouts.active)
                    .saturating_add(1),
            );
            // The wheel acts on one-way early reports only (heavy records
            // are cut by their packets), so only those are scheduled.
            if self.timeouts.report != 0 && f.state & SEEN_RESP == 0 {
                d = d.min(
                    f.first_ns
                        .saturating_add(self.timeouts.report)
                        .saturating_add(1),
                );
            }
            d
        } else {
            idle
        }
    }

    fn schedule(&mut self, slot: u32, generation: u32, due: u64) {
        let t = (due / TICK_NS).max(self.tick + 1);
        self.wheel[(t as usize) % WHEEL_TICKS].push((slot, generation));
    }

    /// Applies packets in order, exactly as [`FlowTable::process`] on each.
    ///
    /// The table is larger than the caches, so each packet's lookup misses
    /// twice (index line, then flow). Applied one by one, packets would stall
    /// on every miss in turn. Instead the loop runs ahead of itself: while
    /// packet `i` is applied, the index line of packet `i + 2·AHEAD` is
    /// requested, and the flow slot of packet `i + AHEAD` (the one its
    /// already-fetched index line points to, without comparing keys), so
    /// that a few dozen misses are in flight at any time — about what the
    /// CPU can track; requested all at once, most would be dropped. A wrong
    /// guess (a new flow, a tag collision) only wastes a prefetch.
    ///
    /// A table that fits in the caches gains nothing from this and loses
    /// the second lookup, so below 16,384 flows (2 MiB of slots) the packets
    /// are applied plainly.
    pub fn process_batch(&mut self, metas: &[PacketMeta]) {
        if self.len < PREFETCH_MIN_FLOWS {
            for m in metas {
                self.process(m);
            }
        } else {
            for m in metas.iter().take(2 * PREFETCH_AHEAD) {
                self.index.prefetch(m.hash);
            }
            for m in metas.iter().take(PREFETCH_AHEAD) {
                self.prefetch_flow(m.hash);
            }
            for (i, m) in metas.iter().enumerate() {
                if let Some(far) = metas.get(i + 2 * PREFETCH_AHEAD) {
                    self.index.prefetch(far.hash);
                }
                if let Some(near) = metas.get(i + PREFETCH_AHEAD) {
                    self.prefetch_flow(near.hash);
                }
                self.process(m);
            }
        }
        debug_assert_eq!(self.index.len(), self.len, "index and table disagree");
    }

    /// Requests the flow slot that `hash`'s first matching index entry names.
    #[inline]
    fn prefetch_flow(&self, hash: u64) {
        if let Some(slot) = self.index.find(hash, |_| true) {
            let f: *const Flow = self.flow(slot);
            prefetch(f.cast());
            prefetch(f.cast::<u8>().wrapping_add(64));
        }
    }

    /// Applies one packet.
    #[inline]
    pub fn process(&mut self, m: &PacketMeta) {
        self.stats.packets += 1;
        if !self.wheel_started {
            self.tick = m.ts_ns / TICK_NS;
            self.wheel_started = true;
        }
        let chunks = &self.chunks;
        let found = self.index.find(m.hash, |s| {
            chunks[s as usize / CHUNK][s as usize % CHUNK].key == m.key
        });
        let Some(slot) = found else {
            self.create(m);
            return;
        };
        // Most packets only add to their flow: no timer has passed, no
        // record ends, no early report starts. Those touch the flow once.
        let t = &self.timeouts;
        let f = &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK];
        let plain = !t.one_way_due(f, m.ts_ns)
            && !t.idle_past(f, m.ts_ns)
            && !reopens(f, m)
            && !t.record_due(f, m.ts_ns)
            && (t.report == 0 || f.pkts[0] + f.pkts[1] != 0);
        if plain {
            if apply(f, m) {
                self.interim(slot);
            }
        } else {
            self.process_eventful(slot, m);
        }
    }

    /// [`FlowTable::process`] for a packet of an existing flow that ends
    /// its record, reopens it or starts an early report.
    #[inline(never)]
    fn process_eventful(&mut self, slot: u32, m: &PacketMeta) {
        let mut f = *self.flow(slot);
        // An early report comes first: the wheel may have made it already.
        if self.timeouts.one_way_due(&f, m.ts_ns) {
            self.interim(slot);
            f = *self.flow(slot);
        }
        let idle = self.timeouts.idle_past(&f, m.ts_ns);
        let reopened = reopens(&f, m);
        if idle || reopened {
            let reason = if f.state & CLOSED != 0 {
                closed_reason(&f)
            } else if idle {
                EndReason::Idle
            } else {
                EndReason::Reused
            };
            self.end(slot, reason);
            self.create(m);
            return;
        }
        if self.timeouts.record_due(&f, m.ts_ns) {
            self.interim(slot);
        }
        let restart = self.timeouts.report != 0 && {
            let f = self.flow(slot);
            f.pkts[0] + f.pkts[1] == 0
        };
        self.update(slot, m);
        if restart && self.flow(slot).state & SEEN_RESP == 0 {
            // A new one-way record: its early report is due in the wheel.
            let f = self.flow_mut(slot);
            f.generation = f.generation.wrapping_add(1);
            let generation = f.generation;
            let due = self.due(self.flow(slot));
            self.schedule(slot, generation, due);
        }
    }

    fn create(&mut self, m: &PacketMeta) {
        if self.len >= self.max_flows {
            self.evict_one();
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.high_water;
                if s as usize / CHUNK == self.chunks.len() {
                    // A fixed-size chunk: indexing it by `slot % CHUNK` needs no bounds check.
                    let Ok(chunk) = vec![Flow::default(); CHUNK].into_boxed_slice().try_into()
                    else {
                        unreachable!("the vector holds CHUNK flows")
                    };
                    self.chunks.push(chunk);
                }
                self.high_water += 1;
                s
            }
        };
        let synack = m.key.proto == 6 && m.tcp_flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK);
        let lo_is_orig = if synack { !m.src_is_lo } else { m.src_is_lo };
        let flow_id = {
            let x = m.hash ^ m.ts_ns.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
            let r = u128::from(x) * 0xff51_afd7_ed55_8ccd_u128;
            ((r as u64) ^ ((r >> 64) as u64)) & FLOW_ID_MASK
        };
        let generation = self.flow(slot).generation.wrapping_add(1);
        let mut f = Flow {
            key: m.key,
            flow_id,
            first_ns: m.ts_ns,
            last_ns: m.ts_ns,
            generation,
            state: if lo_is_orig {
                IN_USE | LO_IS_ORIG
            } else {
                IN_USE
            },
            ..Flow::default()
        };
        if synack {
            f.seen |= H_FLIP;
            f.history.push(b'^');
        }
        if m.tunnel.kind.is_some() {
            f.state |= TUNNELED;
            self.tunnels.insert(slot, m.tunnel);
        }
        *self.flow_mut(slot) = f;
        self.index.insert(m.hash, slot);
        self.len += 1;
        self.stats.flows += 1;
        self.update(slot, m);
        let due = self.due(self.flow(slot));
        self.schedule(slot, generation, due);
    }

    #[inline]
    fn update(&mut self, slot: u32, m: &PacketMeta) {
        if apply(self.flow_mut(slot), m) {
            self.interim(slot);
        }
    }

    fn record(&self, slot: u32, reason: EndReason) -> FlowRecord {
        let f = self.flow(slot);
        let k = &f.key;
        let (s_addr, s_port, d_addr, d_port) = if f.lo_is_orig() {
            (&k.addr_lo, k.port_lo, &k.addr_hi, k.port_hi)
        } else {
            (&k.addr_hi, k.port_hi, &k.addr_lo, k.port_lo)
        };
        let alen = if k.v6 { 16 } else { 4 };
        let ports = proto_has_ports(k.proto);
        let tunnel = if f.state & TUNNELED != 0 {
            self.tunnels.get(&slot).and_then(|t| {
                t.kind.map(|kind| TunnelInfo {
                    kind,
                    outer_src: addr_from(&t.outer_src, t.outer_v6),
                    outer_dst: addr_from(&t.outer_dst, t.outer_v6),
                })
            })
        } else {
            None
        };
        FlowRecord {
            flow_id: f.flow_id,
            first_seen_ns: f.first_ns,
            last_seen_ns: f.last_ns,
            proto: k.proto,
            src_ip: addr_from(s_addr, k.v6),
            src_port: ports.then_some(s_port),
            dst_ip: addr_from(d_addr, k.v6),
            dst_port: ports.then_some(d_port),
            vlan: Vlans::new(k.vlan[0], k.vlan[1]),
            fwd_packets: u64::from(f.pkts[0]),
            fwd_bytes: f.bytes[0],
            rev_packets: u64::from(f.pkts[1]),
            rev_bytes: f.bytes[1],
            fwd_tcp_flags: f.flags[0],
            rev_tcp_flags: f.flags[1],
            fwd_initial_tcp_flags: f.init_flags[0],
            rev_initial_tcp_flags: f.init_flags[1],
            conn_state: conn_state(k.proto, f),
            history: f.history,
            end_reason: reason,
            community_id: community_id(
                self.seed,
                k.proto,
                &s_addr[..alen],
                &d_addr[..alen],
                s_port,
                d_port,
                f.icmp,
            ),
            tunnel,
        }
    }

    fn emit(&mut self, slot: u32, reason: EndReason) {
        let f = self.flow(slot);
        if f.pkts[0] + f.pkts[1] == 0 {
            return;
        }
        let rec = self.record(slot, reason);
        self.out.push(rec);
        self.stats.records[reason_index(reason)] += 1;
    }

    fn interim(&mut self, slot: u32) {
        self.emit(slot, EndReason::Active);
        let f = self.flow_mut(slot);
        f.pkts = [0; 2];
        f.bytes = [0; 2];
    }

    /// Emits the flow's record and frees its slot.
    fn end(&mut self, slot: u32, reason: EndReason) {
        self.emit(slot, reason);
        let f = *self.flow(slot);
        self.index.remove(f.key.hash64(), slot);
        if f.state & TUNNELED != 0 {
            self.tunnels.remove(&slot);
        }
        let fm = self.flow_mut(slot);
        fm.state = 0;
        self.free.push(slot);
        self.len -= 1;
    }

    fn evict_one(&mut self) {
        for i in 0..WHEEL_TICKS {
            let t = (self.tick as usize + 1 + i) % WHEEL_TICKS;
            // Stale entries met on the way are dropped.
            while let Some(&(slot, generation)) = self.wheel[t].last() {
                self.wheel[t].pop();
                let f = self.flow(slot);
                if f.generation == generation && f.state & IN_USE != 0 {
                    self.stats.evicted += 1;
                    self.end(slot, EndReason::Evicted);
                    return;
                }
            }
        }
    }

    /// Advances packet time to `now_ns`, expiring due flows.
    pub fn advance(&mut self, now_ns: u64) {
        if !self.wheel_started {
            return;
        }
        self.now_ns = self.now_ns.max(now_ns);
        let target = now_ns / TICK_NS;
        if target <= self.tick {
            return;
        }
        let steps = (target - self.tick).min(WHEEL_TICKS as u64);
        let first = if target - self.tick > WHEEL_TICKS as u64 {
            target - WHEEL_TICKS as u64 + 1
        } else {
            self.tick + 1
        };
        self.tick = target;
        for i in 0..steps {
            let t = ((first + i) as usize) % WHEEL_TICKS;
            std::mem::swap(&mut self.spare, &mut self.wheel[t]);
            let mut entries = std::mem::take(&mut self.spare);
            for &(slot, generation) in &entries {
                let f = self.flow(slot);
                if f.generation != generation || f.state & IN_USE == 0 {
                    continue;
                }
                let f = *f;
                // An early report of a one-way flow falls due without a
                // packet (an unanswered SYN gets none): cut the record here,
                // before anything else ends it, as its next packet would.
                // One-way records are re-armed in the wheel whenever they
                // start (see `process`), so every shard cuts them at the same
                // packet time whatever else it sees. Heavy two-way records
                // are cut by packets only.
                if self.timeouts.one_way_due(&f, now_ns) {
                    self.interim(slot);
                }
                if self.timeouts.idle_past(&f, now_ns) {
                    let reason = if f.state & CLOSED != 0 {
                        closed_reason(&f)
                    } else {
                        EndReason::Idle
                    };
                    self.end(slot, reason);
                    continue;
                }
                let due = self.due(self.flow(slot));
                self.schedule(slot, generation, due);
            }
            entries.clear();
            self.spare = entries;
        }
    }

    /// Ends every flow (at end of input or shutdown). Closed TCP flows keep
    /// `fin`/`rst` as their reason.
    pub fn flush(&mut self, reason: EndReason) {
        self.out.reserve(self.len);
        self.flush_batched(reason, usize::MAX, |_| {});
    }

    /// [`FlowTable::flush`], handing the records to `full` whenever `batch`
    /// of them are waiting; the last ones (fewer) stay for
    /// [`FlowTable::take_records`]. Batches of a bounded size reuse the
    /// allocator's warm memory, where one vector of every flow's record would
    /// be fresh pages (40 MB for 200 k flows) faulted in one by one.
    pub fn flush_batched(
        &mut self,
        reason: EndReason,
        batch: usize,
        mut full: impl FnMut(Vec<FlowRecord>),
    ) {
        for slot in 0..self.high_water {
            let f = self.flow(slot);
            if f.state & IN_USE != 0 {
                // An early report due by the clock, whether or not the wheel
                // reached its tick yet.
                if self.timeouts.one_way_due(f, self.now_ns) {
                    self.interim(slot);
                }
                let f = self.flow(slot);
                // A flow idle past its timeout by the clock ended idle,
                // whether or not the wheel saw it so: the wheel visits a
                // tick once, and a flow due late in the tick may still have
                // been running when it did (then it is due a tick later).
                let r = if f.state & CLOSED != 0 {
                    closed_reason(f)
                } else if self.timeouts.idle_past(f, self.now_ns) {
                    EndReason::Idle
                } else {
                    reason
                };
                self.emit(slot, r);
                let f = self.flow_mut(slot);
                f.state = 0;
                self.free.push(slot);
                if self.out.len() >= batch {
                    full(std::mem::replace(&mut self.out, Vec::with_capacity(batch)));
                }
            }
        }
        // Every flow is gone: drop the index and side tables at once rather
        // than entry by entry.
        self.index.clear();
        self.tunnels.clear();
        self.len = 0;
        for w in &mut self.wheel {
            w.clear();
        }
    }
}

fn closed_reason(f: &Flow) -> EndReason {
    if f.seen & (H_RST | (H_RST << 8)) != 0 {
        EndReason::Rst
    } else {
        EndReason::Fin
    }
}

/// Zeek's `conn_state` (its `Conn::conn_state`): for TCP from both sides'
/// endpoint states, for UDP from which sides have sent.
fn conn_state(proto: u8, f: &Flow) -> ConnState {
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
fn syn_then_rst(h: &[u8]) -> bool {
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

/// Bytes of one flow slot, for memory estimates.
pub const FLOW_SLOT_BYTES: usize = size_of::<Flow>();

// The per-flow memory budget (160 bytes with index and wheel) depends on it.
const _: () = assert!(FLOW_SLOT_BYTES <= 128);

#[cfg(test)]
mod tests {
    use super::*;

    /// The flow of a packet sequence on one connection: one token a packet,
    /// upper case from the originator, lower case from the responder;
    /// `S` SYN, `H` SYN-ACK, `A` bare ACK, `D` data, `F` FIN-ACK, `R` RST,
    /// `X` FIN-RST.
    fn flow_of(proto: u8, packets: &str) -> Flow {
        let mut f = Flow {
            state: IN_USE | LO_IS_ORIG,
            ..Flow::default()
        };
        for c in packets.bytes() {
            let (flags, payload) = match c.to_ascii_uppercase() {
                b'S' => (TCP_SYN, 0),
                b'H' => (TCP_SYN | TCP_ACK, 0),
                b'A' => (TCP_ACK, 0),
                b'D' => (TCP_ACK | 0x08, 100),
                b'F' => (TCP_FIN | TCP_ACK, 0),
                b'R' => (TCP_RST, 0),
                b'X' => (TCP_FIN | TCP_RST, 0),
                _ => panic!("token {c}"),
            };
            let mut m = PacketMeta {
                src_is_lo: c.is_ascii_uppercase(),
                tcp_flags: if proto == 6 { flags } else { 0 },
                payload_len: payload,
                ip_bytes: 40 + payload,
                ..PacketMeta::default()
            };
            m.key.proto = proto;
            apply(&mut f, &m);
        }
        f
    }

    /// Zeek's conn_state for each packet sequence, as its TCP endpoint
    /// state machine and `Conn::conn_state` give it (worked by hand from
    /// Zeek's TCPSessionAdapter.cc and base/protocols/conn/main.zeek).
    #[test]
    fn zeek_connection_states() {
        use ConnState::*;
        for (packets, want) in [
            ("S", S0),
            ("SS", S0),
            ("Sr", REJ),
            ("SDr", REJ),
            ("SRr", REJ),
            ("SR", RSTOS0),
            ("SaR", RSTOS0),
            ("SAR", OTH),
            ("SF", SH),
            ("Sa", S0),
            ("Sd", OTH),
            ("Sh", S1),
            ("ShA", S1),
            ("ShADdFf", SF),
            ("ShADdFfR", SF),
            ("ShADdFRf", SF),
            ("ShADdfF", SF),
            ("ShADF", S2),
            ("ShADf", S3),
            ("ShADR", RSTO),
            ("ShADr", RSTR),
            ("ShADRr", RSTR),
            ("ShADX", RSTO),
            ("ShADFr", RSTR),
            ("h", OTH),
            ("hA", S1),
            ("hr", RSTRH),
            ("hf", SHR),
            ("Dd", OTH),
            ("DdFf", SF),
            ("DdF", SH),
            ("Ddf", SHR),
            ("DdR", OTH),
            ("Ddr", RSTRH),
            ("DdRf", RSTO),
        ] {
            assert_eq!(conn_state(6, &flow_of(6, packets)), want, "{packets}");
        }
        assert_eq!(conn_state(17, &flow_of(17, "D")), S0);
        assert_eq!(conn_state(17, &flow_of(17, "Dd")), SF);
        assert_eq!(conn_state(1, &flow_of(1, "Dd")), OTH);
    }

    #[test]
    fn zeek_rstos0_history_pattern() {
        for (h, want) in [
            ("SR", true),
            ("^SR", true),
            ("SaR", true),
            ("SdDR", true),
            ("SAR", false),
            ("SHR", false),
            ("SFR", false),
            ("S", false),
            ("R", false),
            ("^hR", false),
            ("", false),
        ] {
            assert_eq!(syn_then_rst(h.as_bytes()), want, "{h}");
        }
    }

    /// A flow due late in a tick, still running when the wheel reached the
    /// tick and idle by the time the input ended within that tick, ended
    /// idle: the same record whether the clock got there in one step or two
    /// (it used to say `end_of_input` after two steps, `idle` after one).
    #[test]
    fn a_flow_idle_by_the_final_clock_ends_idle_however_the_clock_got_there() {
        use crate::flow::Timeouts;
        use crate::synth::{L4, PacketSpec, Scenario};
        let t0 = 1_700_000_000_000_000_000u64 + 100_000_000;
        let mut sc = Scenario::new();
        let (a, b) = (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        );
        let spec = PacketSpec::new(
            a,
            b,
            L4::Udp {
                sport: 5000,
                dport: 53,
            },
            10,
        );
        sc.packet(t0, &spec);
        let file = sc.to_pcap_bytes();
        let mut reader = crate::capture::CaptureReader::new(&file[..], "one").unwrap();
        let mut metas = Vec::new();
        let mut decoder = crate::decode::Decoder::new();
        while let Some(p) = reader.next_packet().unwrap() {
            decoder.decode(&p, &mut |m: &PacketMeta| metas.push(*m));
        }
        let idle = 30_000_000_000u64;
        let cfg = FlowConfig {
            timeouts: Timeouts::uniform(std::time::Duration::from_nanos(idle)),
            ..FlowConfig::default()
        };
        let deadline = t0 + idle;
        let run = |steps: &[u64]| {
            let mut t = FlowTable::new(&cfg, 16);
            t.process_batch(&metas);
            for &now in steps {
                t.advance(now);
            }
            t.flush(EndReason::EndOfInput);
            t.take_records()
        };
        let one = run(&[deadline + 10_000_000]);
        let two = run(&[deadline - 10_000_000, deadline + 10_000_000]);
        assert_eq!(
            deadline / TICK_NS,
            (deadline + 10_000_000) / TICK_NS,
            "one tick"
        );
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].end_reason, EndReason::Idle);
        assert_eq!(two.len(), 1);
        assert_eq!(two[0].end_reason, EndReason::Idle);
        // Not yet idle at the end: the input ended it.
        let running = run(&[deadline - 10_000_000]);
        assert_eq!(running[0].end_reason, EndReason::EndOfInput);
    }

    /// The decoded packets of a synthesized capture of `packets` over `flows`.
    fn bulk_metas(packets: u64, flows: u64) -> Vec<PacketMeta> {
        use crate::capture::CaptureReader;
        use crate::decode::Decoder;
        use crate::synth::BulkConfig;
        let file = BulkConfig {
            packets,
            flows,
            ..BulkConfig::default()
        }
        .to_pcap_bytes();
        let mut metas = Vec::new();
        let mut reader = CaptureReader::new(&file[..], "bulk").unwrap();
        let mut decoder = Decoder::new();
        while let Some(p) = reader.next_packet().unwrap() {
            decoder.decode(&p, &mut |m: &PacketMeta| metas.push(*m));
        }
        metas
    }

    /// Batches that prefetch (a table past `PREFETCH_MIN_FLOWS`) give the
    /// records that packet-by-packet application gives.
    #[test]
    fn batches_give_the_records_of_single_packets() {
        let metas = bulk_metas(200_000, 3 * PREFETCH_MIN_FLOWS as u64);
        let run = |batch: usize| {
            let mut t = FlowTable::new(&FlowConfig::default(), 1_000_000);
            let mut recs = Vec::new();
            for b in metas.chunks(batch) {
                if batch == 1 {
                    t.process(&b[0]);
                } else {
                    t.process_batch(b);
                }
                t.advance(b[b.len() - 1].ts_ns);
                recs.extend(t.take_records());
            }
            t.flush(EndReason::EndOfInput);
            recs.extend(t.take_records());
            (recs, t.stats.clone())
        };
        let (one, one_stats) = run(1);
        let (many, many_stats) = run(256);
        assert!(one_stats.flows > 2 * PREFETCH_MIN_FLOWS as u64);
        assert_eq!(one_stats, many_stats);
        assert_eq!(one.len(), many.len());
        assert!(one == many, "records differ");
    }

    /// A flush in batches hands over full batches in slot order and leaves
    /// the rest: together, the records a flush in one piece gives, and the
    /// table is empty and reusable afterwards.
    #[test]
    fn a_batched_flush_gives_the_records_of_a_whole_one() {
        let metas = bulk_metas(20_000, 2_500);
        let filled = || {
            let mut t = FlowTable::new(&FlowConfig::default(), 100_000);
            t.process_batch(&metas);
            assert!(t.take_records().is_empty());
            t
        };
        let mut whole = filled();
        whole.flush(EndReason::EndOfInput);
        let expected = whole.take_records();
        assert_eq!(expected.len(), 2_500);

        let mut t = filled();
        let mut batches = Vec::new();
        t.flush_batched(EndReason::EndOfInput, 1000, |b| batches.push(b));
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000]
        );
        assert_eq!(t.records().len(), 500);
        let mut got: Vec<FlowRecord> = batches.concat();
        got.extend(t.take_records());
        assert!(got == expected, "records differ");
        assert_eq!((t.len(), t.stats.record_total()), (0, 2_500));
        t.process_batch(&metas);
        assert_eq!(t.len(), 2_500);
    }
}
