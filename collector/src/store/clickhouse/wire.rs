//! ClickHouse's binary formats: flow rows as a `Native` block (columns one
//! after another) for inserts, and `RowBinary` for other inserts and for
//! results.

use prost::Message as _;
use vigil_proto::FlowRecord;
use vigil_proto::wire::{IpBytes, flow_without_identity};

use crate::model::query::{IcsCounter, app_name_fp, ics_count};
use crate::store::plan::app_code;

use super::{FLOW_COLUMNS, NS_PER_DAY};
use crate::store::StoreError;
use crate::store::plan::state_index;

/// Flow rows as one block of ClickHouse's `Native` format: each column's
/// values one after another, which the server takes in column by column
/// instead of parsing row by row (with `RowBinary` the same inserts ran
/// about a fifth slower: BENCHMARKS.md).
#[derive(Debug)]
pub(super) struct FlowBlock {
    rows: u64,
    /// The block's and the columns' headers, made by [`Self::parts`].
    head: Vec<u8>,
    /// One buffer per column of [`FLOW_COLUMNS`], in its order.
    cols: [Vec<u8>; FLOW_COLUMNS.len()],
}

impl FlowBlock {
    pub(super) fn with_rows(rows: usize) -> FlowBlock {
        FlowBlock {
            rows: 0,
            head: Vec::new(),
            cols: std::array::from_fn(|i| {
                let width = match FLOW_COLUMNS[i].1 {
                    "UInt64" => 8,
                    "UInt32" => 4,
                    "UInt16" | "Date" => 2,
                    "UInt8" => 1,
                    _ => 16,
                };
                Vec::with_capacity(rows * width)
            }),
        }
    }

    /// Appends one flow row.
    pub(super) fn push(
        &mut self,
        sensor: &str,
        seq: u64,
        idx: u32,
        r: &FlowRecord,
        scratch: &mut Vec<u8>,
    ) {
        let [
            sensor_id,
            seq_c,
            idx_c,
            day,
            first_ns,
            last_ns,
            flow_id,
            proto,
            src_ip,
            src_port,
            dst_ip,
            dst_port,
            has_ports,
            vlan0,
            vlan1,
            packets,
            bytes,
            conn_state,
            community_id,
            record,
            app_proto,
            app_name,
            app_fp,
            ics_reads,
            ics_writes,
            ics_control,
        ] = &mut self.cols;
        self.rows += 1;
        put_str(sensor_id, sensor.as_bytes());
        seq_c.extend_from_slice(&seq.to_le_bytes());
        idx_c.extend_from_slice(&idx.to_le_bytes());
        let d = (r.first_seen_ns / NS_PER_DAY).min(u64::from(u16::MAX)) as u16;
        day.extend_from_slice(&d.to_le_bytes());
        first_ns.extend_from_slice(&r.first_seen_ns.to_le_bytes());
        last_ns.extend_from_slice(&r.last_seen_ns.to_le_bytes());
        flow_id.extend_from_slice(&r.flow_id.to_le_bytes());
        proto.push(r.proto);
        put_str(src_ip, IpBytes::from(r.src_ip).as_slice());
        src_port.extend_from_slice(&r.src_port.unwrap_or(0).to_le_bytes());
        put_str(dst_ip, IpBytes::from(r.dst_ip).as_slice());
        dst_port.extend_from_slice(&r.dst_port.unwrap_or(0).to_le_bytes());
        has_ports.push(u8::from(r.src_port.is_some()));
        let v = r.vlan.as_slice();
        vlan0.extend_from_slice(&v.first().copied().unwrap_or(0).to_le_bytes());
        vlan1.extend_from_slice(&v.get(1).copied().unwrap_or(0).to_le_bytes());
        packets.extend_from_slice(&r.packets().to_le_bytes());
        bytes.extend_from_slice(&r.bytes().to_le_bytes());
        conn_state.push(state_index(r.conn_state) as u8);
        put_str(community_id, &r.community_id.0);
        // The rest of the record (read back with the columns above by
        // `read_flows`).
        scratch.clear();
        flow_without_identity(r).encode(scratch).unwrap_or_default();
        put_str(record, scratch);
        let app = r.app.as_deref();
        app_proto.push(app_code(app.and_then(|a| a.proto)) as u8);
        let (name, fp) = app.map(app_name_fp).unwrap_or_default();
        put_str(app_name, name.as_bytes());
        put_str(app_fp, fp.as_bytes());
        for (col, c) in [
            (ics_reads, IcsCounter::Reads),
            (ics_writes, IcsCounter::Writes),
            (ics_control, IcsCounter::Control),
        ] {
            col.extend_from_slice(&ics_count(app, c).to_le_bytes());
        }
    }

    /// Empties the block, keeping its buffers for the next.
    pub(super) fn clear(&mut self) {
        self.rows = 0;
        self.cols.iter_mut().for_each(Vec::clear);
        self.head.clear();
    }

    /// The block in `Native` format, as parts to send one after another:
    /// column and row counts, then each column's name, type and values.
    pub(super) fn parts(&mut self) -> Vec<&[u8]> {
        let head = &mut self.head;
        head.clear();
        put_varint(head, FLOW_COLUMNS.len() as u64);
        put_varint(head, self.rows);
        let mut ends = Vec::with_capacity(FLOW_COLUMNS.len());
        for (name, ty) in FLOW_COLUMNS {
            put_str(head, name.as_bytes());
            put_str(head, ty.as_bytes());
            ends.push(head.len());
        }
        let mut parts = Vec::with_capacity(2 * FLOW_COLUMNS.len());
        let mut start = 0;
        for (end, data) in ends.into_iter().zip(&self.cols) {
            parts.push(&self.head[start..end]);
            parts.push(data.as_slice());
            start = end;
        }
        parts
    }
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Reads RowBinary results.
pub(super) struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }

    pub(super) fn done(&self) -> bool {
        self.b.is_empty()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.b.len() < n {
            return Err(bad("RowBinary result ends early"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    }

    pub(super) fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let mut len = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(bad("RowBinary length"));
            }
        }
        self.take(usize::try_from(len).map_err(|_| bad("RowBinary length"))?)
    }

    pub(super) fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| bad("string not UTF-8"))
    }
}

/// A result that is not the `RowBinary` asked for.
fn bad(what: &str) -> StoreError {
    StoreError::Corrupt {
        store: "clickhouse".into(),
        what: format!("result: {what}"),
    }
}
