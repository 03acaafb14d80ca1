//! Criterion benchmarks of the hot path, each beside a naive peer in the
//! same run: decoding (Vigil's decoder against etherparse's full
//! `SlicedPacket`) and flow update (Vigil's table against a std `HashMap`
//! keyed by the 5-tuple with the default SipHash), and the collector's
//! check of a batch (validation, with the sensor's attestation against
//! without).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use vigil_sensor::capture::{CaptureReader, LinkType, RawPacket};
use vigil_sensor::decode::{Decoder, PacketMeta};
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::flow::table::FlowTable;
use vigil_sensor::synth::{BulkConfig, FrameSize};

const PACKETS: u64 = 200_000;
const FLOWS: u64 = 20_000;

fn frames(frame: FrameSize) -> Vec<(u64, Vec<u8>)> {
    frames_of(frame, PACKETS, FLOWS)
}

fn frames_of(frame: FrameSize, packets: u64, flows: u64) -> Vec<(u64, Vec<u8>)> {
    let cfg = BulkConfig {
        packets,
        flows,
        frame,
        ..BulkConfig::default()
    };
    let file = cfg.to_pcap_bytes();
    let mut r = CaptureReader::new(&file[..], "bench").expect("read");
    let mut v = Vec::new();
    while let Some(p) = r.next_packet().expect("packet") {
        v.push((p.ts_ns, p.data.to_vec()));
    }
    v
}

