//! The share ledger: a SQLite file beside the store
//! (`DATA_DIR/share/ledger.db`, whatever the store engine) holding what
//! must survive restarts and partner outages:
//!
//! - `pending`: alerts to (re)share with a partner, and when (its delay);
//! - `outbox`: STIX objects to push, one row per partner, object id and
//!   version (`modified`, or `created` for objects that have no versions),
//!   so that each version is queued — and sent — once (a row keeps its
//!   object's JSON only while it waits);
//! - `partners`: each partner's last success, last failure and error;
//! - `exports`: the evidence bundles exported, by alert and partner, with
//!   their SHA-256, which shared incidents point to.
//!
//! It is a queue, updated in place; the ClickHouse store is append-only
//! and the embedded one is the flows' — so it is a file of its own.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;
use thiserror::Error;

/// The ledger failed.
#[derive(Debug, Error)]
#[error("share ledger {path}: {source}")]
pub struct LedgerError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pending (
    partner TEXT NOT NULL,
    alert_id INTEGER NOT NULL,
    due_ns INTEGER NOT NULL,
    PRIMARY KEY (partner, alert_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    partner TEXT NOT NULL,
    object_id TEXT NOT NULL,
    version TEXT NOT NULL,
    alert_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    queued_ns INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    done_ns INTEGER,
    message TEXT,
    UNIQUE (partner, object_id, version)
);
CREATE INDEX IF NOT EXISTS outbox_queued ON outbox (partner, state, seq);
CREATE TABLE IF NOT EXISTS partners (
    name TEXT PRIMARY KEY,
    last_success_ns INTEGER,
    last_failure_ns INTEGER,
    last_error TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS watermarks (
    partner TEXT PRIMARY KEY,
    alert_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS exports (
    alert_id INTEGER NOT NULL,
    partner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (alert_id, partner, sha256)
);
";

/// One evidence bundle exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRecord {
    /// The alert.
    pub alert: u64,
    /// The partner it was anonymized for (empty: the plain bundle).
    pub partner: String,
    /// Hex SHA-256 of the tar.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// When, ns since the epoch.
    pub created_ns: u64,
    /// Who took it (empty: not recorded, a ledger from before).
    pub by: String,
}

/// The ledger file under a data directory.
pub const LEDGER: &str = "share/ledger.db";

/// One queued object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// Outbox row.
    pub seq: i64,
    /// STIX id.
    pub object_id: String,
    /// Its version.
    pub version: String,
    /// The object's JSON.
    pub body: String,
}

/// A partner's state, as `vigil share status` and the metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartnerStatus {
    /// Name.
    pub partner: String,
    /// Objects waiting to be sent.
    pub queued: u64,
    /// Objects the partner accepted.
    pub sent: u64,
    /// Objects the partner refused (its status said so).
    pub rejected: u64,
    /// Versions replaced by a newer one before they were sent.
    pub superseded: u64,
    /// Alerts held by its delay, or waiting to be turned into objects.
    pub pending_alerts: u64,
    /// Last accepted push, ns.
    pub last_success_ns: Option<u64>,
    /// Last failed push, ns.
    pub last_failure_ns: Option<u64>,
    /// Its error.
    pub last_error: Option<String>,
    /// Failed pushes in all.
    pub failures: u64,
    /// Failed pushes since the last success.
    pub consecutive_failures: u64,
}

/// The ledger.
#[derive(Debug)]
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

