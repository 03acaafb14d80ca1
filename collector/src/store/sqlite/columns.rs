//! The embedded store's column segments ([`crate::store::columns`]):
//! built from `flows` as row ranges close, registered in
//! `column_segments`, dropped when retention deletes a row they hold, and
//! read by aggregates beside SQLite, which answers for the rows no segment
//! holds (the newest, at most [`SEGMENT_ROWS`]).
//!
//! Invariant: a registered segment `lo..hi` holds exactly the rows of
//! `flows` whose row id is in `lo..hi`. Registration checks it against
//! `flows` under the writer's lock; new rows take ids above every stored
//! one, so never inside a registered range while its last row stands; the
//! only deletion (retention) deregisters, in its own transaction, every
//! segment it deletes a row of.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use vigil_proto::wire::ip_from_bytes;

use super::SqliteStore;
use crate::model::query::{Cmp, TimeRange};
use crate::store::StoreError;
use crate::store::columns::{
    AddrIndex, Col, ColumnRow, SEGMENT_ROWS, Segment, SegmentBuilder, Verify,
};

/// The registry's schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS column_segments (
    lo INTEGER PRIMARY KEY,
    hi INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    file TEXT NOT NULL
);";

/// The columns a segment is built from, in [`SqliteStore::segment_row`]'s
/// order.
const BUILD_COLUMNS: &str = "rowid, first_ns, src_ip, dst_ip, src_port, dst_port, proto, \
    conn_state, fwd_packets + rev_packets, fwd_bytes + rev_bytes, sensor, community_id, vlan, \
    app_proto, app_name, app_fp, ics_reads, ics_writes, ics_control";

/// Rows in no segment a query reads into memory at most: a segment's
/// worth and a half (the newest rows, before the upkeep builds their
/// segment, or a segment that did not read); past it, SQL reads them.
pub(super) const MEMORY_ROWS: usize = SEGMENT_ROWS * 3 / 2;

/// The newest rows, in no segment yet, kept in memory between queries:
/// those from row id `lo` to `last`, and their segment's bytes.
#[derive(Debug)]
pub(super) struct Newest {
    lo: i64,
    last: i64,
    builder: SegmentBuilder,
    bytes: Vec<u8>,
}

/// The segments a query reads and the row-id ranges it reads from SQLite.
#[derive(Debug, Default)]
pub(super) struct Coverage {
    /// Open segments, by `lo`.
    pub segments: Vec<Segment>,
    /// Row-id ranges `lo..hi` no open segment holds that hold rows, each
    /// from its first row.
    pub gaps: Vec<(i64, i64)>,
}

/// The address dictionaries over the registered segments
/// ([`AddrIndex`]), sources and destinations, kept up to date by
/// [`SqliteStore::build_columns`] and read by aggregates grouping by
/// address.
#[derive(Debug, Default)]
pub(super) struct AddrIndexes {
    by_col: [Mutex<Option<Arc<AddrIndex>>>; 2],
    /// Built once at least (the first upkeep builds them over the
    /// segments found at open).
    built: AtomicBool,
}

impl AddrIndexes {
    fn slot(&self, c: Col) -> &Mutex<Option<Arc<AddrIndex>>> {
        &self.by_col[usize::from(c == Col::Dst)]
    }

    /// The index of an address column ([`Col::Src`], [`Col::Dst`]), if
    /// one is kept.
    pub(super) fn get(&self, c: Col) -> Option<Arc<AddrIndex>> {
        self.slot(c)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl SqliteStore {
    /// Brings the address dictionaries up to the registered segments; a
    /// segment that does not read leaves them as they were (queries then
    /// group through partitions), with a warning.
    fn index_addresses(&self) -> Result<(), StoreError> {
        let cov = self.in_snapshot(|c| self.coverage(c))?;
        for c in [Col::Src, Col::Dst] {
            let old = self.addr_index.get(c).unwrap_or_default();
            match old.updated(&cov.segments, c) {
                Ok(ix) => {
                    *self
                        .addr_index
                        .slot(c)
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = ix.map(Arc::new);
                }
                Err(e) => tracing::warn!(error = %e, "address dictionary not updated"),
            }
        }
        self.addr_index.built.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The segments directory.
    fn columns_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join("columns")
    }

    /// The registry, by `lo`: `(lo, hi, file)` of each segment (none in a
    /// database of an older layout).
    fn registered(&self, conn: &Connection) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let sql = |e| self.err("reading the column segments", e);
        if !super::has_table(conn, "column_segments").map_err(sql)? {
            return Ok(Vec::new());
        }
        conn.prepare_cached("SELECT lo, hi, file FROM column_segments ORDER BY lo")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sql)
    }

