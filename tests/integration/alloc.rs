//! Zero allocations per packet in steady state: capture reading, decoding
//! and flow-table updates, counted by an allocator that counts per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vigil_sensor::capture::CaptureReader;
use vigil_sensor::decode::{Decoder, PacketMeta};
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::flow::table::FlowTable;
use vigil_sensor::synth::{BulkConfig, FrameSize};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
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
        let ts = pkt.ts_ns;
        decoder.decode(&pkt, &mut |m: &PacketMeta| metas.push(*m));
        if metas.len() >= 256 {
            table.process_batch(&metas);
            metas.clear();
            table.advance(ts);
        }
        if n == 20 * flows {
            table.process_batch(&metas);
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
