//! A flow record as a row of `flows`: bound into the insert, read back
//! from a query, and the packed columns in between.

use std::net::IpAddr;

use prost::Message as _;
use rusqlite::Row;
use vigil_proto::pb;
use vigil_proto::wire::{IpBytes, ip_from_bytes, ip_to_bytes};
use vigil_proto::{
    App, CommunityId, ConnState, EndReason, FlowRecord, History, TunnelInfo, TunnelType, Vlans,
};

use super::SqliteStore;
use crate::model::query::{IcsCounter, app_name_fp, ics_count};
use crate::store::plan::app_code;
use crate::store::{StoreError, i64_of};

/// How many columns [`FLOW_COLUMNS`] names: a query's further columns
/// come at this index and after.
pub(super) const FLOW_COLUMN_COUNT: usize = 22;

/// The columns a record is read back from, in the order of
/// [`SqliteStore::decode_row`]; `f` is `flows`, `s` is `sensors`.
pub(super) const FLOW_COLUMNS: &str = "f.rowid, s.name, f.flow_id, f.first_ns, f.last_ns, f.proto, f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.vlan, f.fwd_packets, f.fwd_bytes, f.rev_packets, f.rev_bytes, f.tcp_flags, f.conn_state, f.history, f.end_reason, f.community_id, f.tunnel, f.app";

impl SqliteStore {
    /// A record from a row of [`FLOW_COLUMNS`], with its sensor's id.
    pub(super) fn decode_row(&self, row: &Row<'_>) -> Result<(String, FlowRecord), StoreError> {
        let sql = |e| self.err("reading a flow row", e);
        let corrupt = |what: String| self.corrupt(what);
        let rowid: i64 = row.get(0).map_err(sql)?;
        let sensor: String = row.get(1).map_err(sql)?;
        let u = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row.get(i).map_err(sql)?;
            u64::try_from(v).map_err(|_| corrupt(format!("flow {rowid}: negative column {i}")))
        };
        let ip = |i: usize, what: &'static str| -> Result<IpAddr, StoreError> {
            let b: Vec<u8> = row.get(i).map_err(sql)?;
            ip_from_bytes(what, &b).map_err(|e| corrupt(format!("flow {rowid}: {e}")))
        };
        let port = |i: usize| -> Result<Option<u16>, StoreError> {
            let v: Option<i64> = row.get(i).map_err(sql)?;
            v.map(|p| u16::try_from(p).map_err(|_| corrupt(format!("flow {rowid}: port {p}"))))
                .transpose()
        };
        let flags = u(15)?;
        let vlan = u(10)?;
        let state = u(16)? as usize;
        let reason = u(18)? as usize;
        let history: String = row.get(17).map_err(sql)?;
        let cid: Vec<u8> = row.get(19).map_err(sql)?;
        let tunnel: Option<Vec<u8>> = row.get(20).map_err(sql)?;
        let app: Option<Vec<u8>> = row.get(21).map_err(sql)?;
        let proto = u8::try_from(u(5)?).map_err(|_| corrupt(format!("flow {rowid}: proto")))?;
        let rec = FlowRecord {
            app: match app {
                None => None,
                Some(b) => Some(Box::new(
                    decode_app(&b).map_err(|e| corrupt(format!("flow {rowid}: app: {e}")))?,
                )),
            },
            flow_id: u(2)?,
            first_seen_ns: u(3)?,
            last_seen_ns: u(4)?,
            proto,
            src_ip: ip(6, "src_ip")?,
            src_port: port(7)?,
            dst_ip: ip(8, "dst_ip")?,
            dst_port: port(9)?,
            vlan: Vlans::new((vlan & 0xfff) as u16, ((vlan >> 12) & 0xfff) as u16),
            fwd_packets: u(11)?,
            fwd_bytes: u(12)?,
            rev_packets: u(13)?,
            rev_bytes: u(14)?,
            fwd_tcp_flags: flags as u8,
            rev_tcp_flags: (flags >> 8) as u8,
            fwd_initial_tcp_flags: (flags >> 16) as u8,
            rev_initial_tcp_flags: (flags >> 24) as u8,
            conn_state: *ConnState::ALL
                .get(state)
                .ok_or_else(|| corrupt(format!("flow {rowid}: conn_state {state}")))?,
            history: History::parse(&history)
                .ok_or_else(|| corrupt(format!("flow {rowid}: history {history:?}")))?,
            end_reason: *EndReason::ALL
                .get(reason)
                .ok_or_else(|| corrupt(format!("flow {rowid}: end_reason {reason}")))?,
            community_id: CommunityId(
                <[u8; 20]>::try_from(cid.as_slice())
                    .map_err(|_| corrupt(format!("flow {rowid}: community_id")))?,
            ),
            tunnel: match tunnel {
                None => None,
                Some(b) => Some(
                    decode_tunnel(&b).ok_or_else(|| corrupt(format!("flow {rowid}: tunnel")))?,
                ),
            },
        };
        Ok((sensor, rec))
    }

    /// A failed bind as a store error.
    pub(super) fn bind_err(&self, e: BindError) -> StoreError {
        match e {
            BindError::Sql(source) => self.err("binding a flow", source),
            BindError::Range(e) => e,
        }
    }
}

