//! API tokens: bearer credentials for analysts over HTTP (the API and the
//! console), issued by `vigil access token create NAME` and kept hashed.
//!
//! A token is `vigil_` and 43 characters of base64url (32 random bytes). The
//! file `DATA_DIR/access/tokens.json` (mode 0600) holds, per token, its
//! name (the analyst's identity in logs and custody records), an id (the
//! first 8 characters of its hash, what `list` shows and `revoke` takes),
//! the SHA-256 of the whole token, and when it was made and revoked; never
//! the token itself, which is shown once, at creation. The collector reads
//! the file again whenever it changes, so that a revocation takes effect
//! at the next request.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use thiserror::Error;

/// The prefix of every token (so that scanners for leaked secrets can
/// find them).
pub const PREFIX: &str = "vigil_";

/// Reading or changing the token file failed.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what this module writes.
    #[error("{path}: not a token file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A name that cannot be an identity.
    #[error("token name {0:?}: must be 1-64 characters of A-Z a-z 0-9 . _ - @")]
    BadName(String),
    /// Nothing matches what `revoke` was given.
    #[error("no token named or with id {0:?} (vigil access token list shows them)")]
    NotFound(String),
}

/// One issued token, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    /// The first 8 hex digits of the hash: how `list` and `revoke` name it.
    pub id: String,
    /// The analyst it stands for.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// When it was made, ns since the epoch.
    pub created_ns: u64,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ns: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    tokens: Vec<TokenEntry>,
}

/// The tokens of a data directory.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

/// Where the tokens of `data_dir` are kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("access").join("tokens.json")
}

fn hash(token: &str) -> String {
    vigil_proto::attest::hex(&sha2::Sha256::digest(token.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

impl Tokens {
    /// Reads the tokens of `data_dir` (none if the file does not exist).
    pub fn load(data_dir: &Path) -> Result<Tokens, TokenError> {
        let p = path(data_dir);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tokens::default()),
            Err(source) => return Err(TokenError::Io { path: p, source }),
        };
        let f: File = serde_json::from_str(&text).map_err(|e| TokenError::Corrupt {
            path: p.clone(),
            message: e.to_string(),
        })?;
        Ok(Tokens { entries: f.tokens })
    }

    /// Every token issued, revoked ones included, oldest first.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The live token `token` is, if it is one.
    pub fn verify(&self, token: &str) -> Option<&TokenEntry> {
        if !token.starts_with(PREFIX) {
            return None;
        }
        let h = hash(token);
        // Compared as hashes: a timing difference tells nothing of a token.
        self.entries
            .iter()
            .find(|e| e.sha256 == h && e.revoked_ns.is_none())
    }

    fn save(&self, data_dir: &Path) -> Result<(), TokenError> {
        let p = path(data_dir);
        let io = |source| TokenError::Io {
            path: p.clone(),
            source,
        };
        let dir = p.parent().unwrap_or(data_dir);
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = serde_json::to_string_pretty(&File {
            tokens: self.entries.clone(),
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = p.with_extension("json.tmp");
        {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &p).map_err(io)
    }

    /// Issues a token for `name` in `data_dir`: returns it (shown once,
    /// never stored) with its entry.
    pub fn create(data_dir: &Path, name: &str) -> Result<(String, TokenEntry), TokenError> {
        if !valid_name(name) {
            return Err(TokenError::BadName(name.to_string()));
        }
        let mut t = Tokens::load(data_dir)?;
        let secret: [u8; 32] = rand::random();
        let token = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let sha256 = hash(&token);
        let entry = TokenEntry {
            id: sha256[..8].to_string(),
            name: name.to_string(),
            sha256,
            created_ns: vigil_proto::time::now_ns(),
            revoked_ns: None,
        };
        t.entries.push(entry.clone());
        t.save(data_dir)?;
        Ok((token, entry))
    }

    /// Revokes the live tokens named `who` or whose id is `who`; returns
    /// those revoked.
    pub fn revoke(data_dir: &Path, who: &str) -> Result<Vec<TokenEntry>, TokenError> {
        let mut t = Tokens::load(data_dir)?;
        let now = vigil_proto::time::now_ns();
        let mut done = Vec::new();
        for e in &mut t.entries {
            if e.revoked_ns.is_none() && (e.name == who || e.id == who) {
                e.revoked_ns = Some(now);
                done.push(e.clone());
            }
        }
        if done.is_empty() {
            return Err(TokenError::NotFound(who.to_string()));
        }
        t.save(data_dir)?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_stored_hashed_verifies_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let (token, e) = Tokens::create(dir.path(), "alice").unwrap();
        assert!(token.starts_with(PREFIX) && token.len() == PREFIX.len() + 43);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(
            !text.contains(&token[PREFIX.len()..]),
            "the token itself is not kept"
        );
        assert!(text.contains(&e.sha256));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let t = Tokens::load(dir.path()).unwrap();
        assert_eq!(t.verify(&token).map(|e| e.name.as_str()), Some("alice"));
        // One character changed, the prefix missing: nothing.
        let mut wrong = token.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
        assert!(t.verify(std::str::from_utf8(&wrong).unwrap()).is_none());
        assert!(t.verify(&token[PREFIX.len()..]).is_none());

        let (other, _) = Tokens::create(dir.path(), "bob").unwrap();
        assert_eq!(Tokens::revoke(dir.path(), "alice").unwrap().len(), 1);
        let t = Tokens::load(dir.path()).unwrap();
        assert!(t.verify(&token).is_none());
        assert_eq!(t.verify(&other).map(|e| e.name.as_str()), Some("bob"));
        // By id too; twice is an error naming what was asked.
        let bob = t.verify(&other).unwrap().id.clone();
        Tokens::revoke(dir.path(), &bob).unwrap();
        assert!(matches!(
            Tokens::revoke(dir.path(), &bob),
            Err(TokenError::NotFound(_))
        ));
        assert!(matches!(
            Tokens::create(dir.path(), "no spaces"),
            Err(TokenError::BadName(_))
        ));
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("access")).unwrap();
        std::fs::write(path(dir.path()), "{not json").unwrap();
        let e = Tokens::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("tokens.json") && e.contains("not a token file"),
            "{e}"
        );
    }
}
