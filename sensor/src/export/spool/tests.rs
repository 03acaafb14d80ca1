//! The spool's own behaviour: order and restarts, the size bound, torn
//! and damaged records, flushes outside the lock, incarnations, bad
//! configurations and state.

use super::*;

fn cfg(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 10,
        segment_bytes: 8 << 10,
        fsync: Fsync::Never,
    }
}

fn payload(seq: u64) -> Vec<u8> {
    vec![seq as u8; 1000]
}

#[test]
fn batches_survive_a_restart_in_order_until_acked() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(cfg(d.path())).unwrap();
        for i in 1..=20 {
            assert_eq!(s.append(&payload(i), i as u32).unwrap(), i);
        }
        s.ack(5).unwrap();
        s.close().unwrap();
    }
    let mut s = Spool::open(cfg(d.path())).unwrap();
    assert_eq!(s.acked(), 5);
    assert_eq!(s.next_seq(), 21);
    assert_eq!(s.pending(), 15);
    let b = s.read_from(6).unwrap().unwrap();
    assert_eq!((b.seq, b.flows, b.payload), (6, 6, payload(6)));
    assert_eq!(s.read_from(20).unwrap().unwrap().seq, 20);
    assert_eq!(s.read_from(21).unwrap(), None);
    s.ack(20).unwrap();
    assert_eq!(s.pending(), 0);
    // Only the active segment remains.
    assert_eq!(s.segments.len(), 1);
    assert_eq!(s.append(b"x", 1).unwrap(), 21);
}

#[test]
fn sequence_numbers_never_restart_even_when_everything_was_acked() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(cfg(d.path())).unwrap();
        for i in 1..=30 {
            s.append(&payload(i), 1).unwrap();
        }
        s.ack(30).unwrap();
        s.close().unwrap();
    }
    let mut s = Spool::open(cfg(d.path())).unwrap();
    assert_eq!(s.append(b"y", 1).unwrap(), 31);
}

#[test]
fn the_bound_drops_the_oldest_and_counts_it() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Spool::open(cfg(d.path())).unwrap();
    for i in 1..=200 {
        s.append(&payload(i), 3).unwrap();
    }
    let st = s.stats();
    assert!(st.bytes <= 64 << 10, "{st:?}");
    assert!(st.dropped_batches > 100, "{st:?}");
    assert_eq!(st.dropped_flows, 3 * st.dropped_batches);
    // What is left is the newest, contiguous, ending at 200.
    let first = s.read_from(1).unwrap().unwrap().seq;
    assert_eq!(first, st.dropped_batches + 1);
    assert_eq!(s.pending(), 200 - st.dropped_batches);
    s.close().unwrap();
    let s2 = Spool::open(cfg(d.path())).unwrap();
    assert_eq!(s2.stats().dropped_batches, st.dropped_batches, "persisted");
}

#[test]
fn a_torn_tail_is_cut_and_counted() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(cfg(d.path())).unwrap();
        for i in 1..=3 {
            s.append(&payload(i), 1).unwrap();
        }
        s.close().unwrap();
    }
    let seg = d.path().join(segment_name(1));
    let len = fs::metadata(&seg).unwrap().len();
    // Tear the last record.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let mut s = Spool::open(cfg(d.path())).unwrap();
    assert_eq!(s.stats().corrupt_records, 1);
    assert_eq!(s.read_from(3).unwrap(), None);
    assert_eq!(
        s.append(b"z", 1).unwrap(),
        4,
        "the torn record's seq is never reused: it may have reached the collector"
    );
    // Flip a payload byte of record 1: its CRC fails and the rest of the segment is skipped.
    s.close().unwrap();
    drop(s);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_at(&[0xff], HEADER as u64 + 5).unwrap();
    let s = Spool::open(cfg(d.path())).unwrap();
    assert_eq!(s.stats().corrupt_records, 2);
    assert_eq!(s.read_from(1).unwrap(), None);
    assert_eq!(s.next_seq(), 5, "seq stays monotone through the state file");
}