/// Tunnel types by their stored number: append only, never reorder.
const TUNNEL_TYPES: [TunnelType; 11] = [
    TunnelType::Gre,
    TunnelType::Erspan,
    TunnelType::Vxlan,
    TunnelType::Geneve,
    TunnelType::IpInIp,
    TunnelType::GtpU,
    TunnelType::Teredo,
    TunnelType::Ayiya,
    TunnelType::GreUdp,
    TunnelType::L2tp,
    TunnelType::MplsUdp,
];

fn encode_tunnel(t: &TunnelInfo) -> Vec<u8> {
    let src = ip_to_bytes(t.outer_src);
    let dst = ip_to_bytes(t.outer_dst);
    let kind = TUNNEL_TYPES.iter().position(|k| *k == t.kind).unwrap_or(0) as u8;
    let mut b = Vec::with_capacity(2 + src.len() + dst.len());
    b.push(kind);
    b.push(src.len() as u8);
    b.extend_from_slice(&src);
    b.extend_from_slice(&dst);
    b
}

fn decode_tunnel(b: &[u8]) -> Option<TunnelInfo> {
    let (&kind, rest) = b.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let n = usize::from(n);
    if rest.len() < n {
        return None;
    }
    let (src, dst) = rest.split_at(n);
    Some(TunnelInfo {
        kind: *TUNNEL_TYPES.get(usize::from(kind))?,
        outer_src: ip_from_bytes("tunnel", src).ok()?,
        outer_dst: ip_from_bytes("tunnel", dst).ok()?,
    })
}

/// Application metadata as its `App` message.
fn encode_app(a: &App) -> Vec<u8> {
    pb::App::from(a).encode_to_vec()
}

fn decode_app(b: &[u8]) -> Result<App, String> {
    let m = pb::App::decode(b).map_err(|e| e.to_string())?;
    App::try_from(&m).map_err(|e| e.to_string())
}

/// Rows per multi-row INSERT.
pub(super) const ROWS_PER_INSERT: usize = 32;
/// Bound values per flow row.
pub(super) const FLOW_PARAMS: usize = 29;

