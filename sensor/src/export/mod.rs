//! Flow record output for offline analysis: JSON lines, CSV, an aligned
//! table for people, or nothing (for measuring).
//!
//! JSON lines follow the contract of [`vigil_proto::FlowRecord`]'s
//! serialization. CSV has the same fields in the same order, with `vlan`
//! joined by `;` and the tunnel split into three columns.

pub mod grpc;
pub mod spool;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;
use std::str::FromStr;

use vigil_proto::FlowRecord;
use vigil_proto::flow::tcp_flags_letters;
use vigil_proto::time::Rfc3339Nanos;

/// Output formats of `vigil flows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
    /// Aligned columns for reading.
    Table,
    /// Discard records (benchmarks).
    Null,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" | "json" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "table" => Ok(Format::Table),
            "null" | "none" => Ok(Format::Null),
            other => Err(format!(
                "unknown format {other:?}: expected jsonl, csv, table or null"
            )),
        }
    }
}

/// 64 random bits: from the kernel's generator, or (should
/// `/dev/urandom` be unreadable) a randomly keyed hash of the clock and
/// the process id.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read as _;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(vigil_proto::time::now_ns());
    h.write_u32(std::process::id());
    h.finish()
}

/// CSV header, in the JSON field order.
pub const CSV_HEADER: &str = "flow_id,first_seen,last_seen,proto,src_ip,src_port,dst_ip,dst_port,vlan,\
fwd_packets,fwd_bytes,rev_packets,rev_bytes,fwd_tcp_flags,rev_tcp_flags,fwd_initial_tcp_flags,\
rev_initial_tcp_flags,conn_state,history,end_reason,community_id,tunnel_type,tunnel_outer_src,tunnel_outer_dst";

/// Writes records in one format.
#[derive(Debug)]
pub struct RecordWriter<W: Write> {
    out: W,
    format: Format,
    started: bool,
    line: String,
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

impl<W: Write> RecordWriter<W> {
    /// A writer of `format` into `out`.
    pub fn new(out: W, format: Format) -> Self {
        RecordWriter {
            out,
            format,
            started: false,
            line: String::with_capacity(512),
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        match self.format {
            Format::Csv => writeln!(self.out, "{CSV_HEADER}"),
            Format::Table => writeln!(
                self.out,
                "{:<30} {:<7} {:<46} {:<46} {:>8} {:>10} {:>8} {:>10} {:<7} {:<12} {:<12} {:<8} tunnel",
                "first_seen",
                "proto",
                "src",
                "dst",
                "fwd_pkts",
                "fwd_bytes",
                "rev_pkts",
                "rev_bytes",
                "state",
                "history",
                "end",
                "flags"
            ),
            _ => Ok(()),
        }
    }

    /// Writes a batch of records.
    pub fn write(&mut self, recs: &[FlowRecord]) -> io::Result<()> {
        if self.format == Format::Null {
            return Ok(());
        }
        self.header()?;
        for r in recs {
            self.line.clear();
            match self.format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut self.out, r)?;
                    self.out.write_all(b"\n")?;
                    continue;
                }
                Format::Csv => {
                    let vlan: Vec<String> =
                        r.vlan.as_slice().iter().map(|v| v.to_string()).collect();
                    let _ = writeln!(
                        self.line,
                        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                        r.flow_id,
                        Rfc3339Nanos(r.first_seen_ns),
                        Rfc3339Nanos(r.last_seen_ns),
                        r.proto_name(),
                        r.src_ip,
                        opt(r.src_port),
                        r.dst_ip,
                        opt(r.dst_port),
                        vlan.join(";"),
                        r.fwd_packets,
                        r.fwd_bytes,
                        r.rev_packets,
                        r.rev_bytes,
                        r.fwd_tcp_flags,
                        r.rev_tcp_flags,
                        r.fwd_initial_tcp_flags,
                        r.rev_initial_tcp_flags,
                        r.conn_state,
                        r.history,
                        r.end_reason,
                        r.community_id,
                        opt(r.tunnel.map(|t| t.kind.as_str())),
                        opt(r.tunnel.map(|t| t.outer_src)),
                        opt(r.tunnel.map(|t| t.outer_dst)),
                    );
                }
                Format::Table => {
                    let flags = if r.proto == 6 {
                        let f = tcp_flags_letters(r.fwd_tcp_flags | r.rev_tcp_flags);
                        String::from_utf8_lossy(&f).into_owned()
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        self.line,
                        "{:<30} {:<7} {:<46} {:<46} {:>8} {:>10} {:>8} {:>10} {:<7} {:<12} {:<12} {:<8} {}",
                        Rfc3339Nanos(r.first_seen_ns).to_string(),
                        r.proto_name().to_string(),
                        endpoint(r.src_ip, r.src_port),
                        endpoint(r.dst_ip, r.dst_port),
                        r.fwd_packets,
                        r.fwd_bytes,
                        r.rev_packets,
                        r.rev_bytes,
                        r.conn_state.as_str(),
                        r.history.as_str(),
                        r.end_reason.as_str(),
                        flags,
                        r.tunnel
                            .map(|t| format!(
                                "{} {} > {}",
                                t.kind.as_str(),
                                t.outer_src,
                                t.outer_dst
                            ))
                            .unwrap_or_default(),
                    );
                }
                Format::Null => {}
            }
            self.out.write_all(self.line.as_bytes())?;
        }
        Ok(())
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }
}
