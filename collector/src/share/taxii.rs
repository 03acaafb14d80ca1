//! A TAXII 2.1 client, as far as pushing goes: "Add Objects" (POST an
//! envelope to `{api_root}collections/{id}/objects/`) and its status
//! resource, which says which objects the server took and which it
//! refused.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use thiserror::Error;

use super::config::Partner;
use crate::http::{self, Client};

/// The TAXII 2.1 media type.
pub const MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// A push failed as a whole (nothing is known to be taken).
#[derive(Debug, Error)]
pub enum TaxiiError {
    /// Not reachable, TLS failed, or not HTTP.
    #[error("{addr}: {source}")]
    Transport {
        /// host:port.
        addr: String,
        /// What failed.
        #[source]
        source: http::Failure,
    },
    /// The server answered with an error.
    #[error("{addr}: HTTP {status}: {message}")]
    Refused {
        /// host:port.
        addr: String,
        /// Status.
        status: u16,
        /// TAXII's error title and description, or the body's first line.
        message: String,
    },
    /// The envelope is larger than the server takes (HTTP 413).
    #[error("{addr}: the envelope is too large for the server (HTTP 413)")]
    TooLarge {
        /// host:port.
        addr: String,
    },
    /// The status resource is not what TAXII 2.1 says.
    #[error("{addr}: malformed status resource: {what}")]
    Malformed {
        /// host:port.
        addr: String,
        /// What.
        what: String,
    },
}

/// A partner's collection.
#[derive(Clone, Debug)]
pub struct Collection {
    client: Client,
    path: String,
    auth: Option<String>,
}

/// What the server said of one object it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken (or pending: it took responsibility for it).
    Taken,
    /// Refused, with its message.
    Refused(String),
}

impl Collection {
    /// The collection of `partner` (which has an API root).
    pub fn new(partner: &Partner, timeout: Duration) -> Result<Collection, String> {
        let root = partner
            .api_root
            .as_deref()
            .ok_or_else(|| format!("partner {}: no api_root", partner.name))?;
        let (secure, host, port, path) =
            http::split_url(root).ok_or_else(|| format!("api_root {root:?}: not a URL"))?;
        let mut client = Client::new(&host, port, secure).with_timeout(timeout);
        if let Some(ca) = &partner.auth.ca {
            client = client.with_ca_file(ca).map_err(|e| e.to_string())?;
        }
        if let Some((cert, key)) = &partner.auth.client_cert {
            client = client
                .with_client_cert(cert, key)
                .map_err(|e| e.to_string())?;
        }
        let auth = partner.auth.basic.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let mut p = path;
        if !p.ends_with('/') {
            p.push('/');
        }
        let mut coll = String::new();
        http::percent_encode(&partner.collection, &mut coll);
        Ok(Collection {
            client,
            path: format!("{p}collections/{coll}/objects/"),
            auth,
        })
    }

    /// Adds `objects` (each a STIX object's JSON text); returns what the
    /// server said of each, in order.
    pub fn add(&self, objects: &[(&str, &str, &str)]) -> Result<Vec<Outcome>, TaxiiError> {
        let addr = self.client.addr();
        let mut body =
            Vec::with_capacity(objects.iter().map(|o| o.2.len() + 1).sum::<usize>() + 16);
        body.extend_from_slice(b"{\"objects\":[");
        for (i, (_, _, json)) in objects.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(json.as_bytes());
        }
        body.extend_from_slice(b"]}");
        let mut headers = vec![("Accept", MEDIA_TYPE), ("Content-Type", MEDIA_TYPE)];
        if let Some(a) = &self.auth {
            headers.push(("Authorization", a));
        }
        let r = self
            .client
            .request("POST", &self.path, &headers, &[&body])
            .map_err(|source| TaxiiError::Transport {
                addr: addr.clone(),
                source,
            })?;
        if r.status == 413 {
            return Err(TaxiiError::TooLarge { addr });
        }
        if !(200..300).contains(&r.status) {
            let message = match serde_json::from_slice::<Value>(&r.body) {
                Ok(v) if v["title"].is_string() => format!(
                    "{}{}{}",
                    v["title"].as_str().unwrap_or(""),
                    if v["description"].is_string() {
                        ": "
                    } else {
                        ""
                    },
                    v["description"].as_str().unwrap_or("")
                ),
                _ => String::from_utf8_lossy(&r.body)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            };
            return Err(TaxiiError::Refused {
                addr,
                status: r.status,
                message,
            });
        }
        let status: Value = serde_json::from_slice(&r.body).map_err(|e| TaxiiError::Malformed {
            addr: addr.clone(),
            what: format!("not JSON: {e}"),
        })?;
        if !status["status"].is_string() {
            return Err(TaxiiError::Malformed {
                addr,
                what: "no \"status\"".into(),
            });
        }
        let failures: Vec<(String, String, String)> = status["failures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        (
                            f["id"].as_str().unwrap_or("").to_string(),
                            f["version"].as_str().unwrap_or("").to_string(),
                            f["message"].as_str().unwrap_or("refused").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A failure names the object and its version (as the server writes
        // it: matched exactly, or by id alone when the id is sent once).
        let sent_once = |id: &str| objects.iter().filter(|o| o.0 == id).count() == 1;
        Ok(objects
            .iter()
            .map(|(id, version, _)| {
                failures
                    .iter()
                    .find(|(fid, fv, _)| fid == id && (fv == version || sent_once(id)))
                    .map_or(Outcome::Taken, |(_, _, m)| Outcome::Refused(m.clone()))
            })
            .collect())
    }
}
