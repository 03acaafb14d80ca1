//! The embedded store's own behaviour: records round-trip, roll-ups agree
//! with the flows, dedupe, read-only opening, group commits, alerts and
//! retention. (Filters in SQL against filters in memory: `query/tests.rs`.)

use std::time::Duration;

use vigil_proto::FlowRecord;

use super::*;
use crate::model::alert::AlertQuery;
use crate::model::query::{Filter, TimeRange, TopBy, TopKey};
use crate::query::memory;
use crate::store::plan::NS_PER_MIN;
use crate::store::prelude::*;
use crate::store::{CommitOutcome, IngestBatch};
use crate::testutil::{Rng, T0, batch, filled, record};

#[test]
fn records_round_trip_through_the_store() {
    let (_d, store, all) = filled();
    let got = store
        .flows(&Filter::All, TimeRange::default(), usize::MAX)
        .unwrap();
    assert_eq!(got, all);
}

#[test]
fn top_n_from_roll_ups_equals_top_n_from_flows() {
    let (_d, store, all) = filled();
    let ranges = [
        TimeRange::default(),
        TimeRange {
            since_ns: Some(T0),
            until_ns: Some(T0 + 2 * NS_PER_MIN),
        },
        // Partial minutes at both edges.
        TimeRange {
            since_ns: Some(T0 + 17_000_000_000),
            until_ns: Some(T0 + 150_000_000_000),
        },
        // Inside one minute.
        TimeRange {
            since_ns: Some(T0 + 5_000_000_000),
            until_ns: Some(T0 + 25_000_000_000),
        },
    ];
    for range in ranges {
        for key in [
            TopKey::Src,
            TopKey::Dst,
            TopKey::DstPort,
            TopKey::SrcPort,
            TopKey::Proto,
        ] {
            for by in [TopBy::Bytes, TopBy::Packets, TopBy::Flows] {
                let want = memory::top(&all, &Filter::All, range, key, by, 5);
                let got = store.top(&Filter::All, range, key, by, 5).unwrap();
                assert_eq!(got, want, "{key:?} by {by:?} in {range:?}");
                // The same through the flows table (a filter that keeps everything).
                let keep = Filter::Not(Box::new(Filter::Proto(255)));
                assert_eq!(store.top(&keep, range, key, by, 5).unwrap(), want);
            }
        }
        let c = store.count(&Filter::All, range).unwrap();
        let want = all
            .iter()
            .filter(|(_, r)| range.contains(r.first_seen_ns))
            .count();
        assert_eq!(c.flows, want as u64, "{range:?}");
    }
}

#[test]
fn duplicates_are_dropped_and_gaps_counted_persistently() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let one = vec![record(&mut rng, 1)];
    {
        let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
        assert_eq!(
            store.commit(&batch("s", 1, one.clone())).unwrap(),
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            }
        );
        assert_eq!(
            store.commit(&batch("s", 1, one.clone())).unwrap(),
            CommitOutcome::Duplicate
        );
        assert_eq!(
            store.commit(&batch("s", 4, one.clone())).unwrap(),
            CommitOutcome::Stored {
                gap: 2,
                reset: false
            }
        );
        // Another sensor's sequence is its own.
        assert_eq!(
            store.commit(&batch("t", 1, one.clone())).unwrap(),
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            }
        );
    }
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    assert_eq!(
        store.commit(&batch("s", 4, one.clone())).unwrap(),
        CommitOutcome::Duplicate
    );
    assert_eq!(
        store.commit(&batch("s", 2, one.clone())).unwrap(),
        CommitOutcome::Duplicate
    );
    let sensors = store.sensors().unwrap();
    let s = &sensors[0];
    assert_eq!(
        (
            s.sensor_id.as_str(),
            s.last_seq,
            s.batches,
            s.flows,
            s.duplicates,
            s.seq_gaps
        ),
        ("s", 4, 2, 2, 3, 2)
    );
    assert_eq!(s.stats.packets, 40, "the latest counters of the run");
    assert_eq!(
        store
            .count(&Filter::All, TimeRange::default())
            .unwrap()
            .flows,
        3
    );
}