    /// The row-id ranges outside `covered` (ascending `lo..hi` ranges) that
    /// hold rows, each from its first row: usually the newest rows alone,
    /// so that SQLite reads one row-id range.
    fn gaps(
        &self,
        conn: &Connection,
        covered: impl Iterator<Item = (i64, i64)>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut all = Vec::new();
        let mut next = 0;
        for (lo, hi) in covered {
            if next < lo {
                all.push((next, lo));
            }
            next = hi;
        }
        all.push((next, i64::MAX));
        let mut first = conn
            .prepare_cached("SELECT MIN(rowid) FROM flows WHERE rowid >= ?1 AND rowid < ?2")
            .map_err(|e| self.err("finding rows without columns", e))?;
        let mut out = Vec::with_capacity(all.len());
        for (lo, hi) in all {
            let row: Option<i64> = first
                .query_row([lo, hi], |r| r.get(0))
                .map_err(|e| self.err("finding rows without columns", e))?;
            if let Some(row) = row {
                out.push((row, hi));
            }
        }
        Ok(out)
    }

    /// The registered segments, opened (those that do not open are left
    /// to SQLite, with a warning), and the gaps between them; read in
    /// `conn`'s current transaction.
    pub(super) fn coverage(&self, conn: &Connection) -> Result<Coverage, StoreError> {
        let mut cov = Coverage::default();
        if self.columns {
            let dir = self.columns_dir();
            for (lo, hi, file) in self.registered(conn)? {
                match Segment::open(&dir.join(&file)) {
                    Ok(seg) if seg.lo == lo && seg.hi == hi => cov.segments.push(seg),
                    Ok(seg) => tracing::warn!(
                        file = %seg.path().display(),
                        "column segment holds other rows than registered; reading them from the database"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "column segment unreadable; reading its rows from the database")
                    }
                }
            }
        }
        cov.gaps = self.gaps(conn, cov.segments.iter().map(|s| (s.lo, s.hi)))?;
        Ok(cov)
    }

    /// Builds and registers every segment that can be closed: full ranges
    /// of [`SEGMENT_ROWS`] rows after the last segment, and the rows
    /// between segments that retention left; then brings the address
    /// dictionaries over them up to date. Returns the segments built.
    pub fn build_columns(&self) -> Result<usize, StoreError> {
        if self.read_only {
            return Ok(0);
        }
        let built = self.build_segments()?;
        if self.columns && (built > 0 || !self.addr_index.built.load(Ordering::Relaxed)) {
            self.index_addresses()?;
        }
        Ok(built)
    }

    fn build_segments(&self) -> Result<usize, StoreError> {
        let dir = self.columns_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        self.tidy(&dir)?;
        let mut built = 0;
        loop {
            // The first gap that holds rows, bounded by the next segment
            // (the registry holds only readable segments after `tidy`).
            let todo = self.with_reader(|c| {
                let registered = self.registered(c)?;
                let gaps = self.gaps(c, registered.iter().map(|(lo, hi, _)| (*lo, *hi)))?;
                Ok(gaps.first().copied())
            })?;
            let Some((from, bound)) = todo else {
                return Ok(built);
            };
            if !self.build_segment(&dir, from, bound)? {
                return Ok(built);
            }
            built += 1;
        }
    }

    /// Builds the segment of the rows from `from` (up to [`SEGMENT_ROWS`],
    /// below `bound`), if it can be closed. Returns whether one was built.
    fn build_segment(&self, dir: &Path, from: i64, bound: i64) -> Result<bool, StoreError> {
        let tail = bound == i64::MAX;
        let size = self
            .cfg
            .segment_rows
            .unwrap_or(SEGMENT_ROWS)
            .clamp(1, SEGMENT_ROWS);
        let (builder, last) = self.with_reader(|c| self.segment_rows(c, from, bound, size))?;
        if builder.rows() == 0 || tail && builder.rows() < size {
            return Ok(false);
        }
        // A full segment ends after its last row; one filling a gap ends
        // where the gap does.
        let hi = if builder.rows() == size || tail {
            last + 1
        } else {
            bound
        };
        let name = format!("{from:020}-{hi:020}-{}.col", vigil_proto::time::now_ns());
        let path = dir.join(&name);
        builder
            .write(&path, from, hi)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let registered = {
            let mut conn = self.lock_writer();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| self.err("registering a column segment", e))?;
            let (n, max): (i64, Option<i64>) = tx
                .query_row(
                    "SELECT COUNT(*), MAX(rowid) FROM flows WHERE rowid >= ?1 AND rowid < ?2",
                    [from, hi],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| self.err("registering a column segment", e))?;
            let overlaps: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM column_segments WHERE lo < ?2 AND hi > ?1)",
                    [from, hi],
                    |r| r.get(0),
                )
                .map_err(|e| self.err("registering a column segment", e))?;
            let same = n == builder.rows() as i64 && max == Some(last) && !overlaps;
            if same {
                tx.execute(
                    "INSERT INTO column_segments (lo, hi, rows, file) VALUES (?1, ?2, ?3, ?4)",
                    params![from, hi, n, name],
                )
                .map_err(|e| self.err("registering a column segment", e))?;
                tx.commit()
                    .map_err(|e| self.err("registering a column segment", e))?;
            }
            same
        };
        if !registered {
            // Rows changed meanwhile (retention): built again next time.
            let _ = std::fs::remove_file(&path);
        }
        Ok(registered)
    }

    /// The first `size` rows from row id `from`, below `bound`, as a
    /// segment's builder holds them, and the last one's row id (`from`
    /// when there is none).
    fn segment_rows(
        &self,
        c: &Connection,
        from: i64,
        bound: i64,
        size: usize,
    ) -> Result<(SegmentBuilder, i64), StoreError> {
        let mut b = SegmentBuilder::new();
        let last = self.segment_rows_into(c, (from, bound), size, &mut b)?;
        Ok((b, last.unwrap_or(from)))
    }

    /// Appends to `b` the first `size` rows from row id `from` below
    /// `bound`; the last one's row id, if any.
    fn segment_rows_into(
        &self,
        c: &Connection,
        (from, bound): (i64, i64),
        size: usize,
        b: &mut SegmentBuilder,
    ) -> Result<Option<i64>, StoreError> {
        let mut st = c
            .prepare_cached(&format!(
                "SELECT {BUILD_COLUMNS} FROM flows WHERE rowid >= ?1 AND rowid < ?2 ORDER BY rowid LIMIT ?3"
            ))
            .map_err(|e| self.err("reading flows for columns", e))?;
        let mut rows = st
            .query(params![from, bound, size as i64])
            .map_err(|e| self.err("reading flows for columns", e))?;
        let mut last = None;
        while let Some(row) = rows
            .next()
            .map_err(|e| self.err("reading flows for columns", e))?
        {
            last = Some(self.segment_row(row, b)?);
        }
        Ok(last)
    }

    /// The rows of `gaps` (the rows in no segment: usually the newest)
    /// read into segments held in memory, so that a query scans them with
    /// the others; `None` when they are more than [`MEMORY_ROWS`] (the
    /// query then reads them through SQL).
    pub(super) fn rows_in_memory(
        &self,
        c: &Connection,
        gaps: &[(i64, i64)],
    ) -> Result<Option<Vec<Segment>>, StoreError> {
        if let [(lo, i64::MAX)] = gaps
            && let Some(seg) = self.newest_in_memory(c, *lo)?
        {
            return Ok(Some(vec![seg]));
        }
        let mut out = Vec::new();
        let mut total = 0;
        for &(lo, hi) in gaps {
            let mut from = lo;
            loop {
                let (b, last) = self.segment_rows(c, from, hi, SEGMENT_ROWS)?;
                if b.rows() == 0 {
                    break;
                }
                total += b.rows();
                if total > MEMORY_ROWS {
                    return Ok(None);
                }
                let name = PathBuf::from(format!("rows {from}..{} in memory", last + 1));
                let seg = Segment::in_memory(b.bytes(from, last + 1), &name)
                    .map_err(|e| self.corrupt(e.to_string()))?;
                out.push(seg);
                from = last + 1;
            }
        }
        Ok(Some(out))
    }

    /// The rows from `lo` on (the newest, in no segment yet) as a segment
    /// in memory, from those kept since the last query and the rows
    /// committed since; `None` when they are more than a segment holds.
    fn newest_in_memory(&self, c: &Connection, lo: i64) -> Result<Option<Segment>, StoreError> {
        let mut kept = self
            .newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // What is kept still holds exactly the rows it read (none deleted
        // since), or it is read again.
        if let Some(k) = kept.as_ref() {
            let n: i64 = if k.lo == lo {
                c.query_row(
                    "SELECT COUNT(*) FROM flows WHERE rowid >= ?1 AND rowid <= ?2",
                    [k.lo, k.last],
                    |r| r.get(0),
                )
                .map_err(|e| self.err("reading flows for columns", e))?
            } else {
                -1
            };
            if n != k.builder.rows() as i64 {
                *kept = None;
            }
        }
        let k = match kept.as_mut() {
            Some(k) => k,
            None => kept.insert(Box::new(Newest {
                lo,
                last: lo - 1,
                builder: SegmentBuilder::new(),
                bytes: Vec::new(),
            })),
        };
        let room = SEGMENT_ROWS - k.builder.rows();
        let added = self.segment_rows_into(c, (k.last + 1, i64::MAX), room + 1, &mut k.builder)?;
        if k.builder.rows() > SEGMENT_ROWS {
            *kept = None;
            return Ok(None);
        }
        if let Some(last) = added {
            k.last = last;
            k.bytes = k.builder.bytes(k.lo, k.last + 1);
        }
        if k.builder.rows() == 0 {
            return Ok(None);
        }
        let name = PathBuf::from(format!("rows {}..{} in memory", k.lo, k.last + 1));
        Segment::in_memory(k.bytes.clone(), &name)
            .map(Some)
            .map_err(|e| self.corrupt(e.to_string()))
    }

    /// Appends a row of [`BUILD_COLUMNS`] to `b`; returns its row id.
    fn segment_row(
        &self,
        row: &rusqlite::Row<'_>,
        b: &mut SegmentBuilder,
    ) -> Result<i64, StoreError> {
        let sql = |e| self.err("reading flows for columns", e);
        let rowid: i64 = row.get(0).map_err(sql)?;
        let corrupt = |what: &str| self.corrupt(format!("flow {rowid}: {what}"));
        let u = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row.get(i).map_err(sql)?;
            u64::try_from(v).map_err(|_| corrupt("negative value"))
        };
        let ip = |i: usize| -> Result<std::net::IpAddr, StoreError> {
            let v = row
                .get_ref(i)
                .map_err(sql)?
                .as_blob()
                .map_err(|e| sql(e.into()))?;
            ip_from_bytes("address", v).map_err(|e| corrupt(&e.to_string()))
        };
        let port = |i: usize| -> Result<Option<u16>, StoreError> {
            let v: Option<i64> = row.get(i).map_err(sql)?;
            v.map(|p| u16::try_from(p).map_err(|_| corrupt("port")))
                .transpose()
        };
        let small = |i: usize| -> Result<u8, StoreError> {
            u8::try_from(u(i)?).map_err(|_| corrupt("protocol or state"))
        };
        let text = |i: usize| -> Result<&str, StoreError> {
            row.get_ref(i)
                .map_err(sql)?
                .as_str()
                .map_err(|e| sql(e.into()))
        };
        let cid = row
            .get_ref(11)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| sql(e.into()))?;
        b.push(&ColumnRow {
            rowid,
            first_ns: u(1)?,
            src: ip(2)?,
            dst: ip(3)?,
            src_port: port(4)?,
            dst_port: port(5)?,
            proto: small(6)?,
            state: small(7)?,
            packets: u(8)?,
            bytes: u(9)?,
            sensor: u(10)?,
            community_id: cid,
            vlan: u(12)?,
            app_proto: small(13)?,
            app_name: text(14)?,
            app_fp: text(15)?,
            ics: [u(16)?, u(17)?, u(18)?],
        });
        Ok(rowid)
    }

    /// Deregisters the segments whose file does not open as the segment
    /// registered (lost in a crash, damaged): their rows are read from
    /// SQLite, and built again. Deletes the files no registry row names
    /// (left by a crash between writing and registering, or between
    /// dropping and deleting).
    fn tidy(&self, dir: &Path) -> Result<(), StoreError> {
        let registered = self.with_reader(|c| self.registered(c))?;
        let mut known = Vec::with_capacity(registered.len());
        for (lo, hi, file) in registered {
            if Segment::open(&dir.join(&file)).is_ok_and(|s| s.lo == lo && s.hi == hi) {
                known.push(file);
                continue;
            }
            tracing::warn!(
                file,
                "column segment unreadable: dropped, to be built again"
            );
            self.lock_writer()
                .execute(
                    "DELETE FROM column_segments WHERE lo = ?1 AND file = ?2",
                    params![lo, file],
                )
                .map_err(|e| self.err("dropping a column segment", e))?;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// In a retention transaction whose doomed row ids are in `doomed`:
    /// deregisters every segment holding one of them. Returns their files,
    /// to delete once the transaction commits.
    pub(super) fn drop_doomed_segments(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let mut st = tx
            .prepare(
                "DELETE FROM column_segments WHERE EXISTS \
                 (SELECT 1 FROM doomed WHERE id >= column_segments.lo AND id < column_segments.hi) \
                 RETURNING file",
            )
            .map_err(|e| self.err("dropping column segments", e))?;
        let files: Vec<String> = st
            .query_map([], |r| r.get(0))
            .and_then(|r| r.collect())
            .map_err(|e| self.err("dropping column segments", e))?;
        let dir = self.columns_dir();
        Ok(files.into_iter().map(|f| dir.join(f)).collect())
    }

    /// How many rows the registered segments whose time overlaps `range`
    /// hold, and how many rows of `range` are in none (for `--explain`).
    pub(super) fn coverage_counts(
        &self,
        conn: &Connection,
        cov: &Coverage,
        range: TimeRange,
    ) -> Result<(u64, u64), StoreError> {
        let in_segments = cov
            .segments
            .iter()
            .filter(|s| {
                range.since_ns.is_none_or(|t| s.max_first >= t)
                    && range.until_ns.is_none_or(|t| s.min_first < t)
            })
            .map(|s| s.rows as u64)
            .sum();
        let mut outside = 0u64;
        let t =
            |ns: Option<u64>, none: i64| ns.map_or(none, |t| i64::try_from(t).unwrap_or(i64::MAX));
        for (lo, hi) in &cov.gaps {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM flows NOT INDEXED WHERE rowid >= ?1 AND rowid < ?2 \
                     AND first_ns >= ?3 AND first_ns < ?4",
                    [*lo, *hi, t(range.since_ns, 0), t(range.until_ns, i64::MAX)],
                    |r| r.get(0),
                )
                .map_err(|e| self.err("counting rows without columns", e))?;
            outside += n as u64;
        }
        Ok((in_segments, outside))
    }
}

