//! The ClickHouse engine's own pieces, without a server: conditions as
//! literals, the `Native` block, parallel insert ranges, names, and the
//! fencing error in both servers' words. (With a server: the integration
//! tests in `tests/integration/clickhouse.rs`.)

use vigil_proto::{ConnState, FlowRecord};

use super::http::HttpError;
use super::ingest::split_rows;
use super::read::Sql;
use super::wire::FlowBlock;
use super::{is_fenced, lit, valid_name, writer_name};
use crate::model::query::{Dir, Filter, IpRange};
use crate::store::plan::{self, Cond};

#[test]
fn filters_compile_to_literals_only() {
    // src net 10.0.0.0/8 and not dst port 22 or proto udp
    let f = Filter::Or(vec![
        Filter::And(vec![
            Filter::Ip(Dir::Src, IpRange::cidr("10.0.0.0".parse().unwrap(), 8)),
            Filter::Not(Box::new(Filter::Port(Dir::Dst, 22, 22))),
        ]),
        Filter::Proto(17),
    ]);
    let mut s = Sql::new("db");
    plan::write_cond(&mut s, &Cond::of_flows(&f));
    assert_eq!(
        s.text,
        "(((length(src_ip) = 4 AND src_ip >= unhex('0A000000') AND src_ip <= unhex('0AFFFFFF')) \
         AND (NOT (has_ports = 1 AND dst_port >= 22 AND dst_port <= 22))) OR proto = 17)"
    );
}

#[test]
fn a_native_block_is_counts_then_each_column_named_typed_and_filled() {
    use vigil_proto::{CommunityId, EndReason, History, Vlans};
    let r = FlowRecord {
        app: None,
        flow_id: 9,
        first_seen_ns: 86_400_000_000_000 * 3 + 5,
        last_seen_ns: 86_400_000_000_000 * 3 + 6,
        proto: 17,
        src_ip: "10.0.0.1".parse().unwrap(),
        src_port: Some(53),
        dst_ip: "2001:db8::1".parse().unwrap(),
        dst_port: Some(5353),
        vlan: Vlans::new(7, 0),
        fwd_packets: 1,
        fwd_bytes: 60,
        rev_packets: 1,
        rev_bytes: 90,
        fwd_tcp_flags: 0,
        rev_tcp_flags: 0,
        fwd_initial_tcp_flags: 0,
        rev_initial_tcp_flags: 0,
        conn_state: ConnState::SF,
        history: History::default(),
        end_reason: EndReason::Idle,
        community_id: CommunityId([1; 20]),
        tunnel: None,
    };
    let mut block = FlowBlock::with_rows(2);
    let mut scratch = Vec::new();
    block.push("s1", 4, 0, &r, &mut scratch);
    // The second with DNS metadata: its protocol and name have columns.
    let mut with_app = r.clone();
    let mut app = vigil_proto::App::of(vigil_proto::AppProto::Dns);
    app.dns.as_mut().unwrap().qname = "WWW.Example.org".into();
    with_app.app = Some(Box::new(app));
    block.push("s1", 4, 1, &with_app, &mut scratch);
    let bytes: Vec<u8> = block.parts().concat();
    // Columns, rows, then the first column: name, type, two values.
    assert_eq!(&bytes[..2], &[26, 2]);
    let proto = b"\x09app_proto\x05UInt8\x00\x01";
    assert!(bytes.windows(proto.len()).any(|w| w == proto));
    let name = b"\x08app_name\x06String\x00\x0fwww.example.org";
    assert!(bytes.windows(name.len()).any(|w| w == name));
    assert_eq!(&bytes[2..25], b"\x09sensor_id\x06String\x02s1\x02s1");
    // The day of `first_seen`, as the Date column holds it.
    let day = b"\x03day\x04Date";
    let at = bytes.windows(day.len()).position(|w| w == day).unwrap() + day.len();
    assert_eq!(&bytes[at..at + 4], &[3, 0, 3, 0]);
    // Addresses as 4- and 16-byte strings; VLANs and ports as numbers.
    let src = b"\x06src_ip\x06String\x04\x0a\x00\x00\x01\x04\x0a\x00\x00\x01";
    assert!(bytes.windows(src.len()).any(|w| w == src));
    let dst = b"\x06dst_ip\x06String\x10";
    let at = bytes.windows(dst.len()).position(|w| w == dst).unwrap() + dst.len();
    assert_eq!(&bytes[at..at + 2], &[0x20, 0x01]);
    let vlan0 = b"\x05vlan0\x06UInt16\x07\x00\x07\x00";
    assert!(bytes.windows(vlan0.len()).any(|w| w == vlan0));
    // A block used again starts empty.
    block.clear();
    block.push("s2", 5, 0, &r, &mut scratch);
    assert_eq!(&block.parts().concat()[..2], &[26, 1]);
}

#[test]
fn rows_are_split_into_parallel_inserts_of_at_least_the_minimum() {
    assert_eq!(split_rows(40_000, 2), vec![0..20_000, 20_000..40_000]);
    // Too few rows for a part each: one insert.
    assert_eq!(split_rows(100, 2), vec![0..100]);
    assert_eq!(split_rows(40_000, 8).len(), 2);
    assert_eq!(
        split_rows(50_000, 3),
        vec![0..16_666, 16_666..33_333, 33_333..50_000]
    );
    assert!(split_rows(0, 2).is_empty());
}

#[test]
fn names_with_sql_in_them_are_refused() {
    for bad in ["", "a;drop", "a b", "1db", "x.y"] {
        assert!(!valid_name(bad), "{bad}");
    }
    assert!(valid_name("vigil_2"));
    assert_eq!(lit(b"a'"), "unhex('6127')");
}

#[test]
fn a_dropped_ingest_table_is_recognized_in_both_servers_words() {
    let server = |message: &str| HttpError::Server {
        addr: "127.0.0.1:8123".into(),
        status: 404,
        message: message.into(),
    };
    let t = "ingest_00112233aabbccdd_1";
    for m in [
        // 18.16
        "Code: 60, e.displayText() = DB::Exception: Table v.ingest_00112233aabbccdd_1 doesn't exist., e.what() = DB::Exception",
        // current releases
        "Code: 60. DB::Exception: Table v.ingest_00112233aabbccdd_1 does not exist. (UNKNOWN_TABLE)",
    ] {
        assert!(is_fenced(&server(m), t), "{m}");
    }
    // Another table missing, another error, another ingest table.
    for m in [
        "Code: 60. DB::Exception: Table v.flows does not exist. (UNKNOWN_TABLE)",
        "Code: 241. DB::Exception: Memory limit exceeded while inserting into v.ingest_00112233aabbccdd_1",
        "Code: 60. DB::Exception: Table v.ingest_00112233aabbccdd_2 does not exist. (UNKNOWN_TABLE)",
    ] {
        assert!(!is_fenced(&server(m), t), "{m}");
    }
    let io = HttpError::Io {
        addr: "127.0.0.1:8123".into(),
        source: std::io::Error::other(t),
    };
    assert!(!is_fenced(&io, t));
    // Each store names itself apart.
    assert_ne!(writer_name(), writer_name());
    assert!(writer_name().bytes().all(|b| b.is_ascii_hexdigit()));
}
