//! Zero allocations per packet in steady state: capture reading, decoding
//! and flow-table updates, counted by an allocator that counts per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use vigil_sensor::capture::CaptureReader;
use vigil_sensor::decode::{Decoder, PacketMeta};
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::flow::table::FlowTable;
use vigil_sensor::synth::{BulkConfig, FrameSize};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations on every thread.
static ALL: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        ALL.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        ALL.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// Decodes `pkt` into `metas` and applies them to `table` in batches of
/// 256, as the workers do.
fn apply(
    decoder: &mut Decoder,
    table: &mut FlowTable,
    metas: &mut Vec<PacketMeta>,
    pkt: &vigil_sensor::capture::RawPacket<'_>,
) {
    decoder.decode(pkt, &mut |m: &PacketMeta, _: &[u8]| metas.push(*m));
    if metas.len() >= 256 {
        table.process_batch(metas, &[]);
        metas.clear();
        table.advance(pkt.ts_ns);
    }
}

#[test]
fn steady_state_packet_path_allocates_nothing() {
    // 2000 TCP/UDP/ICMP flows, 25 packets each, interleaved round-robin:
    // every flow is created in the first round and torn down in the last three.
    let flows = 2_000u64;
    let cfg = BulkConfig {
        packets: flows * 25,
        flows,
        frame: FrameSize::Imix,
        ..BulkConfig::default()
    };
    let file = cfg.to_pcap_bytes();

    let mut reader = CaptureReader::new(&file[..], "bulk").unwrap();
    let mut decoder = Decoder::new();
    let mut table = FlowTable::new(&FlowConfig::default(), 1_000_000);
    // Packets are applied in batches through `process_batch`, as the
    // workers apply them.
    let mut metas: Vec<PacketMeta> = Vec::with_capacity(512);
    let mut counted = 0u64;
    let mut before = 0;
    let mut n = 0u64;
    while let Some(pkt) = reader.next_packet().unwrap() {
        n += 1;
        if n == 5 * flows {
            // Warm: every flow exists and the table has grown.
            before = allocations();
        }
        apply(&mut decoder, &mut table, &mut metas, &pkt);
        if n == 20 * flows {
            table.process_batch(&metas, &[]);
            counted = n - 5 * flows;
            break;
        }
    }
    // The counter sees this thread's allocations (the warm-up made some).
    assert!(before > 0);
    let during = allocations() - before;
    assert_eq!(counted, 30_000);
    assert_eq!(table.len() as u64, flows);
    assert_eq!(
        during, 0,
        "{during} allocations over {counted} steady-state packets"
    );
}

/// The file workers, their relay included: a run over four times the
/// packets of the same flows allocates (on every thread) about what the
/// shorter run does; nothing grows with the packets. Other tests allocate
/// on their threads meanwhile, so the count is taken in a process of its
/// own: this test runs itself again, alone.
#[test]
fn file_workers_allocate_per_run_not_per_packet() {
    const ALONE: &str = "VIGIL_ALLOC_TEST_ALONE";
    if std::env::var_os(ALONE).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "alloc::file_workers_allocate_per_run_not_per_packet",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed"),
            "the test did not run alone: {text}"
        );
        return;
    }
    use vigil_sensor::run::{FileMode, Input, RunConfig};
    let run = |packets: u64, workers: usize| {
        let bytes = BulkConfig {
            packets,
            flows: 2_000,
            ..BulkConfig::default()
        }
        .to_pcap_bytes();
        let inputs = [Input::Memory {
            name: "bulk".into(),
            bytes: &bytes,
        }];
        let cfg = RunConfig {
            workers: workers.try_into().unwrap(),
            file_mode: FileMode::Shared,
            flow: FlowConfig {
                max_flows: 10_000,
                ..FlowConfig::default()
            },
            ..RunConfig::default()
        };
        let mut records = 0;
        let mut sink = |r: &[vigil_proto::FlowRecord]| {
            records += r.len();
            Ok(())
        };
        let before = ALL.load(Ordering::Relaxed);
        let report = vigil_sensor::run::run(&inputs, &cfg, &mut sink, None).unwrap();
        let during = ALL.load(Ordering::Relaxed) - before;
        assert_eq!(report.packets, packets);
        (during, records)
    };
    for workers in [1, 2, 3] {
        let (short, short_records) = run(200_000, workers);
        let (long, long_records) = run(800_000, workers);
        assert_eq!(short_records, long_records, "the same flows");
        eprintln!("{workers} workers: {short} allocations for 200,000 packets, {long} for 800,000");
        // 600,000 more packets: not one allocation per thousand of them.
        assert!(
            long < short + 600,
            "{workers} workers: {short} allocations for 200,000 packets, {long} for 800,000"
        );
    }
}

