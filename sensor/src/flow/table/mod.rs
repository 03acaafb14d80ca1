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
use vigil_proto::{EndReason, FlowRecord, TunnelInfo, Vlans};

use super::FlowConfig;
use super::community_id::community_id;
use super::index::FlowIndex;
use crate::app::{AppStats, FlowApp, Payload, Sniffer};
use crate::cpu::prefetch;
use crate::decode::key::addr_from;
use crate::decode::{PacketMeta, TunnelMeta};
use state::*;

mod state;
#[cfg(test)]
mod tests;

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
/// Application states allocated at once.
const APP_CHUNK: usize = 1024;
/// Bytes of one flow's application state, without its buffers.
pub const APP_STATE_BYTES: usize = size_of::<FlowApp>();

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
    /// The application layer's counters.
    pub app: AppStats,
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
        self.app.merge(&o.app);
    }

    /// Total records emitted.
    pub fn record_total(&self) -> u64 {
        self.records.iter().sum()
    }
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
    /// Application state of the flows whose protocol was recognized
    /// (flagged `HAS_APP`), by slot: an index into `app_slab`, [`NO_APP`]
    /// for none. Beside the slots rather than in them (the slot is full),
    /// read only for packets that carry a payload to parse.
    app_of: Vec<u32>,
    /// The application states, by the index `app_of` gives: a slab, so that
    /// a flow's state is neither allocated nor freed, and keeps the
    /// buffers of the flows before it.
    app_slab: Vec<Box<[FlowApp]>>,
    /// Free entries of `app_slab`.
    app_free: Vec<u32>,
    app_metadata: bool,
    wheel: Vec<Vec<(u32, u32)>>,
    /// A bit per wheel slot, set when the slot may hold entries (clear:
    /// the slot is empty), so that a walk over many ticks visits only the
    /// slots in use.
    occupied: [u64; WHEEL_TICKS / 64],
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
            app_of: Vec::new(),
            app_slab: Vec::new(),
            app_free: Vec::new(),
            app_metadata: cfg.app_metadata,
            wheel: (0..WHEEL_TICKS).map(|_| Vec::new()).collect(),
            occupied: [0; WHEEL_TICKS / 64],
            spare: Vec::new(),
            tick: 0,
            now_ns: 0,
            wheel_started: false,
            out: Vec::new(),
            stats: TableStats::default(),
        }
    }

    /// A sniffer for the packets of this table, on or off as its
    /// configuration says ([`FlowConfig::app_metadata`]).
    pub fn sniffer(&self) -> Sniffer {
        Sniffer::new(self.app_metadata)
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
            + self.app_of.capacity() * size_of::<u32>()
            + self.app_slab.len() * APP_CHUNK * APP_STATE_BYTES
            + self.app_free.capacity() * size_of::<u32>()
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
        let t = ((due / TICK_NS).max(self.tick + 1) as usize) % WHEEL_TICKS;
        self.wheel[t].push((slot, generation));
        self.occupied[t / 64] |= 1 << (t % 64);
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
    ///
    /// `payloads` holds the application layer's copies of payloads that
    /// the packets' `app_at` and `app_len` point into (see
    /// [`crate::app::Sniffer::keep`]); empty when none was kept.
    pub fn process_batch(&mut self, metas: &[PacketMeta], payloads: &[u8]) {
        if self.len < PREFETCH_MIN_FLOWS {
            for m in metas {
                if m.app_len != 0 {
                    self.split_dns_exchange(m, payloads);
                }
                if m.app_len != 0 {
                    self.split_dns_exchange(m, payloads);
                }
                let slot = self.process(m);
                if m.app_len != 0 {
                    self.app_packet(slot, m, payloads);
                }
            }
        } else {
            for m in metas.iter().take(2 * PREFETCH_AHEAD) {
                self.index.prefetch(m.hash);
            }
            for m in metas.iter().take(PREFETCH_AHEAD) {
                self.prefetch_flow(m);
            }
            for (i, m) in metas.iter().enumerate() {
                if let Some(far) = metas.get(i + 2 * PREFETCH_AHEAD) {
                    self.index.prefetch(far.hash);
                }
                if let Some(near) = metas.get(i + PREFETCH_AHEAD) {
                    self.prefetch_flow(near);
                }
                if m.app_len != 0 {
                    self.split_dns_exchange(m, payloads);
                }
                let slot = self.process(m);
                if m.app_len != 0 {
                    self.app_packet(slot, m, payloads);
                }
            }
        }
        debug_assert_eq!(self.index.len(), self.len, "index and table disagree");
    }

    /// Ends the record of a DNS flow whose exchange is complete when this
    /// packet, not applied yet, asks its next question (see
    /// [`FlowApp::new_dns_exchange`]): the record closed holds that
    /// exchange and its packets, the next one starts with this query.
    #[inline(never)]
    fn split_dns_exchange(&mut self, m: &PacketMeta, payloads: &[u8]) {
        let at = m.app_at as usize;
        let Some(data) = payloads.get(at..at + m.app_len as usize) else {
            return;
        };
        // A query's header (QR clear), the first packet of most DNS flows:
        // those find no flow.
        let head = if m.key.proto == 6 { 4 } else { 2 };
        if data.get(head).is_none_or(|b| b & 0x80 != 0) {
            return;
        }
        let Some(slot) = self.find(m) else {
            return;
        };
        if self.flow(slot).state & HAS_APP == 0 {
            return;
        }
        let i = self.app_of[slot as usize];
        if i == NO_APP {
            return;
        }
        let app = &self.app_slab[i as usize / APP_CHUNK][i as usize % APP_CHUNK];
        if !app.new_dns_exchange(m.key.proto, data) {
            return;
        }
        self.interim(slot);
        self.app_slab[i as usize / APP_CHUNK][i as usize % APP_CHUNK].next_dns_exchange();
    }

    /// Hands a packet's kept payload to its flow's application state: the
    /// flow in `slot`, the one the packet was just applied to.
    #[inline(never)]
    fn app_packet(&mut self, slot: u32, m: &PacketMeta, payloads: &[u8]) {
        let at = m.app_at as usize;
        let Some(data) = payloads.get(at..at + m.app_len as usize) else {
            return;
        };
        let f = self.flow_mut(slot);
        debug_assert!(f.key == m.key, "the packet's flow is in its slot");
        f.state |= HAS_APP;
        let dir = usize::from(m.src_is_lo != f.lo_is_orig());
        let k = &m.key;
        let ports = if m.src_is_lo {
            (k.port_lo, k.port_hi)
        } else {
            (k.port_hi, k.port_lo)
        };
        let mut i = self.app_of[slot as usize];
        if i == NO_APP {
            if self.app_free.is_empty() {
                // A chunk more: growing never moves the states there are.
                let base = (self.app_slab.len() * APP_CHUNK) as u32;
                self.app_slab
                    .push((0..APP_CHUNK).map(|_| FlowApp::default()).collect());
                self.app_free
                    .extend((0..APP_CHUNK as u32).rev().map(|j| base + j));
            }
            i = self.app_free.pop().unwrap_or_default();
            self.app_of[slot as usize] = i;
        }
        let slab = &mut self.app_slab;
        slab[i as usize / APP_CHUNK][i as usize % APP_CHUNK].packet(
            &Payload {
                dir,
                proto: k.proto,
                ports,
                seq: m.tcp_seq,
                data,
            },
            &mut self.stats.app,
        );
    }

    /// Gives a flow's application state back to the slab.
    fn drop_app(&mut self, slot: u32) {
        let i = std::mem::replace(&mut self.app_of[slot as usize], NO_APP);
        if i != NO_APP {
            self.app_slab[i as usize / APP_CHUNK][i as usize % APP_CHUNK].reset();
            self.app_free.push(i);
        }
    }

    /// Requests the flow slot that `hash`'s first matching index entry names.
    #[inline]
    fn prefetch_flow(&self, m: &PacketMeta) {
        if let Some(slot) = self.index.find(m.hash, |_| true) {
            let f: *const Flow = self.flow(slot);
            prefetch(f.cast());
            prefetch(f.cast::<u8>().wrapping_add(64));
            if m.app_len != 0 {
                self.prefetch_app(self.app_of.get(slot as usize).copied().unwrap_or(NO_APP));
            }
        }
    }

    /// Requests the application state `i` (a new flow's: the one it will
    /// be given): its first touch was the largest cost of reading metadata.
    #[inline]
    fn prefetch_app(&self, i: u32) {
        let i = if i == NO_APP {
            match self.app_free.last() {
                Some(&i) => i,
                None => return,
            }
        } else {
            i
        };
        if let Some(a) = self
            .app_slab
            .get(i as usize / APP_CHUNK)
            .and_then(|c| c.get(i as usize % APP_CHUNK))
        {
            let a: *const FlowApp = a;
            prefetch(a.cast());
            prefetch(a.cast::<u8>().wrapping_add(64));
        }
    }

    /// The slot of the packet's flow, if the table holds it.
    #[inline(always)]
    fn find(&self, m: &PacketMeta) -> Option<u32> {
        let chunks = &self.chunks;
        self.index.find(m.hash, |s| {
            chunks[s as usize / CHUNK][s as usize % CHUNK].key == m.key
        })
    }

    /// Applies one packet.
    #[inline]
    pub fn process(&mut self, m: &PacketMeta) -> u32 {
        self.stats.packets += 1;
        if !self.wheel_started {
            self.tick = m.ts_ns / TICK_NS;
            self.wheel_started = true;
        }
        let Some(slot) = self.find(m) else {
            return self.create(m);
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
            slot
        } else {
            self.process_eventful(slot, m)
        }
    }

    /// [`FlowTable::process`] for a packet of an existing flow that ends
    /// its record, reopens it or starts an early report; the slot of the
    /// flow the packet went to.
    #[inline(never)]
    fn process_eventful(&mut self, slot: u32, m: &PacketMeta) -> u32 {
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
            return self.create(m);
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
        slot
    }

    /// Makes the flow of a packet no flow has; its slot.
    fn create(&mut self, m: &PacketMeta) -> u32 {
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
                    self.app_of.resize(self.chunks.len() * CHUNK, NO_APP);
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
        slot
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
            app: None,
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
        let mut rec = self.record(slot, reason);
        if f.state & HAS_APP != 0
            && let Some(&i) = self.app_of.get(slot as usize).filter(|i| **i != NO_APP)
        {
            rec.app =
                self.app_slab[i as usize / APP_CHUNK][i as usize % APP_CHUNK].take_for_record();
        }
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
        if f.state & HAS_APP != 0 {
            self.drop_app(slot);
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
        // No flow, nothing due: whatever the wheel still holds belongs to
        // flows already gone, and is skipped wherever it is met.
        if self.len == 0 {
            self.tick = target;
            return;
        }
        let steps = (target - self.tick).min(WHEEL_TICKS as u64);
        let first = if target - self.tick > WHEEL_TICKS as u64 {
            target - WHEEL_TICKS as u64 + 1
        } else {
            self.tick + 1
        };
        self.tick = target;
        let start = (first % WHEEL_TICKS as u64) as usize;
        let steps = steps as usize;
        let mut i = 0;
        while i < steps {
            let t = (start + i) % WHEEL_TICKS;
            // Skip the slots not in use, a word of them at a time.
            let word = self.occupied[t / 64] >> (t % 64);
            if word == 0 {
                i += 64 - t % 64;
                continue;
            }
            let skip = word.trailing_zeros() as usize;
            if skip > 0 {
                i += skip;
                continue;
            }
            i += 1;
            self.occupied[t / 64] &= !(1 << (t % 64));
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
                if self.flow(slot).state & HAS_APP != 0 {
                    self.drop_app(slot);
                }
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
        for (n, word) in self.occupied.iter_mut().enumerate() {
            while *word != 0 {
                let t = n * 64 + word.trailing_zeros() as usize;
                *word &= *word - 1;
                self.wheel[t].clear();
            }
        }
    }
}

/// Bytes of one flow slot, for memory estimates.
pub const FLOW_SLOT_BYTES: usize = size_of::<Flow>();

/// `app_of`'s value for a flow without application state.
const NO_APP: u32 = u32::MAX;

// The per-flow memory budget (160 bytes with index and wheel) depends on it.
const _: () = assert!(FLOW_SLOT_BYTES <= 128);
