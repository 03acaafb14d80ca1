//! Who may do what: the collector's trust model (ARCHITECTURE.md, "Trust
//! model").
//!
//! A peer is one of three principals, by how it connects:
//! - **certified** (mTLS): the identities of its client certificate (SAN
//!   DNS names, then the CN). It may stream as a sensor id that is one of
//!   them and not an analyst's; it may read flows and alerts (the `Query`
//!   and `Alerts` services) only if one of them is named in
//!   `[access] analysts`.
//! - **local administrator**: plaintext from a loopback address (the
//!   collector accepts plaintext only on loopback unless `insecure`): may
//!   stream as any sensor id and read everything. Whoever can connect to
//!   the host's loopback is trusted as its administrator.
//! - **insecure**: plaintext from another address (only with `insecure`):
//!   may stream, nothing else.
//!
//! Every refusal is counted (`vigil_collector_refusals_total{service}`) and
//! logged with the peer's address and identities.

use std::collections::HashSet;
use std::net::SocketAddr;

use tonic::{Code, Request, Status};

use super::Shared;
use super::failure::Failure;
use super::tls::peer_identities;

/// How a peer connected, and so what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// mTLS: its certificate's identities.
    Certified(Vec<String>),
    /// Plaintext from a loopback address.
    LocalAdmin,
    /// Plaintext from elsewhere (`insecure`): ingest only.
    Insecure,
}

impl Principal {
    /// The principal of a request.
    pub fn of<T>(req: &Request<T>) -> Result<Principal, Failure> {
        Ok(match peer_identities(req)? {
            Some(ids) => Principal::Certified(ids),
            None if req.remote_addr().is_some_and(|a| a.ip().is_loopback()) => {
                Principal::LocalAdmin
            }
            None => Principal::Insecure,
        })
    }

    /// For logs: the identities, or what the peer is.
    pub fn describe(&self) -> String {
        match self {
            Principal::Certified(ids) => ids.join(", "),
            Principal::LocalAdmin => "local administrator (plaintext on loopback)".into(),
            Principal::Insecure => "unauthenticated (plaintext, --insecure)".into(),
        }
    }
}

/// The access policy: who the analysts are.
#[derive(Clone, Debug, Default)]
pub struct Access {
    analysts: HashSet<String>,
}

impl Access {
    /// The policy naming these analysts.
    pub fn new(analysts: &[String]) -> Access {
        Access {
            analysts: analysts.iter().cloned().collect(),
        }
    }

    /// Whether `id` is an analyst's identity.
    pub fn is_analyst(&self, id: &str) -> bool {
        self.analysts.contains(id)
    }

    /// May `who` read flows and alerts?
    pub fn may_read(&self, who: &Principal) -> Result<(), Failure> {
        match who {
            Principal::LocalAdmin => Ok(()),
            Principal::Certified(ids) if ids.iter().any(|i| self.is_analyst(i)) => Ok(()),
            Principal::Certified(ids) => Err(Failure::peer(
                Code::PermissionDenied,
                format!(
                    "permission denied: certificate identity {:?} is not an analyst; reading flows \
                     and alerts needs an identity named in the collector's [access] analysts",
                    ids.join(", ")
                ),
            )),
            Principal::Insecure => Err(Failure::peer(
                Code::PermissionDenied,
                "permission denied: plaintext off loopback (--insecure) is accepted for ingest \
                 only; query over mTLS with an analyst's certificate, or from the collector's host",
            )),
        }
    }

