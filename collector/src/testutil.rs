//! Helpers for the crate's unit tests: a deterministic generator of flow
//! records, and an embedded store filled with them.

use std::net::IpAddr;

use vigil_proto::{
    CommunityId, ConnState, EndReason, FlowRecord, History, TunnelInfo, TunnelType, Vlans, pb,
};

use crate::model::ingest::{CommitOutcome, IngestBatch};
use crate::store::IngestStore;
use crate::store::plan::NS_PER_MIN;
use crate::store::sqlite::{SqliteConfig, SqliteStore};

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub const T0: u64 = 1_700_000_000_000_000_000;

pub fn record(rng: &mut Rng, i: u64) -> FlowRecord {
    let proto = [6u8, 17, 1, 58, 47][rng.below(5) as usize];
    let v6 = proto == 58 || rng.below(8) == 0;
    let ip = |rng: &mut Rng| -> IpAddr {
        if v6 {
            IpAddr::from([
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                rng.below(4) as u16,
                rng.below(8) as u16,
            ])
        } else {
            IpAddr::from([10, rng.below(3) as u8, 0, rng.below(10) as u8])
        }
    };
    let ports = vigil_proto::flow::proto_has_ports(proto);
    let mut history = History::default();
    history.push(b'S');
    let first = T0 + rng.below(3 * NS_PER_MIN) + i;
    FlowRecord {
        app: None,
        flow_id: i,
        first_seen_ns: first,
        last_seen_ns: first + rng.below(1_000_000_000),
        proto,
        src_ip: ip(rng),
        src_port: ports.then(|| 1024 + rng.below(4) as u16),
        dst_ip: ip(rng),
        dst_port: ports.then(|| [53u16, 80, 443, 502][rng.below(4) as usize]),
        vlan: Vlans::new(rng.below(3) as u16 * 100, 0),
        fwd_packets: 1 + rng.below(10),
        fwd_bytes: 40 + rng.below(10_000),
        rev_packets: rng.below(10),
        rev_bytes: rng.below(10_000),
        fwd_tcp_flags: rng.below(256) as u8,
        rev_tcp_flags: rng.below(256) as u8,
        fwd_initial_tcp_flags: 2,
        rev_initial_tcp_flags: 0x12,
        conn_state: ConnState::ALL[rng.below(13) as usize],
        history,
        end_reason: EndReason::ALL[rng.below(8) as usize],
        community_id: CommunityId([rng.below(4) as u8; 20]),
        tunnel: (rng.below(10) == 0).then(|| TunnelInfo {
            kind: TunnelType::Vxlan,
            outer_src: "192.0.2.1".parse().unwrap(),
            outer_dst: "2001:db8::9".parse().unwrap(),
        }),
    }
}

pub fn batch(sensor: &str, seq: u64, flows: Vec<FlowRecord>) -> IngestBatch {
    IngestBatch {
        attestation: None,
        certificate: None,
        sensor_id: sensor.into(),
        seq,
        incarnation: 1,
        flows,
        stats: Some(pb::SensorStats {
            run_id: 7,
            packets: seq * 10,
            ..Default::default()
        }),
        received_ns: T0 + seq,
    }
}

pub fn filled() -> (tempfile::TempDir, SqliteStore, Vec<(String, FlowRecord)>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all = Vec::new();
    for seq in 1..=20u64 {
        let sensor = if seq % 2 == 0 { "alpha" } else { "beta" };
        let flows: Vec<_> = (0..50).map(|i| record(&mut rng, seq * 100 + i)).collect();
        all.extend(flows.iter().map(|f| (sensor.to_string(), f.clone())));
        assert!(matches!(
            store.commit(&batch(sensor, seq, flows)).unwrap(),
            CommitOutcome::Stored { .. }
        ));
    }
    all.sort_by_key(|(_, f)| f.first_seen_ns);
    (dir, store, all)
}

/// `b` signed by `key` as a sensor would sign it (its key not pinned).
pub fn signed(b: IngestBatch, key: &ed25519_dalek::SigningKey) -> IngestBatch {
    let mut b = b.signed_by(key);
    if let Some(a) = b.attestation.as_mut() {
        a.pin = false;
    }
    b
}
