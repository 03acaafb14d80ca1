//! The table against Zeek's connection states, the final clock, and
//! batches against single packets.

use super::*;
use vigil_proto::ConnState;

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
        decoder.decode(&p, &mut |m: &PacketMeta, _: &[u8]| metas.push(*m));
    }
    let idle = 30_000_000_000u64;
    let cfg = FlowConfig {
        timeouts: Timeouts::uniform(std::time::Duration::from_nanos(idle)),
        ..FlowConfig::default()
    };
    let deadline = t0 + idle;
    let run = |steps: &[u64]| {
        let mut t = FlowTable::new(&cfg, 16);
        t.process_batch(&metas, &[]);
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
        decoder.decode(&p, &mut |m: &PacketMeta, _: &[u8]| metas.push(*m));
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
                t.process_batch(b, &[]);
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
        t.process_batch(&metas, &[]);
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
    t.process_batch(&metas, &[]);
    assert_eq!(t.len(), 2_500);
}
