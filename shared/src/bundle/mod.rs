//! Signed model bundles: how a model travels from the operator who trained it to every edge and cloud worker
//! without any of them trusting the wire, the file store or the registry in between.
//!
//! A bundle is one tar archive ([`archive`]) holding a model's manifest, its model file and its golden
//! samples, addressed by the SHA-256 of the archive. What makes it trustworthy is a small signed statement
//! ([`statement`]) that names the archive by hash and size and gives it a sequence number; the statement is
//! signed with an Ed25519 key ([`keys`]) that stays on the operator's machine. An edge or worker trusts a set
//! of public keys (two at once while keys rotate) and:
//!
//! 1. verifies the statement's signature against those keys ([`SignedStatement::verify`]);
//! 2. refuses a sequence below the one it runs unless an explicit rollback names that bundle
//!    ([`check_sequence`]);
//! 3. checks the archive's size and hash before reading a byte of it, then unpacks it into a staging directory
//!    that only ever receives plain files under their own names ([`archive::unpack`]);
//! 4. loads the manifest from there, which checks the model file's own hash.
//!
//! Every refusal is a [`BundleError`] that names the bundle and the reason, so a tampered, truncated,
//! wrongly signed or downgraded bundle is reported and the model already running keeps serving.

pub mod archive;
pub mod keys;
pub mod statement;

pub use keys::{KeyId, PublicKey, SigningKey, TrustedKeys};
pub use statement::{BundleStatement, SignedStatement, check_sequence};

use std::path::PathBuf;
use thiserror::Error;

/// Why a bundle, statement or key was refused.
#[derive(Debug, Error)]
pub enum BundleError {
    /// A key or statement file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file is not in the expected format.
    #[error("{path} is not a Tierline {expected} file: {problem}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// "signing key" or "public key".
        expected: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Signing or key generation failed in the crypto library.
    #[error("Ed25519 {0} failed")]
    Crypto(&'static str),
    /// The statement was signed by a key this machine does not trust.
    #[error(
        "the statement for bundle {bundle} is signed by key {key_id}, which is not trusted here (trusted: {trusted}); \
         if the operator rotated keys, add the new public key to the trusted keys"
    )]
    UnknownKey {
        /// What the statement claims to sign (unverified).
        bundle: String,
        /// The key id it names.
        key_id: String,
        /// The trusted key ids.
        trusted: String,
    },
    /// The signature does not match the statement: it was altered after signing, or signed by another key.
    #[error(
        "the signature on the statement for bundle {bundle} does not verify with trusted key {key_id}: the \
         statement was altered after signing or signed with another key; do not use this bundle"
    )]
    BadSignature {
        /// What the statement claims to sign (unverified).
        bundle: String,
        /// The key id it names.
        key_id: String,
    },
    /// The statement or its envelope is not valid JSON of the expected shape.
    #[error("malformed bundle statement: {0}")]
    Malformed(String),
    /// The archive is shorter than the statement says: a download was cut off.
    #[error(
        "bundle {bundle} is truncated: {got} of {expected} bytes; resume or repeat the download"
    )]
    Truncated {
        /// Bundle hash from the statement.
        bundle: String,
        /// Bytes the statement promises.
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// The archive's size or hash differs from the signed statement.
    #[error(
        "bundle {bundle} does not match its signed statement: {problem}; it was altered or mixed up with \
         another file, do not use it"
    )]
    Mismatch {
        /// Bundle hash from the statement.
        bundle: String,
        /// What differs.
        problem: String,
    },
    /// The sequence number is below (or equal to, for another bundle) the one already running.
    #[error(
        "bundle {bundle} ({name} {version}) has sequence {offered}, not above {current} which runs here: a \
         downgrade is refused unless a rollback names this bundle explicitly"
    )]
    Downgrade {
        /// Bundle hash.
        bundle: String,
        /// Model name.
        name: String,
        /// Model version.
        version: String,
        /// Its sequence.
        offered: u64,
        /// The sequence running here.
        current: u64,
    },
    /// The archive holds something other than plain files under plain relative names.
    #[error(
        "bundle {bundle} holds {entry:?}, which is not a plain file under a plain relative name"
    )]
    UnsafeEntry {
        /// Bundle hash.
        bundle: String,
        /// The offending entry.
        entry: String,
    },
    /// The archive could not be read as tar, or a file in it could not be packed or unpacked.
    #[error("bundle {bundle}: {problem}")]
    Archive {
        /// Bundle hash or manifest path.
        bundle: String,
        /// What went wrong.
        problem: String,
    },
    /// The manifest inside (or the one being packed) is invalid, or a model file fails its hash.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}