pub(super) fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO flows (sensor, flow_id, first_ns, last_ns, proto, src_ip, src_port, dst_ip, dst_port, vlan, fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags, conn_state, history, end_reason, community_id, tunnel, batch, idx, app, app_proto, app_name, app_fp, ics_reads, ics_writes, ics_control) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for j in 0..FLOW_PARAMS {
            if j > 0 {
                sql.push(',');
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql
}

/// Why binding a flow failed.
pub(super) enum BindError {
    Sql(rusqlite::Error),
    Range(StoreError),
}

impl From<rusqlite::Error> for BindError {
    fn from(e: rusqlite::Error) -> Self {
        BindError::Sql(e)
    }
}

impl From<StoreError> for BindError {
    fn from(e: StoreError) -> Self {
        BindError::Range(e)
    }
}

/// Binds one flow's values at parameters `base + 1 ..= base + FLOW_PARAMS`:
/// its sensor, batch (row of `batches`) and index in the batch.
pub(super) fn bind_flow(
    st: &mut rusqlite::CachedStatement<'_>,
    base: usize,
    (sensor, batch, idx): (i64, i64, usize),
    r: &FlowRecord,
) -> Result<(), BindError> {
    let v = r.vlan.as_slice();
    let vlan = i64::from(v.first().copied().unwrap_or(0))
        | (i64::from(v.get(1).copied().unwrap_or(0)) << 12);
    let flags = i64::from(r.fwd_tcp_flags)
        | (i64::from(r.rev_tcp_flags) << 8)
        | (i64::from(r.fwd_initial_tcp_flags) << 16)
        | (i64::from(r.rev_initial_tcp_flags) << 24);
    let state = ConnState::ALL
        .iter()
        .position(|s| *s == r.conn_state)
        .unwrap_or(0) as i64;
    let reason = EndReason::ALL
        .iter()
        .position(|s| *s == r.end_reason)
        .unwrap_or(0) as i64;
    let ip = IpBytes::from;
    let p = |i: usize| base + i;
    st.raw_bind_parameter(p(1), sensor)?;
    st.raw_bind_parameter(p(2), i64_of("flow_id", r.flow_id)?)?;
    st.raw_bind_parameter(p(3), i64_of("first_seen_ns", r.first_seen_ns)?)?;
    st.raw_bind_parameter(p(4), i64_of("last_seen_ns", r.last_seen_ns)?)?;
    st.raw_bind_parameter(p(5), r.proto)?;
    st.raw_bind_parameter(p(6), ip(r.src_ip).as_slice())?;
    st.raw_bind_parameter(p(7), r.src_port)?;
    st.raw_bind_parameter(p(8), ip(r.dst_ip).as_slice())?;
    st.raw_bind_parameter(p(9), r.dst_port)?;
    st.raw_bind_parameter(p(10), vlan)?;
    st.raw_bind_parameter(p(11), i64_of("fwd_packets", r.fwd_packets)?)?;
    st.raw_bind_parameter(p(12), i64_of("fwd_bytes", r.fwd_bytes)?)?;
    st.raw_bind_parameter(p(13), i64_of("rev_packets", r.rev_packets)?)?;
    st.raw_bind_parameter(p(14), i64_of("rev_bytes", r.rev_bytes)?)?;
    st.raw_bind_parameter(p(15), flags)?;
    st.raw_bind_parameter(p(16), state)?;
    st.raw_bind_parameter(p(17), r.history.as_str())?;
    st.raw_bind_parameter(p(18), reason)?;
    st.raw_bind_parameter(p(19), &r.community_id.0[..])?;
    st.raw_bind_parameter(p(20), r.tunnel.as_ref().map(encode_tunnel))?;
    st.raw_bind_parameter(p(21), batch)?;
    st.raw_bind_parameter(p(22), idx as i64)?;
    st.raw_bind_parameter(p(23), r.app.as_deref().map(encode_app))?;
    let app = r.app.as_deref();
    let (name, fp) = app.map(app_name_fp).unwrap_or_default();
    st.raw_bind_parameter(p(24), app_code(app.and_then(|a| a.proto)) as i64)?;
    st.raw_bind_parameter(p(25), name)?;
    st.raw_bind_parameter(p(26), fp)?;
    for (i, c) in [IcsCounter::Reads, IcsCounter::Writes, IcsCounter::Control]
        .into_iter()
        .enumerate()
    {
        st.raw_bind_parameter(p(27 + i), i64_of("ics count", ics_count(app, c))?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_count_is_that_of_the_column_list() {
        assert_eq!(FLOW_COLUMNS.split(", ").count(), FLOW_COLUMN_COUNT);
        assert_eq!(insert_sql(1).matches('?').count(), FLOW_PARAMS);
    }
}
