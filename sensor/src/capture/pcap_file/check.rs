//! A check the tests and the fuzz target share: the buffered and the
//! in-place readers agree on every capture.

use super::*;

/// Reads `bytes` with the buffered reader's `next_packet` and the slice
/// reader's `next_in_slice`; panics where they differ (packets, the
/// error that ends them, the offsets).
pub fn assert_slice_reading_agrees(bytes: &[u8]) {
    let (mut a, mut b) = match (
        CaptureReader::new(bytes, "x"),
        CaptureReader::from_slice(bytes, "x"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e1), Err(e2)) => return assert_eq!(e1.to_string(), e2.to_string()),
        (x, y) => panic!(
            "readers disagree on the header: {:?} vs {:?}",
            x.err(),
            y.err()
        ),
    };
    loop {
        match (a.next_packet(), b.next_in_slice()) {
            (Ok(Some(p)), Ok(Some(q))) => assert_eq!(
                (p.ts_ns, p.orig_len, p.link, p.data),
                (q.ts_ns, q.orig_len, q.link, q.data)
            ),
            (Ok(None), Ok(None)) => break,
            (Err(e1), Err(e2)) => {
                assert_eq!((e1.offset(), e1.to_string()), (e2.offset(), e2.to_string()));
                break;
            }
            (x, y) => panic!(
                "readers disagree: {:?} vs {:?}",
                x.map(|p| p.map(|p| p.ts_ns)),
                y.map(|p| p.map(|p| p.ts_ns))
            ),
        }
        assert_eq!((a.offset(), a.packets()), (b.offset(), b.packets()));
    }
    // A walk, ended every `k` records, then read on, gives the same again.
    for k in [1usize, 3, usize::MAX] {
        let (Ok(mut a), Ok(mut b)) = (
            CaptureReader::from_slice(bytes, "x"),
            CaptureReader::from_slice(bytes, "x"),
        ) else {
            return;
        };
        let mut want = Vec::new();
        let want_end = loop {
            match a.next_in_slice() {
                Ok(Some(p)) => want.push((p.ts_ns, p.orig_len, p.link, p.data)),
                Ok(None) => break None,
                Err(e) => break Some((e.offset(), e.to_string())),
            }
        };
        let mut got = Vec::new();
        let got_end = loop {
            if let Some(mut w) = b.walk() {
                let mut walked = 0;
                for _ in 0..k {
                    let Some(p) = w.next_packet() else { break };
                    got.push((p.ts_ns, p.orig_len, p.link, p.data));
                    walked += 1;
                }
                b.end_walk(w, walked);
            }
            match b.next_in_slice() {
                Ok(Some(p)) => got.push((p.ts_ns, p.orig_len, p.link, p.data)),
                Ok(None) => break None,
                Err(e) => break Some((e.offset(), e.to_string())),
            }
        };
        assert_eq!((want, want_end), (got, got_end), "walks of {k}");
        assert_eq!((a.offset(), a.packets()), (b.offset(), b.packets()));
    }
    // A record read at its offset is the record; a reader moved to a
    // record's start (as the relay's walkers move theirs) reads on as one
    // that read its way there; a guess of where records start lies in the
    // bytes it was asked about.
    let Ok(mut a) = CaptureReader::from_slice(bytes, "x") else {
        return;
    };
    let Some(w) = a.walk() else { return };
    let mut walk = w.clone();
    let mut starts = Vec::new();
    while starts.len() < 64 {
        let at = walk.offset();
        let Some(p) = walk.next_packet() else { break };
        let q = w.packet_at(at).expect("a record at its offset");
        assert_eq!(
            (p.ts_ns, p.orig_len, p.link, p.data),
            (q.ts_ns, q.orig_len, q.link, q.data)
        );
        starts.push(at);
    }
    for (i, &at) in starts
        .iter()
        .enumerate()
        .rev()
        .take(2)
        .chain(starts.iter().enumerate().take(1))
    {
        let mut b = CaptureReader::from_slice(bytes, "x").unwrap();
        b.seek_record(at);
        let mut c = CaptureReader::from_slice(bytes, "x").unwrap();
        for _ in 0..i {
            assert!(matches!(c.next_in_slice(), Ok(Some(_))));
        }
        loop {
            assert_eq!(b.offset(), c.offset());
            match (b.next_in_slice(), c.next_in_slice()) {
                (Ok(Some(p)), Ok(Some(q))) => assert_eq!((p.ts_ns, p.data), (q.ts_ns, q.data)),
                (Ok(None), Ok(None)) => break,
                (Err(e1), Err(e2)) => {
                    assert_eq!((e1.offset(), e1.to_string()), (e2.offset(), e2.to_string()));
                    break;
                }
                (x, y) => panic!(
                    "a reader moved to {at} disagrees: {:?} vs {:?}",
                    x.map(|p| p.map(|p| p.ts_ns)),
                    y.map(|p| p.map(|p| p.ts_ns))
                ),
            }
        }
        let len = bytes.len() as u64;
        for from in [at, at + 1, at + 7] {
            let until = (from + 512).min(len);
            if let Some(p) = w.find_record(from, until) {
                assert!((from..until).contains(&p), "{p} outside {from}..{until}");
            }
        }
    }
}