fn metas(frames: &[(u64, Vec<u8>)]) -> Vec<PacketMeta> {
    let mut d = Decoder::new();
    let mut v = Vec::with_capacity(frames.len());
    for (ts, f) in frames {
        let p = RawPacket {
            ts_ns: *ts,
            link: LinkType::Ethernet,
            orig_len: f.len() as u32,
            data: f,
        };
        d.decode(&p, &mut |m: &PacketMeta, _: &[u8]| v.push(*m));
    }
    v
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, size) in [("64B", FrameSize::Fixed(64)), ("imix", FrameSize::Imix)] {
        let fr = frames(size);
        g.throughput(Throughput::Elements(fr.len() as u64));
        g.bench_function(format!("vigil/{name}"), |b| {
            let mut d = Decoder::new();
            b.iter(|| {
                let mut sum = 0u64;
                for (ts, f) in &fr {
                    let p = RawPacket {
                        ts_ns: *ts,
                        link: LinkType::Ethernet,
                        orig_len: f.len() as u32,
                        data: f,
                    };
                    d.decode(&p, &mut |m: &PacketMeta, _: &[u8]| {
                        sum = sum.wrapping_add(m.hash)
                    });
                }
                black_box(sum)
            })
        });
        g.bench_function(format!("etherparse-sliced-packet/{name}"), |b| {
            b.iter(|| {
                let mut n = 0u64;
                for (_, f) in &fr {
                    if let Ok(p) = etherparse::SlicedPacket::from_ethernet(f) {
                        n += u64::from(p.transport.is_some());
                    }
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

type NaiveKey = (IpAddr, u16, IpAddr, u16, u8);

/// Vigil's table fed `ms` packet by packet (`batch` 1, `process`) or in
/// batches (`process_batch`), a fresh table per iteration.
fn bench_table(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, ms: &[PacketMeta], batch: usize) {
    g.bench_function(name, |b| {
        b.iter_batched(
            || FlowTable::new(&FlowConfig::default(), 1_000_000),
            |mut t| {
                if batch == 1 {
                    for m in ms {
                        t.process(m);
                    }
                } else {
                    for c in ms.chunks(batch) {
                        t.process_batch(c, &[]);
                    }
                }
                black_box(t.len())
            },
            BatchSize::LargeInput,
        )
    });
}

fn flow_update(c: &mut Criterion) {
    let fr = frames(FrameSize::Fixed(64));
    let ms = metas(&fr);
    let mut g = c.benchmark_group("flow_update");
    g.throughput(Throughput::Elements(ms.len() as u64));
    bench_table(&mut g, "vigil-table", &ms, 1);
    bench_table(&mut g, "vigil-table-batched", &ms, 256);
    g.bench_function("std-hashmap-siphash", |b| {
        b.iter_batched(
            HashMap::<NaiveKey, [u64; 4]>::new,
            |mut t| {
                for m in &ms {
                    let k = m.key;
                    let key = (k.lo_addr(), k.port_lo, k.hi_addr(), k.port_hi, k.proto);
                    let e = t.entry(key).or_insert([0; 4]);
                    let d = usize::from(!m.src_is_lo);
                    e[d] += 1;
                    e[2 + d] += u64::from(m.ip_bytes);
                }
                black_box(t.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A table larger than the caches (200 k flows, 2 M packets), where each
/// packet's lookup misses: packet by packet against `process_batch`, which
/// prefetches ahead of itself.
fn flow_update_large(c: &mut Criterion) {
    let fr = frames_of(FrameSize::Fixed(64), 2_000_000, 200_000);
    let ms = metas(&fr);
    drop(fr);
    let mut g = c.benchmark_group("flow_update_200k_flows");
    g.throughput(Throughput::Elements(ms.len() as u64));
    g.sample_size(10);
    bench_table(&mut g, "process", &ms, 1);
    bench_table(&mut g, "process_batch", &ms, 256);
    g.finish();
}

/// The collector's work on one batch of 2048 records before the commit:
/// validation, and with attestation the root over the records and the
/// signature check.
fn ingest_check(c: &mut Criterion) {
    use ed25519_dalek::Signer as _;
    use vigil_collector::evidence::SensorKeys;
    use vigil_collector::ingest::{Limits, StreamState, validate};
    use vigil_proto::{attest, merkle, pb};

    let bytes = BulkConfig {
        packets: 20_000,
        flows: 2048,
        ..BulkConfig::default()
    }
    .to_pcap_bytes();
    let mut recs = Vec::new();
    let mut sink = |r: &[vigil_proto::FlowRecord]| {
        recs.extend_from_slice(r);
        Ok(())
    };
    let inputs = [vigil_sensor::run::Input::Memory {
        name: "bench".into(),
        bytes: &bytes,
    }];
    vigil_sensor::run::run(
        &inputs,
        &vigil_sensor::run::RunConfig::default(),
        &mut sink,
        None,
    )
    .expect("records");
    recs.truncate(2048);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut buf = Vec::new();
    let leaves: Vec<_> = recs
        .iter()
        .map(|r| attest::record_leaf(r, &mut buf))
        .collect();
    let st = attest::Statement {
        sensor_id: "s1".into(),
        incarnation: 1,
        seq: 1,
        size: recs.len() as u64,
        root: attest::records_root(&recs),
    };
    let plain = pb::FlowBatch {
        sensor_id: "s1".into(),
        seq: 1,
        flows: recs.iter().map(pb::Flow::from).collect(),
        incarnation: 1,
        ..Default::default()
    };
    let signed = pb::FlowBatch {
        signature: key.sign(&st.to_bytes()).to_bytes().to_vec(),
        public_key: key.verifying_key().to_bytes().to_vec(),
        ..plain.clone()
    };
    let now = recs.iter().map(|r| r.last_seen_ns).max().unwrap_or(0);
    let mut g = c.benchmark_group("ingest_check");
    g.throughput(Throughput::Elements(recs.len() as u64));
    for (name, batch) in [("unattested", &plain), ("attested", &signed)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || batch.clone(),
                |m| {
                    let mut b = validate(
                        m,
                        &mut StreamState::default(),
                        None,
                        &Limits::default(),
                        now,
                    )
                    .expect("valid");
                    let keys = SensorKeys::default();
                    black_box(keys.check(&mut b).expect("accepted"));
                    b
                },
                BatchSize::LargeInput,
            )
        });
    }
    // Where the attested check's time goes: the records' encodings and
    // their leaves, and the tree over the leaves.
    g.bench_function("leaves", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(256);
            let l: Vec<_> = recs
                .iter()
                .map(|r| attest::record_leaf(r, &mut buf))
                .collect();
            black_box(l)
        })
    });
    g.bench_function("root", |b| b.iter(|| black_box(merkle::root(&leaves))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = decode, flow_update, flow_update_large, ingest_check
}
criterion_main!(benches);
