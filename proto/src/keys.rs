//! Ed25519 signing keys in files: the collector's evidence key (it signs
//! the bundles it exports) and each sensor's attestation key (it signs
//! every batch's Merkle root).
//!
//! A key is made on first use as a PKCS#8 v1 PEM file readable by its
//! owner only (0600); its public half is written beside it, world-readable,
//! as `NAME.pub.pem` (SubjectPublicKeyInfo PEM), so that others can read
//! it without the private key. A key's fingerprint is `sha256:` and the
//! hex SHA-256 of the public key's DER SubjectPublicKeyInfo, what `openssl
//! pkey -pubin -outform DER | sha256sum` prints.

use std::fs::{self, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// A signing key problem, naming the file.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The file could not be read, written or created.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file does not hold an Ed25519 PKCS#8 key.
    #[error("{path}: not an Ed25519 private key in PKCS#8 PEM: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// A signing key read from (or made in) its file.
#[derive(Debug)]
pub struct KeyFile {
    key: SigningKey,
    path: PathBuf,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> KeyError + 'a {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl KeyFile {
    /// Reads the key at `path`, or makes one there (0600) if there is
    /// none, with its public half beside it.
    pub fn load_or_create(path: &Path) -> Result<KeyFile, KeyError> {
        match fs::read_to_string(path) {
            Ok(pem) => {
                let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Format {
                    path: path.to_path_buf(),
                    problem: e.to_string(),
                })?;
                let mode = fs::metadata(path)
                    .map_err(io_err(path, "reading the permissions"))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = %format_args!("{:o}", mode & 0o777),
                        "a signing key is readable by others: chmod 600 it"
                    );
                }
                let k = KeyFile {
                    key,
                    path: path.to_path_buf(),
                };
                k.write_public()?;
                Ok(k)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(io_err(path, "reading")(e)),
        }
    }

    fn create(path: &Path) -> Result<KeyFile, KeyError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir, "creating the directory"))?;
        }
        let mut seed = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(io_err(Path::new("/dev/urandom"), "reading"))?;
        let key = SigningKey::from_bytes(&seed);
        // PKCS#8 v1 (RFC 8410: the private key alone): what OpenSSL 3.0
        // reads too, which refuses v2's appended public key.
        let pem = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Format {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        // Written whole under a temporary name, then renamed: a crash
        // leaves no half key.
        let tmp = path.with_extension("pem.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp, "creating"))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp, "writing"))?;
        fs::rename(&tmp, path).map_err(io_err(path, "renaming into place"))?;
        let k = KeyFile {
            key,
            path: path.to_path_buf(),
        };
        k.write_public()?;
        tracing::info!(path = %path.display(), fingerprint = %k.fingerprint(), "signing key created");
        Ok(k)
    }

    /// Writes the public half beside the key (`signing-key.pub.pem`).
    fn write_public(&self) -> Result<(), KeyError> {
        let path = public_path(&self.path);
        let pem = self.public_pem();
        if fs::read_to_string(&path).is_ok_and(|p| p == pem) {
            return Ok(());
        }
        fs::write(&path, pem).map_err(io_err(&path, "writing"))
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> String {
        public_pem(&self.verifying_key())
    }

    /// `sha256:` and the hex SHA-256 of the public key's DER.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.verifying_key())
    }

    /// The raw 64-byte Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// Where the public half of the key at `key` is written.
pub fn public_path(key: &Path) -> PathBuf {
    key.with_file_name(
        key.file_stem()
            .map(|s| format!("{}.pub.pem", s.to_string_lossy()))
            .unwrap_or_else(|| "signing-key.pub.pem".into()),
    )
}

/// A public key from SubjectPublicKeyInfo PEM (what `openssl pkey
/// -pubout` writes).
pub fn public_from_pem(pem: &str) -> Result<VerifyingKey, String> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| e.to_string())
}

/// A public key as SubjectPublicKeyInfo PEM.
pub fn public_pem(k: &VerifyingKey) -> String {
    // Encoding a 32-byte key into a buffer cannot fail.
    k.to_public_key_pem(LineEnding::LF).unwrap_or_default()
}

/// `sha256:` and the hex SHA-256 of a public key's DER SubjectPublicKeyInfo.
pub fn fingerprint(k: &VerifyingKey) -> String {
    let der = k
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    let digest = Sha256::digest(&der);
    let mut s = String::from("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    use ed25519_dalek::{Signature, Verifier as _};

    use super::*;

    #[test]
    fn the_key_is_made_once_owner_only_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("evidence/signing-key.pem");
        let k = KeyFile::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = KeyFile::load_or_create(&path).unwrap();
        assert_eq!(k.fingerprint(), again.fingerprint());
        assert!(k.fingerprint().starts_with("sha256:") && k.fingerprint().len() == 7 + 64);
        // The public half beside it is the same key.
        let pubpem = fs::read_to_string(public_path(&path)).unwrap();
        let vk = VerifyingKey::from_public_key_pem(&pubpem).unwrap();
        let sig = Signature::from_bytes(&k.sign(b"manifest"));
        vk.verify(b"manifest", &sig).unwrap();
        assert!(vk.verify(b"manifesT", &sig).is_err());
    }

    #[test]
    fn a_damaged_key_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("k.pem");
        fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = KeyFile::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("k.pem") && e.contains("PKCS#8"), "{e}");
    }
}