    /// May `who` stream as `sensor_id`? (That a certificate names the id
    /// is checked with the batch, [`crate::ingest::validate`].)
    pub fn may_stream(&self, who: &Principal, sensor_id: &str) -> Result<(), Failure> {
        match who {
            Principal::Certified(_) if self.is_analyst(sensor_id) => Err(Failure::peer(
                Code::PermissionDenied,
                format!(
                    "permission denied: {sensor_id:?} is an analyst's identity, not a sensor's: \
                     analysts may not stream flows"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Counts and logs a refusal.
pub fn refused(
    shared: &Shared,
    service: &'static str,
    peer: Option<SocketAddr>,
    who: &str,
    f: &Failure,
) {
    shared.metrics.refusal(service);
    let peer = peer.map_or_else(|| "unknown".to_string(), |a| a.to_string());
    tracing::warn!(%peer, identity = who, service, error = %f.status().message(), "request refused");
}

/// The interceptor of a reading service (`Query`, `Alerts`): only
/// analysts and the local administrator pass.
pub fn readers_only(
    shared: std::sync::Arc<Shared>,
    service: &'static str,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let checked = match Principal::of(&req) {
            Ok(p) => shared.access.may_read(&p).map_err(|f| (f, p.describe())),
            Err(f) => Err((f, "an unreadable client certificate".to_string())),
        };
        match checked {
            Ok(()) => Ok(req),
            Err((f, who)) => {
                refused(&shared, service, req.remote_addr(), &who, &f);
                Err(f.status())
            }
        }
    }
}

/// The cookie the console's sign-in page sets to the API token.
pub const TOKEN_COOKIE: &str = "vigil_token";

/// Who reads over HTTP (the API and the console), once authenticated: a
/// request extension the handlers log and record exports with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebReader {
    /// Plaintext from the collector's host.
    LocalAdmin,
    /// An analyst by the client certificate's identity (HTTPS).
    Certificate(String),
    /// An analyst by an API token.
    Token {
        /// The name it was issued for.
        name: String,
        /// Its id (the first digits of its hash).
        id: String,
    },
}

impl WebReader {
    /// For logs and records.
    pub fn describe(&self) -> String {
        match self {
            WebReader::LocalAdmin => "local administrator (plaintext on loopback)".into(),
            WebReader::Certificate(id) => format!("{id} (client certificate)"),
            WebReader::Token { name, id } => format!("{name} (API token {id})"),
        }
    }
}

/// The data directory's API tokens ([`crate::tokens`]), read again when the
/// file changes (its modification time or size), so that a token made or
/// revoked by `vigil access token` counts from the next request.
#[derive(Debug)]
pub struct TokenGate {
    data_dir: std::path::PathBuf,
    cache: std::sync::Mutex<(Option<(std::time::SystemTime, u64)>, crate::tokens::Tokens)>,
}

impl TokenGate {
    /// The gate of `data_dir` (empty: no tokens).
    pub fn new(data_dir: &std::path::Path) -> TokenGate {
        TokenGate {
            data_dir: data_dir.to_path_buf(),
            cache: std::sync::Mutex::new((None, crate::tokens::Tokens::default())),
        }
    }

    /// The live token `token` is, if it is one.
    pub fn verify(
        &self,
        token: &str,
    ) -> Result<Option<crate::tokens::TokenEntry>, crate::tokens::TokenError> {
        if self.data_dir.as_os_str().is_empty() {
            return Ok(None);
        }
        let path = crate::tokens::path(&self.data_dir);
        let stamp = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.0 != stamp {
            let tokens = crate::tokens::Tokens::load(&self.data_dir)?;
            *c = (stamp, tokens);
        }
        Ok(c.1.verify(token).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysts_read_sensors_stream_and_plaintext_off_loopback_only_streams() {
        let a = Access::new(&["alice".to_string()]);
        let alice = Principal::Certified(vec!["alice".into()]);
        let s1 = Principal::Certified(vec!["s1".into()]);
        assert!(a.may_read(&alice).is_ok());
        assert!(a.may_read(&Principal::LocalAdmin).is_ok());
        let e = a.may_read(&s1).unwrap_err().status();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("\"s1\" is not an analyst"), "{e:?}");
        let e = a.may_read(&Principal::Insecure).unwrap_err().status();
        assert!(e.message().contains("ingest only"), "{e:?}");
        assert!(a.may_stream(&s1, "s1").is_ok());
        assert!(a.may_stream(&Principal::Insecure, "s9").is_ok());
        assert!(a.may_stream(&Principal::LocalAdmin, "alice").is_ok());
        let e = a.may_stream(&alice, "alice").unwrap_err().status();
        assert_eq!(e.code(), Code::PermissionDenied);
        // No analysts named: only the local administrator reads.
        assert!(Access::default().may_read(&alice).is_err());
    }

    #[test]
    fn plaintext_is_the_administrator_on_loopback_only() {
        use tonic::transport::server::TcpConnectInfo;
        let from = |addr: &str| {
            let mut r = Request::new(());
            r.extensions_mut().insert(TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(addr.parse().unwrap()),
            });
            Principal::of(&r).unwrap()
        };
        assert_eq!(from("127.0.0.1:4000"), Principal::LocalAdmin);
        assert_eq!(from("[::1]:4000"), Principal::LocalAdmin);
        assert_eq!(from("192.0.2.7:4000"), Principal::Insecure);
        assert_eq!(
            Principal::of(&Request::new(())).unwrap(),
            Principal::Insecure
        );
    }
}
