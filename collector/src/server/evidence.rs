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

/// The collector signs no bundle: it has no key.
pub fn no_key() -> Failure {
    Failure::peer(
        Code::FailedPrecondition,
        "this collector has no evidence signing key (no data directory, no evidence.signing_key)",
    )
}

/// Records an exported bundle in the share ledger (shared incidents point
/// to it by SHA-256); a collector without a data directory has none.
pub fn record_export(
    data_dir: &std::path::Path,
    alert: u64,
    partner: Option<&crate::share::Partner>,
    bytes: &[u8],
    by: &str,
) {
    use sha2::Digest as _;
    if data_dir.as_os_str().is_empty() {
        return;
    }
    // A partner without anonymization gets the bundle as it is.
    let name = partner
        .filter(|p| p.anonymize.is_some())
        .map_or("", |p| p.name.as_str());
    let sha = vigil_proto::attest::hex(&sha2::Sha256::digest(bytes));
    let r = crate::share::ledger::Ledger::open(data_dir).and_then(|l| {
        l.record_export(&crate::share::ledger::ExportRecord {
            alert,
            partner: name.to_string(),
            sha256: sha,
            bytes: bytes.len() as u64,
            created_ns: vigil_proto::time::now_ns(),
            by: by.to_string(),
        })
    });
    if let Err(e) = r {
        tracing::warn!(alert, error = %e, "recording an exported evidence bundle");
    }
}

/// The custody trail of alert `id`: every evidence bundle exported of it,
/// who took it and when (empty without a data directory or a ledger).
pub async fn exports_of(
    shared: &Shared,
    id: u64,
) -> Result<Vec<crate::share::ledger::ExportRecord>, Failure> {
    let data_dir = shared.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        if data_dir.as_os_str().is_empty() {
            return Ok(Vec::new());
        }
        match crate::share::ledger::Ledger::open_existing(&data_dir) {
            Ok(Some(l)) => l.exports(id),
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| Failure::bug(format!("reading the custody trail: {e}")))?
    .map_err(|e| Failure::storage(format!("reading the custody trail: {e}")))
}

/// Alert `id`'s evidence bundle, made now (anonymized for `partner` when
/// its policy says) and recorded in the share ledger: for gRPC and HTTP.
/// The outer error is the store's; the inner says why there is no bundle.
pub async fn export_bundle(
    shared: &Shared,
    key: Arc<crate::evidence::CollectorKey>,
    id: u64,
    partner: Option<crate::share::Partner>,
    by: String,
) -> Result<Result<crate::evidence::Exported, ExportError>, Failure> {
    let store = shared.store.clone();
    let data_dir = shared.data_dir.clone();
    blocking("exporting evidence", move || {
        let anon = partner.as_ref().and_then(|p| {
            p.anonymize.as_ref().map(|a| crate::evidence::ForPartner {
                partner: &p.name,
                anonymizer: a,
            })
        });
        match crate::evidence::export_for(
            store.as_ref(),
            &key,
            id,
            vigil_proto::time::now_ns(),
            anon,
        ) {
            Ok(e) => {
                record_export(&data_dir, id, partner.as_ref(), &e.bytes, &by);
                Ok(Ok(e))
            }
            Err(ExportError::Store(e)) => Err(e),
            Err(e) => Ok(Err(e)),
        }
    })
    .await
}

#[tonic::async_trait]
impl Evidence for EvidenceSvc {
    type ExportStream = ChunkStream;

    async fn key(&self, _req: Request<pb::KeyRequest>) -> Result<Response<pb::KeyReply>, Status> {
        let Some(k) = &self.0.key else {
            return Err(no_key().status());
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
            Ok(p) => match self.0.access.may_read(&p) {
                Ok(()) => Ok(p.describe()),
                Err(f) => Err((f, p.describe())),
            },
            Err(f) => Err((f, "an unreadable client certificate".to_string())),
        };
        let by = match checked {
            Ok(by) => by,
            Err((f, who)) => {
                refused(&self.0, "evidence", req.remote_addr(), &who, &f);
                return Err(f.status());
            }
        };
        let Some(key) = self.0.key.clone() else {
            return Err(no_key().status());
        };
        let req = req.into_inner();
        let id = req.alert_id;
        let partner = if req.partner.is_empty() {
            None
        } else {
            let p = self
                .0
                .share_config
                .as_ref()
                .and_then(|s| s.partner(&req.partner))
                .ok_or_else(|| {
                    Failure::peer(
                        Code::InvalidArgument,
                        format!("no partner {:?} in [[share.partners]]", req.partner),
                    )
                    .status()
                })?;
            Some(p.clone())
        };
        let exported = export_bundle(&self.0, key, id, partner, by).await?;
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