impl Verify for SqliteStore {
    fn sensor_ids(&self, op: Cmp, name: &str) -> Result<Vec<u64>, StoreError> {
        self.with_reader(|c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT id FROM sensors WHERE name {} ?1",
                    op.as_str()
                ))
                .map_err(|e| self.err("reading sensors", e))?;
            let ids: Vec<i64> = st
                .query_map([name], |r| r.get(0))
                .and_then(|r| r.collect())
                .map_err(|e| self.err("reading sensors", e))?;
            Ok(ids.into_iter().map(|i| i as u64).collect())
        })
    }

    fn rows_with_cid(&self, rowids: &[i64], cid: &[u8]) -> Result<Vec<i64>, StoreError> {
        self.with_reader(|c| {
            let mut st = c
                .prepare_cached("SELECT community_id = ?2 FROM flows WHERE rowid = ?1")
                .map_err(|e| self.err("checking Community IDs", e))?;
            let mut out = Vec::new();
            for r in rowids {
                let hit: Option<bool> = st
                    .query_row(params![r, cid], |row| row.get(0))
                    .optional()
                    .map_err(|e| self.err("checking Community IDs", e))?;
                if hit == Some(true) {
                    out.push(*r);
                }
            }
            out.sort_unstable();
            Ok(out)
        })
    }
}
