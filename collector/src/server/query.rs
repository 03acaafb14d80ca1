//! The `Query` gRPC service: flows, top-N, totals and time series in the
//! query language, over the store; and the sensors' status.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use vigil_proto::pb::query_server::Query;
use vigil_proto::{FlowRecord, pb};

use super::Shared;
use super::failure::Failure;
use crate::model::query::{Filter, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals};
use crate::query::parse;
use crate::store::plan::{self, Select};
use crate::store::{Store, StoreError};

/// The service.
#[derive(Clone, Debug)]
pub struct QuerySvc(pub(super) Arc<Shared>);

/// Rows per page of a flow query (and per chunk on the wire).
const FLOW_PAGE: usize = 4096;

type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::FlowChunk, Status>> + Send>>;

/// A stored record as the wire has it.
pub fn stored_flow((sensor, r): &(String, FlowRecord)) -> pb::StoredFlow {
    pb::StoredFlow {
        sensor_id: sensor.clone(),
        flow: Some(pb::Flow::from(r)),
    }
}

/// A wire time range (0: unbounded).
pub fn range_of(r: Option<pb::TimeRange>) -> TimeRange {
    let r = r.unwrap_or_default();
    TimeRange {
        since_ns: (r.since_ns != 0).then_some(r.since_ns),
        until_ns: (r.until_ns != 0).then_some(r.until_ns),
    }
}

fn filter_of(text: &str) -> Result<Filter, Failure> {
    parse(text).map_err(|e| Failure::peer(Code::InvalidArgument, e.to_string()))
}

/// Runs a store call on a blocking thread; a failure is logged at its
/// cause's level and becomes the peer's status.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    let r = match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Failure::from),
        Err(e) => Err(Failure::from(e)),
    };
    if let Err(f) = &r {
        f.log(what, "query");
    }
    r
}

/// How the store answers a plan, when `explain` is asked.
fn explained(
    explain: bool,
    lines: impl FnOnce() -> Result<Vec<String>, StoreError>,
) -> Result<Option<Vec<String>>, StoreError> {
    explain.then(lines).transpose()
}

/// A top-N and, when asked, how the store answered it (gRPC and HTTP).
pub fn top_answer(
    store: &dyn Store,
    (filter, range): (&Filter, TimeRange),
    (key, by, limit): (TopKey, TopBy, usize),
    explain: bool,
) -> Result<(Vec<TopRow>, Option<Vec<String>>), StoreError> {
    let lines = explained(explain, || {
        store.explain(&plan::top(filter, range, key, by, limit, store.rollups()))
    })?;
    Ok((store.top(filter, range, key, by, limit)?, lines))
}

/// Totals and, when asked, how the store answered them.
pub fn count_answer(
    store: &dyn Store,
    filter: &Filter,
    range: TimeRange,
    explain: bool,
) -> Result<(Totals, Option<Vec<String>>), StoreError> {
    let lines = explained(explain, || {
        store.explain(&plan::count(filter, range, store.rollups()))
    })?;
    Ok((store.count(filter, range)?, lines))
}

/// A time series (the intervals with flows) and, when asked, how the
/// store answered it.
pub fn series_answer(
    store: &dyn Store,
    filter: &Filter,
    range: TimeRange,
    step_ns: u64,
    explain: bool,
) -> Result<(Vec<SeriesPoint>, Option<Vec<String>>), StoreError> {
    let lines = explained(explain, || {
        store.explain(&plan::series(filter, range, step_ns, store.rollups())?)
    })?;
    Ok((store.series(filter, range, step_ns)?, lines))
}

/// A page of stored flows: at most `limit` after `offset`, whether more
/// follow, and, when asked, how the store read them.
pub type FlowPage = (Vec<(String, FlowRecord)>, bool, Option<Vec<String>>);

/// [`FlowPage`] of `filter` over `range` (HTTP API and console).
pub fn flow_page(
    store: &dyn Store,
    (filter, range): (&Filter, TimeRange),
    (offset, limit): (usize, usize),
    explain: bool,
) -> Result<FlowPage, StoreError> {
    // One more than asked: whether there is a next page.
    let plan = Select {
        offset,
        ..plan::select(filter, range, limit.saturating_add(1))
    };
    let lines = explained(explain, || store.explain_select(&plan))?;
    let mut rows = store.select(&plan)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, more, lines))
}

#[tonic::async_trait]
impl Query for QuerySvc {
    type FlowsStream = ChunkStream;