/// Every encapsulation the decoder opens, in steady state: once their flows
/// exist, decoding their frames and applying the packets allocates nothing.
#[test]
fn every_encapsulation_decodes_without_allocating() {
    use std::net::IpAddr;
    use vigil_sensor::capture::{LinkType, RawPacket};
    use vigil_sensor::synth::{
        Encap, L4, LinkEncap, PacketSpec, UdpTunnel, Wlan, build_frame, ip_packet, wlan_frame,
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (a, b) = (ip("192.0.2.10"), ip("192.0.2.20"));
    let udp = |tunnel| Encap::Udp {
        outer_src: a,
        outer_dst: b,
        tunnel,
        reply: false,
    };
    let encaps = [
        Encap::Vxlan {
            outer_src: a,
            outer_dst: b,
        },
        Encap::Gre {
            outer_src: a,
            outer_dst: b,
        },
        udp(UdpTunnel::GtpU {
            teid: 1,
            extension: true,
        }),
        udp(UdpTunnel::Teredo {
            auth: true,
            origin: true,
        }),
        udp(UdpTunnel::Ayiya),
        udp(UdpTunnel::GreUdp),
        udp(UdpTunnel::L2tpV2),
        udp(UdpTunnel::L2tpV3 { cookie: 8 }),
        udp(UdpTunnel::MplsUdp),
        Encap::L2tpv3 {
            outer_src: a,
            outer_dst: b,
            cookie: 4,
        },
        Encap::Link(LinkEncap::Pppoe { session: 1 }),
        Encap::Link(LinkEncap::Pbb { isid: 1 }),
        Encap::Link(LinkEncap::VnTag),
        Encap::Link(LinkEncap::FabricPath),
        Encap::Link(LinkEncap::Nsh),
        Encap::Link(LinkEncap::MplsPw {
            label: 7,
            control_word: true,
        }),
    ];
    let mut frames: Vec<(LinkType, Vec<u8>)> = Vec::new();
    for (i, encap) in encaps.into_iter().enumerate() {
        // Teredo carries IPv6 only.
        let (c, s) = if matches!(
            encap,
            Encap::Udp {
                tunnel: UdpTunnel::Teredo { .. },
                ..
            }
        ) {
            (ip("2001:db8:1::1"), ip("2001:db8:2::2"))
        } else {
            (ip("10.1.1.1"), ip("10.2.2.2"))
        };
        for port in 0..50u16 {
            let l4 = L4::Udp {
                sport: 10_000 + port,
                dport: 20_000 + i as u16,
            };
            let mut spec = PacketSpec::new(c, s, l4, 100);
            spec.encap = encap;
            let mut f = Vec::new();
            build_frame(&spec, &mut f);
            frames.push((LinkType::Ethernet, f));
        }
    }
    for port in 0..50u16 {
        let l4 = L4::Udp {
            sport: 10_000 + port,
            dport: 30_000,
        };
        let mut p = Vec::new();
        ip_packet(
            &PacketSpec::new(ip("10.3.3.3"), ip("10.4.4.4"), l4, 100),
            &mut p,
        );
        let w = Wlan {
            fcs: true,
            amsdu: port % 2 == 0,
            ..Wlan::default()
        };
        frames.push((LinkType::Ieee80211Radiotap, wlan_frame(&p, w)));
    }
    let mut decoder = Decoder::new();
    let mut table = FlowTable::new(&FlowConfig::default(), 100_000);
    let mut metas: Vec<PacketMeta> = Vec::with_capacity(4096);
    let mut round = |ts: u64| {
        for (link, f) in &frames {
            let pkt = RawPacket {
                ts_ns: ts,
                link: *link,
                orig_len: f.len() as u32,
                data: f,
            };
            decoder.decode(&pkt, &mut |m: &PacketMeta, _: &[u8]| metas.push(*m));
        }
        let n = metas.len();
        table.process_batch(&metas, &[]);
        metas.clear();
        table.advance(ts);
        n
    };
    let t0 = 1_700_000_000_000_000_000u64;
    round(t0);
    round(t0 + 1_000_000);
    let before = allocations();
    let mut packets = 0;
    for i in 2..12 {
        packets += round(t0 + i * 1_000_000);
    }
    let during = allocations() - before;
    // Each frame an outer and an inner packet, but the layer-2 ones (six
    // kinds) one, and the A-MSDUs two.
    assert_eq!(packets, 10 * (10 * 50 * 2 + 6 * 50 + 25 * 2 + 25));
    assert_eq!(decoder.stats.error_total(), 0);
    assert_eq!(during, 0, "{during} allocations over {packets} packets");
}

/// The realistic mix (flows starting and ending all through the capture,
/// IPv6, VLANs, DNS, ICMP, ESP, resets): reading, decoding and applying
/// its packets allocates nothing per packet or per flow; the only
/// allocations are the table's own growth, each doubling its size, while
/// the active flows double after the warm-up.
#[test]
fn realistic_mix_allocates_nothing_per_packet() {
    use vigil_sensor::synth::MixConfig;
    let cfg = MixConfig {
        packets: 200_000,
        flows: 8_000,
        ..MixConfig::default()
    };
    let file = cfg.to_pcap_bytes();
    let mut reader = CaptureReader::new(&file[..], "mix").unwrap();
    let mut decoder = Decoder::new();
    let mut table = FlowTable::new(&FlowConfig::default(), 1_000_000);
    let mut metas: Vec<PacketMeta> = Vec::with_capacity(512);
    let (mut before, mut n, mut flows_at_warm) = (0, 0u64, 0);
    while let Some(pkt) = reader.next_packet().unwrap() {
        n += 1;
        if n == 20_000 {
            before = allocations();
            flows_at_warm = table.len();
        }
        apply(&mut decoder, &mut table, &mut metas, &pkt);
    }
    table.process_batch(&metas, &[]);
    let created_after = 8_000u64.saturating_sub(flows_at_warm as u64);
    let during = allocations() - before;
    assert_eq!(n, 200_000);
    assert!(before > 0);
    assert!(
        created_after > 1_000,
        "flows must keep starting after the warm-up: {created_after}"
    );
    // The table at most doubles twice (its slots and its index, each once
    // or twice); one allocation per flow would be thousands.
    assert!(
        during <= 4,
        "{during} allocations over 180,000 packets ({created_after} flows created among them)"
    );
}

/// Application metadata allocates nothing per packet once warm: the
/// states of ended flows are reused with their buffers. 500 DNS
/// exchanges (query, response with two answers), expired, then 500 more
/// on other ports: the second round's packets allocate exactly what they
/// allocate with the metadata off (the timer wheel's own growth).
#[test]
fn application_metadata_allocates_nothing_once_warm() {
    let on = dns_rounds(true);
    let off = dns_rounds(false);
    assert_eq!(
        on, off,
        "allocations over 1,000 DNS packets, metadata on and off"
    );
}

fn dns_rounds(app_metadata: bool) -> u64 {
    use vigil_sensor::decode::key::FlowKey;
    fn message(id: u16, response: bool) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(if response { &[0x81, 0x80] } else { &[1, 0] });
        m.extend_from_slice(&[0, 1, 0, if response { 2 } else { 0 }, 0, 0, 0, 0]);
        for l in ["host-name", "example", "org"] {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        if response {
            for last in [7u8, 8] {
                m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, last]);
            }
        }
        m
    }
    let cfg = FlowConfig {
        app_metadata,
        ..FlowConfig::default()
    };
    let mut table = FlowTable::new(&cfg, 100_000);
    let mut sniffer = table.sniffer();
    let (mut metas, mut payloads) = (Vec::with_capacity(1024), Vec::with_capacity(1 << 20));
    let t0 = 1_700_000_000_000_000_000u64;
    let mut round = |base_port: u16, ts: u64| -> (u64, usize) {
        metas.clear();
        payloads.clear();
        let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..500)
            .map(|i| (message(i, false), message(i, true)))
            .collect();
        let before = allocations();
        for (i, (q, r)) in msgs.iter().enumerate() {
            let port = base_port + i as u16;
            for (from_client, p) in [(true, q), (false, r)] {
                let (a, pa, b, pb) = if from_client {
                    ([10; 16], port, [20; 16], 53)
                } else {
                    ([20; 16], 53, [10; 16], port)
                };
                let (key, src_is_lo) = FlowKey::new(a, pa, b, pb, 17, false, [0; 2]);
                let mut m = PacketMeta {
                    key,
                    hash: key.hash64(),
                    ts_ns: ts,
                    ip_bytes: 28 + p.len() as u32,
                    payload_len: p.len() as u32,
                    src_is_lo,
                    ..PacketMeta::default()
                };
                sniffer.keep(&mut m, p, &mut payloads);
                metas.push(m);
            }
        }
        table.process_batch(&metas, &payloads);
        let during = allocations() - before;
        // Every flow ends (idle), its record taken.
        table.advance(ts + 3_600_000_000_000);
        let records = table.take_records();
        let with_app = records.iter().filter(|r| r.app.is_some()).count();
        (during, with_app)
    };
    let want = if app_metadata { 500 } else { 0 };
    let (_, warm) = round(10_000, t0);
    assert_eq!(warm, want);
    let (during, with_app) = round(20_000, t0 + 7_200_000_000_000);
    assert_eq!(with_app, want);
    assert_eq!(table.stats.app.errors.iter().sum::<u64>(), 0);
    during
}