#[test]
fn a_read_only_store_answers_queries_and_refuses_writes() {
    let (d, store, all) = filled();
    drop(store);
    let ro = SqliteStore::open_read_only(d.path()).unwrap();
    assert_eq!(
        ro.flows(&Filter::All, TimeRange::default(), usize::MAX)
            .unwrap(),
        all
    );
    assert_eq!(ro.sensors().unwrap().len(), 2);
    let mut rng = Rng(3);
    assert!(
        ro.commit(&batch("x", 1, vec![record(&mut rng, 1)]))
            .is_err()
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(SqliteStore::open_read_only(empty.path()).is_err());
    assert!(!empty.path().join("vigil.db").exists(), "nothing created");
}

#[test]
fn a_group_commit_dedupes_within_itself_and_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    let mut rng = Rng(11);
    let mut flows = || vec![record(&mut rng, 1), record(&mut rng, 2)];
    let (a1, a2, a2again, b1) = (
        batch("a", 1, flows()),
        batch("a", 2, flows()),
        batch("a", 2, flows()),
        batch("b", 1, flows()),
    );
    let out = store.commit_many(&[&a1, &a2, &a2again, &b1]).unwrap();
    assert_eq!(
        out,
        vec![
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            },
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            },
            CommitOutcome::Duplicate,
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            },
        ]
    );
    assert_eq!(
        store
            .count(&Filter::All, TimeRange::default())
            .unwrap()
            .flows,
        6
    );
    // A batch the store cannot represent fails the whole group.
    let mut bad = batch("c", 1, flows());
    bad.flows[1].fwd_bytes = u64::MAX;
    let ok = batch("d", 1, flows());
    assert!(store.commit_many(&[&ok, &bad]).is_err());
    assert_eq!(
        store
            .count(&Filter::All, TimeRange::default())
            .unwrap()
            .flows,
        6
    );
    assert!(store.sensors().unwrap().iter().all(|s| s.sensor_id != "d"));
}

#[test]
fn evidence_flows_outlive_retention_and_alerts_round_trip() {
    use crate::model::alert::{Alert, AlertKind, AlertUpdate, Criticality, EvidenceRef, Severity};
    let (_d, store, all) = filled();
    // Two old flows are the evidence of an alert.
    let mut old: Vec<&(String, FlowRecord)> = all
        .iter()
        .filter(|(_, f)| f.first_seen_ns < T0 + NS_PER_MIN / 2)
        .collect();
    old.truncate(2);
    let evidence: Vec<EvidenceRef> = old
        .iter()
        .map(|(s, f)| EvidenceRef {
            sensor_id: s.clone(),
            flow_id: f.flow_id,
            first_ns: f.first_seen_ns,
        })
        .collect();
    let alert = Alert {
        id: 7,
        kind: AlertKind::SynFlood,
        technique: "T1498.001".into(),
        technique_name: "Direct Network Flood".into(),
        matrix: "enterprise".into(),
        severity: Severity::High,
        asset: "plant".into(),
        sector: "water".into(),
        criticality: Criticality::High,
        summary: "a flood".into(),
        sources: Vec::new(),
        source_count: 2,
        targets: Vec::new(),
        target_count: 1,
        first_seen_ns: T0,
        last_seen_ns: T0 + 1,
        raised_ns: T0 + 1,
        measured: 900.0,
        threshold: 500.0,
        unit: "flows/s".into(),
        updates: 0,
        evidence: evidence.clone(),
        evidence_count: 2,
        detector: String::new(),
    };
    store
        .put_alerts(&[AlertUpdate {
            alert: alert.clone(),
            opened: true,
        }])
        .unwrap();
    // An update adds evidence and replaces the row.
    let mut later = alert.clone();
    later.updates = 1;
    later.evidence = Vec::new();
    store
        .put_alerts(&[AlertUpdate {
            alert: later,
            opened: false,
        }])
        .unwrap();
    assert_eq!(store.max_alert_id().unwrap(), 7);
    let back = store.alert(7).unwrap().unwrap();
    assert_eq!((back.updates, back.evidence.len()), (1, 2));
    assert_eq!(back.evidence, evidence);
    let listed = store
        .alerts(&AlertQuery {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        })
        .unwrap();
    assert!(listed.is_empty(), "severity filter");
    assert_eq!(store.alerts(&Default::default()).unwrap().len(), 1);
    // Retention removes everything old but the evidence.
    let store = SqliteStore {
        cfg: SqliteConfig {
            max_age: Some(Duration::from_secs(1)),
            ..Default::default()
        },
        ..store
    };
    store.enforce_retention(T0 + 1000 * NS_PER_MIN).unwrap();
    let left = store
        .flows(&Filter::All, TimeRange::default(), usize::MAX)
        .unwrap();
    assert_eq!(left.len(), 2, "only the evidence is left");
    let ev = store.evidence_flows(&back.evidence).unwrap();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|(_, f)| old.iter().any(|(_, o)| o == f)));
}