/// Flushes are taken under the lock and run outside it, in any order:
/// an older state never overwrites a newer one.
#[test]
fn flushes_run_outside_the_lock_never_write_an_older_state() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(d.path());
    c.fsync = Fsync::Always;
    let mut s = Spool::open(c.clone()).unwrap();
    for i in 1..=3 {
        s.append(&payload(i), 1).unwrap();
    }
    let data = s.take_flush(false);
    assert!(!data.is_empty(), "Always: the appends are due");
    s.ack(1).unwrap();
    let older = s.take_flush(false);
    s.ack(2).unwrap();
    let newer = s.take_flush(false);
    assert!(s.take_flush(false).is_empty());
    newer.run().unwrap();
    older.run().unwrap();
    data.run().unwrap();
    drop(s);
    let s = Spool::open(c).unwrap();
    assert_eq!(s.acked(), 2, "the newer state stands");
    assert_eq!(s.read_from(3).unwrap().unwrap().seq, 3);
}

#[test]
fn the_incarnation_is_drawn_once_and_kept() {
    let d = tempfile::tempdir().unwrap();
    let first = {
        let mut s = Spool::open(cfg(d.path())).unwrap();
        s.append(b"a", 1).unwrap();
        s.close().unwrap();
        s.incarnation()
    };
    assert_ne!(first, 0);
    assert_eq!(Spool::open(cfg(d.path())).unwrap().incarnation(), first);
    // A lost spool: a new directory is a new incarnation, seq from 1.
    let d2 = tempfile::tempdir().unwrap();
    let mut s2 = Spool::open(cfg(d2.path())).unwrap();
    assert_ne!(s2.incarnation(), first);
    assert_eq!(s2.append(b"b", 1).unwrap(), 1);
    // A state file written before incarnations existed gets one, kept.
    let d3 = tempfile::tempdir().unwrap();
    fs::write(d3.path().join("state"), "version=1\nacked=7\nnext_seq=8\n").unwrap();
    let inc = Spool::open(cfg(d3.path())).unwrap().incarnation();
    assert_ne!(inc, 0);
    let s3 = Spool::open(cfg(d3.path())).unwrap();
    assert_eq!((s3.incarnation(), s3.next_seq()), (inc, 8));
}

#[test]
fn bad_configs_and_state_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(d.path());
    c.max_bytes = c.segment_bytes;
    assert!(Spool::open(c).unwrap_err().to_string().contains("twice"));
    fs::write(d.path().join("state"), "acked=x\n").unwrap();
    let e = Spool::open(cfg(d.path())).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("acked"), "{e}");
}

/// A batch the size bound deletes while it is in flight is not counted
/// lost when the stream it was sent on acknowledges it (the collector
/// stored it: counting it would over-count), and is counted when that
/// stream ends first, or when the sensor stops before knowing.
#[test]
fn batches_dropped_in_flight_count_only_if_never_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Spool::open(cfg(d.path())).unwrap();
    for i in 1..=5 {
        s.append(&payload(i), 2).unwrap();
    }
    s.sent(5);
    // The collector is slow: the bound deletes the oldest, 1-5 among them.
    for i in 6..=200 {
        s.append(&payload(i), 2).unwrap();
    }
    let st = s.stats();
    assert!(st.dropped_batches > 0);
    let unsent = st.dropped_batches;
    // The stream acknowledges 1-5: stored, not lost.
    s.ack(5).unwrap();
    s.stream_ended();
    assert_eq!(
        s.stats().dropped_batches,
        unsent,
        "acknowledged in flight: not lost"
    );
    // Next stream: 6-10 sent, deleted by the bound, the stream breaks.
    let first = s.read_from(6).unwrap().unwrap().seq;
    s.sent(first + 4);
    for i in 201..=260 {
        s.append(&payload(i), 2).unwrap();
    }
    let dropped_now = s.stats().dropped_batches;
    s.stream_ended();
    let after = s.stats();
    assert_eq!(
        after.dropped_batches,
        dropped_now + 5,
        "the five in flight, lost"
    );
    assert_eq!(after.dropped_flows, 2 * after.dropped_batches);
    // In flight when the sensor stops: unknown, so lost (persisted).
    s.sent(s.next_seq() - 1);
    let pending = s.pending();
    for i in 261..=400 {
        s.append(&payload(i), 2).unwrap();
    }
    let counted = s.stats().dropped_batches;
    drop(s);
    let s = Spool::open(cfg(d.path())).unwrap();
    assert!(
        s.stats().dropped_batches > counted,
        "{} in flight of {pending} pending, counted at the next open",
        s.stats().dropped_batches - counted
    );
}