    async fn flows(&self, req: Request<pb::FlowQuery>) -> Result<Response<ChunkStream>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        let range = range_of(q.range);
        let max = self.0.max_query_flows;
        let limit = if q.limit == 0 { max } else { q.limit.min(max) } as usize;
        let store = self.0.store.clone();
        // Pages from a blocking thread through a short queue: a query
        // holds a few pages in memory however many rows it returns, and a
        // slow reader holds the store's cursor back, not the collector's
        // memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::FlowChunk, Status>>(2);
        let plan = crate::store::plan::select(&filter, range, limit);
        tokio::task::spawn_blocking(move || {
            let explained = if q.explain {
                store.explain_select(&plan).map(|explain| {
                    let _ = tx.blocking_send(Ok(pb::FlowChunk {
                        flows: Vec::new(),
                        explain,
                    }));
                })
            } else {
                Ok(())
            };
            let sent = explained.and_then(|()| {
                store.select_pages(&plan, FLOW_PAGE, &mut |rows| {
                    let chunk = pb::FlowChunk {
                        flows: rows.iter().map(stored_flow).collect(),
                        explain: Vec::new(),
                    };
                    tx.blocking_send(Ok(chunk)).is_ok()
                })
            });
            if let Err(e) = sent {
                let f = Failure::from(&e);
                f.log("flow query", "query");
                let _ = tx.blocking_send(Err(f.status()));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn top(&self, req: Request<pb::TopQuery>) -> Result<Response<pb::TopReply>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        let bad = |what: &str, v: i32| {
            Failure::peer(Code::InvalidArgument, format!("{what}: unknown value {v}"))
        };
        let Some(key) = pb::TopKey::try_from(q.key).ok().and_then(TopKey::from_wire) else {
            return Err(bad("key", q.key).into());
        };
        let by = match pb::TopBy::try_from(q.by) {
            Ok(pb::TopBy::Bytes) => TopBy::Bytes,
            Ok(pb::TopBy::Packets) => TopBy::Packets,
            Ok(pb::TopBy::Flows) => TopBy::Flows,
            _ => return Err(bad("by", q.by).into()),
        };
        let limit = q.limit.clamp(1, 10_000) as usize;
        let range = range_of(q.range);
        let store = self.0.store.clone();
        let (rows, explain) = blocking("top-N query", move || {
            top_answer(
                store.as_ref(),
                (&filter, range),
                (key, by, limit),
                q.explain,
            )
        })
        .await?;
        Ok(Response::new(pb::TopReply {
            explain: explain.unwrap_or_default(),
            rows: rows
                .into_iter()
                .map(|r| pb::TopRow {
                    key: r.key,
                    flows: r.totals.flows,
                    packets: r.totals.packets,
                    bytes: r.totals.bytes,
                })
                .collect(),
        }))
    }

    async fn count(
        &self,
        req: Request<pb::CountQuery>,
    ) -> Result<Response<pb::CountReply>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        let range = range_of(q.range);
        let store = self.0.store.clone();
        let (t, explain) = blocking("count query", move || {
            count_answer(store.as_ref(), &filter, range, q.explain)
        })
        .await?;
        Ok(Response::new(pb::CountReply {
            explain: explain.unwrap_or_default(),
            flows: t.flows,
            packets: t.packets,
            bytes: t.bytes,
        }))
    }

    async fn series(
        &self,
        req: Request<pb::SeriesQuery>,
    ) -> Result<Response<pb::SeriesReply>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        // The planner checks the step (a bad one is the peer's fault).
        let range = range_of(q.range);
        let store = self.0.store.clone();
        let step = q.step_ns;
        let (points, explain) = blocking("series query", move || {
            series_answer(store.as_ref(), &filter, range, step, q.explain)
        })
        .await?;
        Ok(Response::new(pb::SeriesReply {
            explain: explain.unwrap_or_default(),
            points: points
                .into_iter()
                .map(|p| pb::SeriesPoint {
                    start_ns: p.start_ns,
                    flows: p.totals.flows,
                    packets: p.totals.packets,
                    bytes: p.totals.bytes,
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(status_reply(&self.0).await?))
    }
}

/// Every sensor the store knows, with its id conflicts filled in, and
/// whether a stream of it is open.
pub async fn sensor_records(
    shared: &Arc<Shared>,
) -> Result<Vec<(crate::store::SensorRecord, bool)>, Failure> {
    let store = shared.store.clone();
    let sensors = blocking("sensor status", move || store.sensors()).await?;
    let connected = shared
        .connected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(sensors
        .into_iter()
        .map(|mut s| {
            let link = connected.get(&s.sensor_id);
            s.id_conflicts = link.map_or(0, |l| l.conflicts);
            let open = link.is_some_and(|l| l.connected());
            (s, open)
        })
        .collect())
}

/// Every sensor the store knows, with whether a stream of it is open, and
/// the collector's detection counters.
pub async fn status_reply(shared: &Arc<Shared>) -> Result<pb::StatusReply, Failure> {
    let sensors = sensor_records(shared).await?;
    let stored_flows = sensors.iter().map(|(s, _)| s.flows).sum();
    Ok(pb::StatusReply {
        sensors: sensors
            .into_iter()
            .map(|(s, connected)| pb::SensorStatus {
                connected,
                id_conflicts: s.id_conflicts,
                incarnation: s.incarnation,
                seq_resets: s.seq_resets,
                sensor_id: s.sensor_id,
                last_seq: s.last_seq,
                batches: s.batches,
                flows: s.flows,
                duplicates: s.duplicates,
                seq_gaps: s.seq_gaps,
                last_seen_ns: s.last_seen_ns,
                stats: Some(s.stats),
            })
            .collect(),
        stored_flows,
        detected_flows: shared.metrics.detect_flows.get(),
        alerts_opened: shared.metrics.alerts_opened(),
        refusals: shared.metrics.refusals(),
    })
}