#[test]
fn retention_by_age_and_by_size() {
    let (_d, store, all) = filled();
    let cfg = SqliteConfig {
        max_age: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let store = SqliteStore { cfg, ..store };
    let now = T0 + 2 * NS_PER_MIN;
    let r = store.enforce_retention(now).unwrap();
    let boundary = (T0 + NS_PER_MIN) / NS_PER_MIN * NS_PER_MIN;
    let kept = all
        .iter()
        .filter(|(_, f)| f.first_seen_ns >= boundary)
        .count();
    assert_eq!(r.deleted_flows as usize, all.len() - kept);
    assert_eq!(
        store
            .count(&Filter::All, TimeRange::default())
            .unwrap()
            .flows,
        kept as u64
    );
    let top = store
        .top(
            &Filter::All,
            TimeRange::default(),
            TopKey::Proto,
            TopBy::Flows,
            10,
        )
        .unwrap();
    assert_eq!(top.iter().map(|t| t.totals.flows).sum::<u64>(), kept as u64);

    let (_d2, store2, _) = filled();
    let used = store2.used_bytes().unwrap();
    let store2 = SqliteStore {
        cfg: SqliteConfig {
            max_bytes: Some(used / 2),
            ..Default::default()
        },
        ..store2
    };
    let r = store2.enforce_retention(now).unwrap();
    assert!(r.deleted_flows > 0);
    assert!(store2.used_bytes().unwrap() <= used / 2);
}

/// A version 1 database (one dedupe mark per sensor) is migrated: its
/// mark becomes incarnation 0's, so a sensor of before resends nothing
/// twice, and a new spool of it is a reset.
#[test]
fn a_version_1_database_keeps_its_marks_as_incarnation_0() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("vigil.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('schema', 1);
             CREATE TABLE sensors (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
               last_seq INTEGER NOT NULL DEFAULT 0, batches INTEGER NOT NULL DEFAULT 0,
               flows INTEGER NOT NULL DEFAULT 0, duplicates INTEGER NOT NULL DEFAULT 0,
               seq_gaps INTEGER NOT NULL DEFAULT 0, last_seen_ns INTEGER NOT NULL DEFAULT 0);
             INSERT INTO sensors (name, last_seq, batches, flows) VALUES ('old', 5, 5, 50);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    let mut rng = Rng(3);
    let legacy = |seq| IngestBatch {
        incarnation: 0,
        ..batch("old", seq, vec![record(&mut Rng(seq), seq)])
    };
    assert_eq!(store.commit(&legacy(5)).unwrap(), CommitOutcome::Duplicate);
    assert_eq!(
        store.commit(&legacy(6)).unwrap(),
        CommitOutcome::Stored {
            gap: 0,
            reset: false
        }
    );
    assert_eq!(
        store
            .commit(&batch("old", 1, vec![record(&mut rng, 1)]))
            .unwrap(),
        CommitOutcome::Stored {
            gap: 0,
            reset: true
        }
    );
    let s = &store.sensors().unwrap()[0];
    assert_eq!(
        (s.last_seq, s.incarnation, s.seq_resets, s.batches),
        (1, 1, 1, 7)
    );
    drop(store);
    // Migrated once: opened again (and read-only) as version 2.
    SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    SqliteStore::open_read_only(dir.path()).unwrap();
}

/// A version 2 database (no batches, no places) is migrated: its flows
/// stay, unplaced (not attested); flows stored after have their places.
#[test]
fn a_version_2_database_gains_batches_and_keeps_its_flows() {
    use crate::model::alert::EvidenceRef;
    use crate::store::EvidenceStore;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(21);
    let old = record(&mut rng, 1);
    {
        let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
        store.commit(&batch("s", 1, vec![old.clone()])).unwrap();
    }
    {
        let c = rusqlite::Connection::open(dir.path().join("vigil.db")).unwrap();
        c.execute_batch(
            "ALTER TABLE flows DROP COLUMN batch; ALTER TABLE flows DROP COLUMN idx;
             DROP TABLE batches; DROP TABLE sensor_keys; DROP TABLE pruned_leaves;
             DROP TABLE detectors; UPDATE meta SET value = 2 WHERE key = 'schema';",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    let new = record(&mut rng, 2);
    store.commit(&batch("s", 2, vec![new.clone()])).unwrap();
    let refs: Vec<EvidenceRef> = [&old, &new]
        .iter()
        .map(|r| EvidenceRef {
            sensor_id: "s".into(),
            flow_id: r.flow_id,
            first_ns: r.first_seen_ns,
        })
        .collect();
    let placed = store.placed_flows(&refs).unwrap();
    assert_eq!(placed.len(), 2);
    for p in placed {
        if p.record == old {
            assert!(p.place.is_none());
        } else {
            let (k, i) = p.place.expect("placed");
            assert_eq!((k.seq, i), (2, 0));
        }
    }
}
