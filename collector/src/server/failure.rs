//! Every failure the collector answers a peer with, and who caused it.
//!
//! The cause decides both the gRPC status and the log level, in one place
//! ([`Failure::status`], [`Failure::log`]), so that no service decides for
//! itself: a peer's mistake is the peer's to fix (its own status code,
//! WARN), a storage failure is retried (UNAVAILABLE, ERROR: data waits in
//! the sensors' spools), another collector taking a sensor over ends its
//! stream here (ABORTED, WARN: the sensor resends on a new stream), the
//! collector shutting down ends streams (UNAVAILABLE, INFO), and a bug is
//! a bug (INTERNAL, ERROR).

use tonic::{Code, Status};

use crate::ingest::Rejection;
use crate::store::StoreError;

/// Who or what caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The peer sent something wrong or not allowed.
    Peer,
    /// The store failed or is away.
    Storage,
    /// Another collector took the sensor over.
    Handover,
    /// The collector is shutting down.
    Shutdown,
    /// A bug in the collector.
    Bug,
}

/// A failure to answer a peer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Who caused it.
    pub cause: Cause,
    code: Code,
    message: String,
    /// For a batch refused for its content: its seq, sent to the peer as
    /// [`REJECTED_SEQ`] metadata.
    rejected_seq: Option<u64>,
}

/// The metadata key naming the batch a sensor must drop: present only
/// when the batch's content was refused. Any other refusal leaves the
/// batch in the sensor's spool, retried.
pub const REJECTED_SEQ: &str = "vigil-rejected-seq";

impl Failure {
    /// The peer's fault, with the status code that tells it what.
    pub fn peer(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            cause: Cause::Peer,
            code,
            message: message.into(),
            rejected_seq: None,
        }
    }

    /// The store failed: the sensor keeps its batch and tries again.
    pub fn storage(message: impl Into<String>) -> Failure {
        Failure {
            cause: Cause::Storage,
            code: Code::Unavailable,
            message: message.into(),
            rejected_seq: None,
        }
    }

    /// Another collector took the sensor over since its stream opened.
    pub fn handover(message: impl Into<String>) -> Failure {
        Failure {
            cause: Cause::Handover,
            code: Code::Aborted,
            message: message.into(),
            rejected_seq: None,
        }
    }

    /// The collector is shutting down.
    pub fn shutdown() -> Failure {
        Failure {
            cause: Cause::Shutdown,
            code: Code::Unavailable,
            message: "the collector is shutting down".into(),
            rejected_seq: None,
        }
    }

    /// A bug.
    pub fn bug(message: impl Into<String>) -> Failure {
        Failure {
            cause: Cause::Bug,
            code: Code::Internal,
            message: message.into(),
            rejected_seq: None,
        }
    }

    /// The status the peer gets.
    pub fn status(&self) -> Status {
        let mut s = Status::new(self.code, self.message.clone());
        if let Some(seq) = self.rejected_seq
            && let Ok(v) = seq.to_string().parse()
        {
            s.metadata_mut().insert(REJECTED_SEQ, v);
        }
        s
    }

    /// Logs the failure at its cause's level, with `what` the collector
    /// was doing and for whom (`peer`: an address or a sensor id).
    pub fn log(&self, what: &'static str, peer: &str) {
        let (cause, msg) = (self.cause, self.message.as_str());
        match cause {
            Cause::Peer | Cause::Handover => {
                tracing::warn!(peer, ?cause, error = msg, "{what}");
            }
            Cause::Shutdown => tracing::info!(peer, error = msg, "{what}"),
            Cause::Storage | Cause::Bug => {
                tracing::error!(peer, ?cause, error = msg, "{what}");
            }
        }
    }
}

impl From<&StoreError> for Failure {
    fn from(e: &StoreError) -> Failure {
        let msg = format!("store: {e}");
        match e {
            StoreError::BadQuery(m) => Failure::peer(Code::InvalidArgument, m.clone()),
            StoreError::Fenced { .. } => Failure::handover(msg),
            StoreError::Corrupt { .. } | StoreError::Internal(_) | StoreError::Encode { .. } => {
                Failure::bug(msg)
            }
            StoreError::Sqlite { .. }
            | StoreError::ClickHouse { .. }
            | StoreError::Io { .. }
            | StoreError::Config(_)
            | StoreError::OutOfRange { .. } => Failure::storage(msg),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::from(&e)
    }
}

impl From<&Rejection> for Failure {
    fn from(r: &Rejection) -> Failure {
        let code = match r {
            Rejection::IdentityMismatch { .. } => Code::PermissionDenied,
            _ => Code::InvalidArgument,
        };
        Failure {
            rejected_seq: r.dropped_seq(),
            ..Failure::peer(code, r.to_string())
        }
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Failure {
        Failure::bug(format!("a store task failed: {e}"))
    }
}

impl From<Failure> for Status {
    fn from(f: Failure) -> Status {
        f.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_status() {
        let bad = Failure::from(StoreError::BadQuery("interval of 5 ns".into()));
        assert_eq!(
            (bad.cause, bad.status().code()),
            (Cause::Peer, Code::InvalidArgument)
        );
        let io = Failure::from(StoreError::Io {
            path: "/x".into(),
            source: std::io::Error::other("disk gone"),
        });
        assert_eq!(
            (io.cause, io.status().code()),
            (Cause::Storage, Code::Unavailable)
        );
        assert!(io.status().message().contains("disk gone"));
        let bug = Failure::from(StoreError::Internal("oops"));
        assert_eq!(
            (bug.cause, bug.status().code()),
            (Cause::Bug, Code::Internal)
        );
        let who = Failure::from(&Rejection::IdentityMismatch {
            cert: "a".into(),
            got: "b".into(),
        });
        assert_eq!(who.status().code(), Code::PermissionDenied);
        assert_eq!(
            Failure::from(&Rejection::ZeroSeq).status().code(),
            Code::InvalidArgument
        );
        assert_eq!(Failure::handover("moved").status().code(), Code::Aborted);
        assert_eq!(Failure::shutdown().status().code(), Code::Unavailable);
    }
}
