//! The `Evidence` gRPC service: the collector's public key (to anyone),
//! and alerts' evidence bundles (to analysts), streamed in chunks.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use vigil_proto::pb;
use vigil_proto::pb::evidence_server::Evidence;

use super::Shared;
use super::access::{Principal, refused};
use super::failure::Failure;
use super::query::blocking;
use crate::evidence::ExportError;

/// Bytes per `BundleChunk`.
const CHUNK: usize = 1 << 20;

/// The service.
#[derive(Clone, Debug)]
pub struct EvidenceSvc(pub(super) Arc<Shared>);

type ChunkStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::BundleChunk, Status>> + Send>>;

fn no_key() -> Status {
    Failure::peer(
        Code::FailedPrecondition,
        "this collector has no evidence signing key (no data directory, no evidence.signing_key)",
    )
    .status()
}

#[tonic::async_trait]
impl Evidence for EvidenceSvc {
    type ExportStream = ChunkStream;

    async fn key(&self, _req: Request<pb::KeyRequest>) -> Result<Response<pb::KeyReply>, Status> {
        let Some(k) = &self.0.key else {
            return Err(no_key());
        };
        Ok(Response::new(pb::KeyReply {
            public_key_pem: k.public_pem(),
            fingerprint: k.fingerprint(),
        }))
    }

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        // Bundles hold flows: analysts only (the key above is public).
        let checked = match Principal::of(&req) {
            Ok(p) => self.0.access.may_read(&p).map_err(|f| (f, p.describe())),
            Err(f) => Err((f, "an unreadable client certificate".to_string())),
        };
        if let Err((f, who)) = checked {
            refused(&self.0, "evidence", req.remote_addr(), &who, &f);
            return Err(f.status());
        }
        let Some(key) = self.0.key.clone() else {
            return Err(no_key());
        };
        let id = req.into_inner().alert_id;
        let store = self.0.store.clone();
        let exported = blocking("exporting evidence", move || match crate::evidence::export(
            store.as_ref(),
            &key,
            id,
            vigil_proto::time::now_ns(),
        ) {
            Ok(e) => Ok(Ok(e)),
            Err(ExportError::Store(e)) => Err(e),
            Err(e) => Ok(Err(e)),
        })
        .await?;
        let exported = match exported {
            Ok(e) => e,
            Err(ExportError::NoAlert(id)) => {
                return Err(Failure::peer(Code::NotFound, format!("no alert {id}")).status());
            }
            Err(e) => return Err(Failure::peer(Code::Internal, e.to_string()).status()),
        };
        tracing::info!(
            alert = id,
            flows = exported.flows,
            attested = exported.attested,
            bytes = exported.bytes.len(),
            "evidence bundle exported"
        );
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for c in exported.bytes.chunks(CHUNK) {
                if tx
                    .send(Ok(pb::BundleChunk { data: c.to_vec() }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
