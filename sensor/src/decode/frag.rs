//! IP fragment reassembly, bounded in datagrams, bytes and time: a
//! fragmented datagram counts as one packet of its flow, in the frame that
//! completes it, and is then decoded like any packet (tunnels included).

use std::collections::VecDeque;

use hashbrown::HashMap;

use super::{DecodeStats, FRAGMENT_TIMEOUT_NS, MAX_FRAGMENTED_DATAGRAMS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FragKey {
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) id: u32,
    pub(super) proto: u8,
    pub(super) v6: bool,
    pub(super) vlan: [u16; 2],
}

#[derive(Debug, Default)]
pub(super) struct FragEntry {
    pub(super) first_ts: u64,
    /// IP header bytes of the first fragment (for the datagram's size).
    pub(super) header_len: u32,
    pub(super) have_first: bool,
    /// Payload bytes received, duplicates excluded.
    pub(super) received: u32,
    /// Payload length of the whole datagram, once the last fragment arrived.
    pub(super) total: Option<u32>,
    /// Offsets already received, to ignore duplicates.
    pub(super) offsets: Vec<u32>,
    /// The payload, placed at its offsets.
    pub(super) data: Vec<u8>,
}

/// Reassembles fragmented datagrams, bounded in count and bytes.
///
/// The payload is kept so that the completed datagram is decoded like any
/// other packet: its transport header and, for tunnels, the inner packets.
#[derive(Debug)]
pub struct FragTracker {
    map: HashMap<FragKey, FragEntry>,
    /// Datagrams in the order they started, with their start time: the
    /// oldest is found in O(1). Entries whose datagram completed (or was
    /// restarted) no longer match the map and are skipped.
    order: VecDeque<(FragKey, u64)>,
    /// Buffers of completed datagrams, reused.
    pool: Vec<FragEntry>,
    bytes_held: usize,
}

/// Most payload bytes held for incomplete datagrams.
pub const MAX_FRAGMENT_BYTES: usize = 64 << 20;

// Empty until the first fragment: a decoder that never sees one (most
// links, every fuzz input but a few) holds and clears no table. The first
// fragment reserves the whole bound at once, so none after it allocates.
impl Default for FragTracker {
    fn default() -> Self {
        FragTracker {
            map: HashMap::new(),
            order: VecDeque::new(),
            pool: Vec::new(),
            bytes_held: 0,
        }
    }
}

impl FragTracker {
    /// Datagrams still incomplete.
    pub fn pending(&self) -> usize {
        self.map.len()
    }

    pub(super) fn recycle(&mut self, mut e: FragEntry) {
        self.bytes_held = self.bytes_held.saturating_sub(e.data.capacity());
        if self.pool.len() < 64 {
            e.offsets.clear();
            e.data.clear();
            self.pool.push(e);
        }
    }

    /// Abandons datagrams older than the timeout, then the oldest ones while
    /// the tracker is over its bounds. Constant time per datagram, so a flood
    /// of fragments that never complete cannot slow the decoder down.
    fn make_room(&mut self, now: u64, stats: &mut DecodeStats) {
        while let Some(&(key, started)) = self.order.front() {
            let live = self.map.get(&key).is_some_and(|e| e.first_ts == started);
            let expired = now.saturating_sub(started) > FRAGMENT_TIMEOUT_NS;
            let full =
                self.map.len() >= MAX_FRAGMENTED_DATAGRAMS || self.bytes_held >= MAX_FRAGMENT_BYTES;
            if live && !expired && !full {
                break;
            }
            self.order.pop_front();
            if live && let Some(e) = self.map.remove(&key) {
                if expired {
                    stats.fragments_timed_out += 1;
                } else {
                    stats.fragments_evicted += 1;
                }
                self.recycle(e);
            }
        }
    }

    /// Notes when a datagram started; drops the entries of completed
    /// datagrams once they outnumber the live ones, so the queue stays bounded.
    fn push_order(&mut self, key: FragKey, ts: u64) {
        if self.order.len() >= 4 * MAX_FRAGMENTED_DATAGRAMS {
            let map = &self.map;
            self.order
                .retain(|(k, t)| map.get(k).is_some_and(|e| e.first_ts == *t));
        }
        self.order.push_back((key, ts));
    }

    /// Records one fragment; when it completes its datagram, returns the
    /// entry holding the whole payload (give it back with `recycle`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        key: FragKey,
        ts: u64,
        offset: u32,
        len: u32,
        more: bool,
        header_len: u32,
        bytes: &[u8],
        stats: &mut DecodeStats,
    ) -> Option<FragEntry> {
        stats.fragments += 1;
        if self.map.capacity() == 0 {
            self.map.reserve(MAX_FRAGMENTED_DATAGRAMS);
            self.order.reserve(MAX_FRAGMENTED_DATAGRAMS);
        }
        self.make_room(ts, stats);
        if !self.map.contains_key(&key) {
            let mut e = self.pool.pop().unwrap_or_default();
            e.first_ts = ts;
            e.header_len = header_len;
            e.have_first = false;
            e.received = 0;
            e.total = None;
            self.map.insert(key, e);
            self.push_order(key, ts);
        }
        let e = self.map.get_mut(&key)?;
        if ts.saturating_sub(e.first_ts) > FRAGMENT_TIMEOUT_NS {
            stats.fragments_timed_out += 1;
            e.first_ts = ts;
            self.order.push_back((key, ts));
            e.have_first = false;
            e.received = 0;
            e.total = None;
            e.offsets.clear();
            e.data.clear();
        }
        if e.offsets.contains(&offset) {
            return None;
        }
        e.offsets.push(offset);
        e.received = e.received.saturating_add(len);
        if !more {
            e.total = Some(offset.saturating_add(len));
        }
        if offset == 0 {
            e.have_first = true;
            e.header_len = header_len;
        }
        let start = offset as usize;
        let end = start + bytes.len().min(len as usize);
        if end > e.data.len() {
            let before = e.data.capacity();
            e.data.resize(end, 0);
            self.bytes_held += e.data.capacity() - before;
        }
        e.data[start..end].copy_from_slice(&bytes[..end - start]);
        match e.total {
            Some(total) if e.have_first && e.received >= total => {
                let mut done = self.map.remove(&key)?;
                stats.reassembled += 1;
                done.data.resize(total as usize, 0);
                Some(done)
            }
            _ => None,
        }
    }
}