fn ns(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Ledger {
    /// Opens (making it if needed) the ledger of data directory `dir`.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        let path = dir.join(LEDGER);
        let err = |source| LedgerError {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; {SCHEMA}"
        ))
        .map_err(err)?;
        // Who exported each bundle (the custody trail), added after the
        // first ledgers were written: their exports say "" (not recorded).
        let has_by: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('exports') WHERE name = 'exported_by'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if !has_by {
            conn.execute_batch(
                "ALTER TABLE exports ADD COLUMN exported_by TEXT NOT NULL DEFAULT ''",
            )
            .map_err(err)?;
        }
        Ok(Ledger { conn, path })
    }

    /// Opens an existing ledger to read (`vigil share status`).
    pub fn open_existing(dir: &Path) -> Result<Option<Ledger>, LedgerError> {
        if !dir.join(LEDGER).exists() {
            return Ok(None);
        }
        Ledger::open(dir).map(Some)
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            source,
        }
    }

    /// Marks `alert` to be shared with `partner`: at `now_ns` plus
    /// `delay_ns` the first time, plus `interval_ns` once it has been
    /// queued (an update: updates within the interval make one version);
    /// an alert already pending keeps its time.
    pub fn mark_pending(
        &self,
        partner: &str,
        alert: u64,
        now_ns: u64,
        delay_ns: u64,
        interval_ns: u64,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO pending (partner, alert_id, due_ns)
                 VALUES (?1, ?2, ?3 + CASE WHEN EXISTS (SELECT 1 FROM outbox WHERE partner = ?1 AND alert_id = ?2)
                                      THEN ?5 ELSE ?4 END)
                 ON CONFLICT (partner, alert_id) DO NOTHING",
                params![partner, ns(alert), ns(now_ns), ns(delay_ns), ns(interval_ns)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The highest alert id the sharer has seen for `partner`, if any.
    pub fn watermark(&self, partner: &str) -> Result<Option<u64>, LedgerError> {
        self.conn
            .query_row(
                "SELECT alert_id FROM watermarks WHERE partner = ?1",
                params![partner],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|x| x as u64))
            .map_err(|e| self.err(e))
    }

    /// Raises `partner`'s watermark to `alert`.
    pub fn set_watermark(&self, partner: &str, alert: u64) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO watermarks (partner, alert_id) VALUES (?1, ?2)
                 ON CONFLICT (partner) DO UPDATE SET alert_id = MAX(alert_id, excluded.alert_id)",
                params![partner, ns(alert)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The pending alerts due at `now_ns`: (partner, alert).
    pub fn due(&self, now_ns: u64) -> Result<Vec<(String, u64)>, LedgerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT partner, alert_id FROM pending WHERE due_ns <= ?1 ORDER BY due_ns LIMIT 256",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![ns(now_ns)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Queues `objects` (id, version, body) of `alert` for `partner` —
    /// each version once — and clears the alert's pending mark, in one
    /// transaction. What the alert had queued and not yet sent, and is not
    /// in `objects`, is superseded (never sent: the partner gets the
    /// latest state, not every intermediate one). Returns how many it
    /// queued (new versions, and superseded ones queued again).
    pub fn enqueue(
        &mut self,
        partner: &str,
        alert: u64,
        objects: &[(String, String, String)],
        now_ns: u64,
    ) -> Result<usize, LedgerError> {
        let path = self.path.clone();
        let err = |source| LedgerError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut new = 0;
        {
            tx.execute(
                "UPDATE outbox SET state = 'superseded', done_ns = ?3, body = ''
                 WHERE partner = ?1 AND alert_id = ?2 AND state = 'queued'",
                params![partner, ns(alert), ns(now_ns)],
            )
            .map_err(err)?;
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO outbox (partner, object_id, version, alert_id, body, queued_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (partner, object_id, version) DO UPDATE
                         SET state = 'queued', done_ns = NULL, body = excluded.body
                         WHERE state = 'superseded'",
                )
                .map_err(err)?;
            for (id, version, body) in objects {
                new += st
                    .execute(params![partner, id, version, ns(alert), body, ns(now_ns)])
                    .map_err(err)?;
            }
            tx.execute(
                "DELETE FROM pending WHERE partner = ?1 AND alert_id = ?2",
                params![partner, ns(alert)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(new)
    }

    /// Drops `alert`'s pending mark (nothing to share: it is gone, or no
    /// longer qualifies).
    pub fn drop_pending(&self, partner: &str, alert: u64) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "DELETE FROM pending WHERE partner = ?1 AND alert_id = ?2",
                params![partner, ns(alert)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The oldest queued objects of `partner`, at most `limit`.
    pub fn queued(&self, partner: &str, limit: usize) -> Result<Vec<Queued>, LedgerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, object_id, version, body FROM outbox
                 WHERE partner = ?1 AND state = 'queued' ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![partner, limit as i64], |r| {
                Ok(Queued {
                    seq: r.get(0)?,
                    object_id: r.get(1)?,
                    version: r.get(2)?,
                    body: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records a push's outcome: each row sent or rejected (with the
    /// partner's message), and the partner's last success.
    pub fn delivered(
        &mut self,
        partner: &str,
        outcomes: &[(i64, Option<String>)],
        now_ns: u64,
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let err = |source| LedgerError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE outbox SET state = ?2, done_ns = ?3, message = ?4, body = '' WHERE seq = ?1",
                )
                .map_err(err)?;
            for (seq, rejected) in outcomes {
                let state = if rejected.is_some() {
                    "rejected"
                } else {
                    "sent"
                };
                st.execute(params![seq, state, ns(now_ns), rejected])
                    .map_err(err)?;
            }
            tx.execute(
                "INSERT INTO partners (name, last_success_ns, consecutive_failures) VALUES (?1, ?2, 0)
                 ON CONFLICT (name) DO UPDATE SET last_success_ns = ?2, consecutive_failures = 0",
                params![partner, ns(now_ns)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Records a failed push.
    pub fn failed(&self, partner: &str, error: &str, now_ns: u64) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO partners (name, last_failure_ns, last_error, failures, consecutive_failures)
                 VALUES (?1, ?2, ?3, 1, 1)
                 ON CONFLICT (name) DO UPDATE SET last_failure_ns = ?2, last_error = ?3,
                     failures = failures + 1, consecutive_failures = consecutive_failures + 1",
                params![partner, ns(now_ns), error],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets the objects sent, refused or superseded before `before_ns`,
    /// but for those whose ids recur across alerts and versions (the
    /// identity, markings, attack patterns, addresses), which stay so that
    /// they are never sent twice. Returns how many rows went.
    pub fn prune(&self, before_ns: u64) -> Result<usize, LedgerError> {
        self.conn
            .execute(
                "DELETE FROM outbox WHERE state != 'queued' AND done_ns < ?1
                 AND object_id NOT LIKE 'identity--%'
                 AND object_id NOT LIKE 'marking-definition--%'
                 AND object_id NOT LIKE 'attack-pattern--%'
                 AND object_id NOT LIKE 'extension-definition--%'
                 AND object_id NOT LIKE 'ipv4-addr--%'
                 AND object_id NOT LIKE 'ipv6-addr--%'",
                params![ns(before_ns)],
            )
            .map_err(|e| self.err(e))
    }

    /// Records an exported evidence bundle (`partner` empty: plain) and
    /// who took it (`by`: an analyst's identity, a token's name, the local
    /// administrator).
    pub fn record_export(&self, e: &ExportRecord) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO exports (alert_id, partner, sha256, bytes, created_ns, exported_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    ns(e.alert),
                    e.partner,
                    e.sha256,
                    ns(e.bytes),
                    ns(e.created_ns),
                    e.by
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Every bundle exported of `alert`, oldest first: the custody trail.
    pub fn exports(&self, alert: u64) -> Result<Vec<ExportRecord>, LedgerError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT partner, sha256, bytes, created_ns, exported_by FROM exports
                 WHERE alert_id = ?1 ORDER BY created_ns, sha256",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![ns(alert)], |r| {
                Ok(ExportRecord {
                    alert,
                    partner: r.get(0)?,
                    sha256: r.get(1)?,
                    bytes: r.get::<_, i64>(2)? as u64,
                    created_ns: r.get::<_, i64>(3)? as u64,
                    by: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The latest bundle exported of `alert` for `partner` (empty: plain).
    pub fn latest_export(&self, alert: u64, partner: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT sha256 FROM exports WHERE alert_id = ?1 AND partner = ?2
                 ORDER BY created_ns DESC LIMIT 1",
                params![ns(alert), partner],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every partner's state, for those named (in that order) and any
    /// other the ledger knows.
    pub fn status(&self, names: &[String]) -> Result<Vec<PartnerStatus>, LedgerError> {
        let mut all: Vec<String> = names.to_vec();
        let mut st = self
            .conn
            .prepare(
                "SELECT name FROM partners UNION SELECT partner FROM outbox
                 UNION SELECT partner FROM pending ORDER BY 1",
            )
            .map_err(|e| self.err(e))?;
        let known = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        for k in known {
            let k = k.map_err(|e| self.err(e))?;
            if !all.contains(&k) {
                all.push(k);
            }
        }
        let mut out = Vec::with_capacity(all.len());
        for name in all {
            let mut s = PartnerStatus {
                partner: name.clone(),
                ..PartnerStatus::default()
            };
            let mut counts = self
                .conn
                .prepare_cached(
                    "SELECT state, COUNT(*) FROM outbox WHERE partner = ?1 GROUP BY state",
                )
                .map_err(|e| self.err(e))?;
            let rows = counts
                .query_map(params![name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (state, n) = row.map_err(|e| self.err(e))?;
                match state.as_str() {
                    "queued" => s.queued = n,
                    "sent" => s.sent = n,
                    "rejected" => s.rejected = n,
                    "superseded" => s.superseded = n,
                    _ => {}
                }
            }
            s.pending_alerts = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM pending WHERE partner = ?1",
                    params![name],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| self.err(e))? as u64;
            let p = self
                .conn
                .query_row(
                    "SELECT last_success_ns, last_failure_ns, last_error, failures, consecutive_failures
                     FROM partners WHERE name = ?1",
                    params![name],
                    |r| {
                        Ok((
                            r.get::<_, Option<i64>>(0)?,
                            r.get::<_, Option<i64>>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some((ok, bad, e, f, c)) = p {
                s.last_success_ns = ok.map(|v| v as u64);
                s.last_failure_ns = bad.map(|v| v as u64);
                s.last_error = e;
                s.failures = f as u64;
                s.consecutive_failures = c as u64;
            }
            out.push(s);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(id: &str, v: &str) -> (String, String, String) {
        (
            id.into(),
            v.into(),
            format!("{{\"id\":\"{id}\",\"modified\":\"{v}\"}}"),
        )
    }

    #[test]
    fn each_version_is_queued_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        // New: held for its delay (a second mark changes nothing).
        l.mark_pending("cert", 7, 50, 50, 1000).unwrap();
        l.mark_pending("cert", 7, 60, 50, 1000).unwrap();
        assert!(l.due(99).unwrap().is_empty());
        assert_eq!(l.due(100).unwrap(), vec![("cert".to_string(), 7)]);
        let v1 = [obj("incident--a", "1"), obj("identity--b", "0")];
        assert_eq!(l.enqueue("cert", 7, &v1, 100).unwrap(), 2);
        assert!(l.due(1000).unwrap().is_empty());
        // Queued already: an update is due after the update interval.
        l.mark_pending("cert", 7, 110, 50, 5).unwrap();
        assert!(l.due(114).unwrap().is_empty());
        assert_eq!(l.due(115).unwrap(), vec![("cert".to_string(), 7)]);
        assert_eq!(l.watermark("cert").unwrap(), None);
        l.set_watermark("cert", 7).unwrap();
        l.set_watermark("cert", 3).unwrap();
        assert_eq!(l.watermark("cert").unwrap(), Some(7));
        // An update: the incident's new version is new, the identity is not;
        // the unsent version 1 is superseded.
        let v2 = [obj("incident--a", "2"), obj("identity--b", "0")];
        assert_eq!(l.enqueue("cert", 7, &v2, 101).unwrap(), 2);
        drop(l);

        let mut l = Ledger::open(dir.path()).unwrap();
        let q = l.queued("cert", 10).unwrap();
        let ids: Vec<_> = q
            .iter()
            .map(|x| (x.object_id.as_str(), x.version.as_str()))
            .collect();
        assert_eq!(ids, [("identity--b", "0"), ("incident--a", "2")]);
        l.failed("cert", "connection refused", 150).unwrap();
        l.delivered(
            "cert",
            &[(q[0].seq, None), (q[1].seq, Some("duplicate".into()))],
            200,
        )
        .unwrap();
        assert!(l.queued("cert", 10).unwrap().is_empty());
        // Version 3 after the sent ones: only it is queued.
        let v3 = [obj("incident--a", "3"), obj("identity--b", "0")];
        assert_eq!(l.enqueue("cert", 7, &v3, 300).unwrap(), 1);
        assert_eq!(l.queued("cert", 10).unwrap().len(), 1);
        let s = &l.status(&["cert".into(), "idle".into()]).unwrap();
        assert_eq!(s[0].pending_alerts, 0, "enqueued: no longer pending");
        assert_eq!(
            s[0],
            PartnerStatus {
                partner: "cert".into(),
                queued: 1,
                sent: 1,
                rejected: 1,
                superseded: 1,
                pending_alerts: 0,
                last_success_ns: Some(200),
                last_failure_ns: Some(150),
                last_error: Some("connection refused".into()),
                failures: 1,
                consecutive_failures: 0,
            }
        );
        assert_eq!(s[1].partner, "idle");
        assert_eq!(s[1].queued, 0);
        // Old done rows go (versions 1 and 2, superseded and refused), but
        // the identity's, which recurs, stays: it is never sent twice.
        assert_eq!(l.prune(250).unwrap(), 2);
        let again = [obj("identity--b", "0")];
        assert_eq!(l.enqueue("cert", 8, &again, 400).unwrap(), 0);
        assert_eq!(l.queued("cert", 10).unwrap().len(), 1, "version 3 only");
    }

    #[test]
    fn the_latest_export_of_an_alert_is_found_per_partner() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.latest_export(1, "").unwrap(), None);
        let rec = |partner: &str, sha: &str, t: u64, by: &str| ExportRecord {
            alert: 1,
            partner: partner.into(),
            sha256: sha.into(),
            bytes: 10,
            created_ns: t,
            by: by.into(),
        };
        l.record_export(&rec("", "aa", 1, "alice (client certificate)"))
            .unwrap();
        l.record_export(&rec("", "bb", 2, "bob (API token 1234abcd)"))
            .unwrap();
        l.record_export(&rec("cert", "cc", 3, "local administrator"))
            .unwrap();
        assert_eq!(l.latest_export(1, "").unwrap().as_deref(), Some("bb"));
        assert_eq!(l.latest_export(1, "cert").unwrap().as_deref(), Some("cc"));
        // The custody trail: every export, who took it, in order.
        let trail = l.exports(1).unwrap();
        assert_eq!(
            trail,
            vec![
                rec("", "aa", 1, "alice (client certificate)"),
                rec("", "bb", 2, "bob (API token 1234abcd)"),
                rec("cert", "cc", 3, "local administrator"),
            ]
        );
        assert!(l.exports(2).unwrap().is_empty());
    }

    #[test]
    fn a_ledger_from_before_the_custody_trail_gains_its_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("share")).unwrap();
        let c = Connection::open(dir.path().join(LEDGER)).unwrap();
        c.execute_batch(
            "CREATE TABLE exports (alert_id INTEGER NOT NULL, partner TEXT NOT NULL,
             sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, created_ns INTEGER NOT NULL,
             PRIMARY KEY (alert_id, partner, sha256));
             INSERT INTO exports VALUES (7, '', 'old', 5, 9);",
        )
        .unwrap();
        drop(c);
        let l = Ledger::open(dir.path()).unwrap();
        let trail = l.exports(7).unwrap();
        assert_eq!(trail.len(), 1);
        assert_eq!(
            (trail[0].sha256.as_str(), trail[0].by.as_str()),
            ("old", "")
        );
        // Opened again: the column is not added twice.
        drop(l);
        Ledger::open(dir.path()).unwrap();
    }
}
