//! Ed25519 signing keys and the public keys an edge or worker trusts.
//!
//! The signing key is an Ed25519 PKCS#8 document, written as hex in a text file readable only by its owner;
//! it stays on the operator's machine. A public key file holds the key id and the 32-byte public key, and is
//! what edges and workers are given. A key id is the first 8 bytes of the SHA-256 of the public key, in hex,
//! so a statement can say which key signed it and a machine trusting two keys (during a rotation) knows
//! which one to check.
//!
//! The crypto is `ring`'s, which the TLS stack already builds.

use super::BundleError;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

const SECRET_HEADER: &str = "# Tierline model signing key (Ed25519, PKCS#8). Keep it on the operator's machine: \
                             never copy it to an edge or a server.";
const PUBLIC_HEADER: &str = "# Tierline model signing public key (Ed25519). Edges and workers trust bundles signed with its key.";

/// Short identifier of a public key: hex of the first 8 bytes of its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub String);

impl KeyId {
    fn of(public: &[u8]) -> Self {
        Self(hex::encode(&Sha256::digest(public)[..8]))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ed25519 signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.id())
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, BundleError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| BundleError::Crypto("key generation"))?;
        Self::from_pkcs8(doc.as_ref().to_vec())
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, BundleError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| BundleError::Crypto("reading the PKCS#8 key"))?;
        Ok(Self { pair, pkcs8 })
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        KeyId::of(self.pair.public_key().as_ref())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey { bytes }
    }

    /// Signs `message`; the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> String {
        format!(
            "{SECRET_HEADER}\nsecret {} {}\n",
            self.id(),
            hex::encode(&self.pkcs8)
        )
    }

    /// Reads a signing key file.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let text = read(path)?;
        let bad = |problem: &str| BundleError::KeyFile {
            path: path.to_path_buf(),
            expected: "signing key",
            problem: problem.to_string(),
        };
        let fields = data_line(&text, "secret")
            .ok_or_else(|| bad("no `secret <key id> <hex>` line (is this a public key file?)"))?;
        let [id, hex_doc] = fields[..] else {
            return Err(bad("the `secret` line needs a key id and the key in hex"));
        };
        let pkcs8 = hex::decode(hex_doc).map_err(|_| bad("the key is not hex"))?;
        let key =
            Self::from_pkcs8(pkcs8).map_err(|_| bad("the key is not an Ed25519 PKCS#8 key"))?;
        if key.id().0 != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(key)
    }

    /// Writes the key file (owner read/write only) and the public key file beside it (`<path>.pub`).
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        let io = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(self.to_file_text().as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        let public = public_path(path);
        std::fs::write(&public, self.public().to_file_text()).map_err(|source| BundleError::Io {
            path: public,
            source,
        })
    }
}

/// Where [`SigningKey::save`] puts the public key of the key at `path`.
pub fn public_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

/// An Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
}

impl PublicKey {
    /// The key's id.
    pub fn id(&self) -> KeyId {
        KeyId::of(&self.bytes)
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }

    /// The public key file's text.
    pub fn to_file_text(&self) -> String {
        format!(
            "{PUBLIC_HEADER}\npublic {} {}\n",
            self.id(),
            hex::encode(self.bytes)
        )
    }

    /// Parses a public key file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, BundleError> {
        let bad = |problem: &str| BundleError::KeyFile {
            path: path.to_path_buf(),
            expected: "public key",
            problem: problem.to_string(),
        };
        let fields =
            data_line(text, "public").ok_or_else(|| bad("no `public <key id> <hex>` line"))?;
        let [id, hex_key] = fields[..] else {
            return Err(bad("the `public` line needs a key id and the key in hex"));
        };
        let raw = hex::decode(hex_key).map_err(|_| bad("the key is not hex"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("an Ed25519 public key is 32 bytes"))?;
        let key = Self { bytes };
        if key.id().0 != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(key)
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        Self::parse(&read(path)?, path)
    }
}

/// The public keys a machine accepts bundles from: usually one, two while the operator rotates keys.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    /// Trusts exactly `keys`.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    /// Reads each public key file.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, BundleError> {
        let keys = paths
            .iter()
            .map(|p| PublicKey::load(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Whether no key is trusted (nothing can verify).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted key with this id.
    pub fn get(&self, id: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id().0 == id)
    }

    /// The trusted key ids, comma-separated (for messages).
    pub fn ids(&self) -> String {
        if self.keys.is_empty() {
            return "none".into();
        }
        self.keys
            .iter()
            .map(|k| k.id().0)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn read(path: &Path) -> Result<String, BundleError> {
    std::fs::read_to_string(path).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The fields after `tag` on the file's one data line (comments and blank lines skipped).
fn data_line<'a>(text: &'a str, tag: &str) -> Option<Vec<&'a str>> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    let mut fields = line.split_whitespace();
    (fields.next()? == tag).then(|| fields.collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files_and_verify_only_their_own_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ops.key");
        let key = SigningKey::generate().unwrap();
        key.save(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the signing key is readable by others");
        let loaded = SigningKey::load(&path).unwrap();
        let public = PublicKey::load(&public_path(&path)).unwrap();
        assert_eq!(loaded.id(), key.id());
        assert_eq!(public.id(), key.id());
        let sig = loaded.sign(b"statement");
        assert!(public.verifies(b"statement", &sig));
        assert!(!public.verifies(b"statemenT", &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!other.public().verifies(b"statement", &sig));
        // A public key file is not a signing key, and the other way round.
        assert!(SigningKey::load(&public_path(&path)).is_err());
        assert!(PublicKey::load(&path).is_err());
        // A key id that does not match its key is refused.
        let text = public
            .to_file_text()
            .replace(&public.id().0, "0011223344556677");
        assert!(PublicKey::parse(&text, Path::new("x.pub")).is_err());
    }
}
