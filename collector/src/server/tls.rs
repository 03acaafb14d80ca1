//! TLS and identity: the server's certificate and the CA its peers'
//! certificates must chain to (mTLS), and who a peer is by its certificate.

use std::path::PathBuf;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Code, Request};

use super::CollectorError;
use super::failure::Failure;

/// PEM files for TLS with client certificates.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
    /// The CA that signs the peers' certificates.
    pub ca: PathBuf,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, CollectorError> {
    std::fs::read(path).map_err(|source| CollectorError::TlsFile {
        path: path.clone(),
        source,
    })
}

/// The server's TLS configuration: its identity, and client certificates
/// required, from the CA.
pub fn server_config(t: &TlsFiles) -> Result<ServerTlsConfig, CollectorError> {
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?))
        .client_ca_root(Certificate::from_pem(read(&t.ca)?)))
}

/// `sha256:` and the hex SHA-256 of the peer's certificate (DER), what
/// `openssl x509 -noout -fingerprint -sha256` shows; `None` without mTLS.
pub fn peer_fingerprint<T>(req: &Request<T>) -> Option<String> {
    use sha2::Digest as _;
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    Some(format!(
        "sha256:{}",
        vigil_proto::attest::hex(&sha2::Sha256::digest(leaf.as_ref()))
    ))
}

/// The identities (SAN DNS names, then the common name) of the peer's
/// client certificate; `None` without TLS.
pub fn peer_identities<T>(req: &Request<T>) -> Result<Option<Vec<String>>, Failure> {
    let Some(certs) = req.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Err(Failure::peer(
            Code::Unauthenticated,
            "no client certificate",
        ));
    };
    identities(leaf.as_ref()).map(Some)
}

/// The identities (SAN DNS names, then the common name) of a certificate
/// (DER).
pub fn identities(der: &[u8]) -> Result<Vec<String>, Failure> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Failure::peer(Code::Unauthenticated, format!("client certificate: {e}")))?;
    let mut ids = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                ids.push((*d).to_string());
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            ids.push(s.to_string());
        }
    }
    Ok(ids)
}

/// The HTTPS listener's TLS configuration: the collector's identity, and
/// client certificates from the CA accepted but not required (an analyst
/// may present an API token instead); HTTP/1.1.
pub fn https_config(t: &TlsFiles) -> Result<std::sync::Arc<rustls::ServerConfig>, CollectorError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &PathBuf, what: String| CollectorError::TlsFile {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&t.cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&t.cert, format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&t.key)?)
        .map_err(|e| bad(&t.key, format!("private key: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(&t.ca)?) {
        let c = c.map_err(|e| bad(&t.ca, format!("CA certificate: {e}")))?;
        roots
            .add(c)
            .map_err(|e| bad(&t.ca, format!("CA certificate: {e}")))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(&t.ca, format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&t.cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| bad(&t.cert, format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(cfg))
}
