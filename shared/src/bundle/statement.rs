//! The signed statement that makes a bundle trustworthy: which archive (hash and size), which model (name and
//! version), and its place in the sequence of bundles.
//!
//! The signature covers the statement's exact JSON text, which travels as a string inside the envelope, so
//! no canonical JSON is needed: the verifier checks the bytes it was given, then parses them.

use super::{BundleError, SigningKey, TrustedKeys};
use serde::{Deserialize, Serialize};

/// The format tag of statements this code writes and accepts.
pub const FORMAT: &str = "tierline-bundle/1";

/// What the operator vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleStatement {
    /// Always [`FORMAT`].
    pub format: String,
    /// Model name from the manifest (its role: `prescreen`, `full`, …).
    pub name: String,
    /// Model version from the manifest.
    pub version: String,
    /// Position in the sequence of bundles for this model name; a higher one supersedes a lower one.
    pub sequence: u64,
    /// Lowercase hex SHA-256 of the archive.
    pub sha256: String,
    /// Archive size in bytes.
    pub size: u64,
    /// When it was signed, microseconds since the Unix epoch (informational).
    pub signed_at_us: i64,
}

impl BundleStatement {
    /// A short name for messages: `name version (sha256 prefix)`.
    pub fn label(&self) -> String {
        format!(
            "{} {} ({})",
            self.name,
            self.version,
            self.sha256.chars().take(12).collect::<String>()
        )
    }
}

/// A statement with its signature: the `.sig` file next to a bundle, and what a registry stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedStatement {
    /// The statement's JSON text, exactly as signed.
    pub statement: String,
    /// Id of the key that signed it.
    pub key_id: String,
    /// Hex of the Ed25519 signature over `statement`'s bytes.
    pub signature: String,
}

impl SignedStatement {
    /// Signs `statement` with `key`.
    pub fn sign(statement: &BundleStatement, key: &SigningKey) -> Result<Self, BundleError> {
        let text = serde_json::to_string(statement)
            .map_err(|e| BundleError::Malformed(format!("cannot write the statement: {e}")))?;
        Ok(Self {
            signature: hex::encode(key.sign(text.as_bytes())),
            key_id: key.id().0,
            statement: text,
        })
    }

    /// Parses an envelope (the `.sig` file's text).
    pub fn parse(text: &str) -> Result<Self, BundleError> {
        serde_json::from_str(text)
            .map_err(|e| BundleError::Malformed(format!("the signature envelope: {e}")))
    }

    /// The envelope as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the signature against the trusted keys, then parses the statement. Nothing in the statement is
    /// believed before the signature verifies.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<BundleStatement, BundleError> {
        // For messages only: what the statement claims, unverified.
        let claimed = || {
            serde_json::from_str::<BundleStatement>(&self.statement)
                .map(|s| s.label())
                .unwrap_or_else(|_| "(unreadable)".into())
        };
        let key = trusted
            .get(&self.key_id)
            .ok_or_else(|| BundleError::UnknownKey {
                bundle: claimed(),
                key_id: self.key_id.clone(),
                trusted: trusted.ids(),
            })?;
        let signature = hex::decode(&self.signature).unwrap_or_default();
        if !key.verifies(self.statement.as_bytes(), &signature) {
            return Err(BundleError::BadSignature {
                bundle: claimed(),
                key_id: self.key_id.clone(),
            });
        }
        let statement: BundleStatement = serde_json::from_str(&self.statement)
            .map_err(|e| BundleError::Malformed(format!("the signed statement: {e}")))?;
        if statement.format != FORMAT {
            return Err(BundleError::Malformed(format!(
                "format {:?}; this build reads {FORMAT:?} (upgrade it to use this bundle)",
                statement.format
            )));
        }
        if statement.sha256.len() != 64 || !statement.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BundleError::Malformed(
                "sha256 must be 64 hex digits".into(),
            ));
        }
        Ok(statement)
    }
}

/// Refuses a downgrade: `offered` must have a higher sequence than `current` (the sequence running here),
/// unless `rollback_to` names `offered`'s archive, which is how an operator's explicit rollback gets through.
/// The same archive again is not a downgrade.
pub fn check_sequence(
    offered: &BundleStatement,
    current: Option<(u64, &str)>,
    rollback_to: Option<&str>,
) -> Result<(), BundleError> {
    let Some((current, current_sha)) = current else {
        return Ok(());
    };
    let same = offered.sha256.eq_ignore_ascii_case(current_sha);
    let named = rollback_to.is_some_and(|sha| sha.eq_ignore_ascii_case(&offered.sha256));
    if offered.sequence > current || same || named {
        return Ok(());
    }
    Err(BundleError::Downgrade {
        bundle: offered.sha256.clone(),
        name: offered.name.clone(),
        version: offered.version.clone(),
        offered: offered.sequence,
        current,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bundle::TrustedKeys;

    fn statement(sequence: u64, sha: char) -> BundleStatement {
        BundleStatement {
            format: FORMAT.into(),
            name: "prescreen".into(),
            version: format!("1.{sequence}.0"),
            sequence,
            sha256: sha.to_string().repeat(64),
            size: 1000,
            signed_at_us: 1,
        }
    }

    #[test]
    fn only_a_trusted_key_and_an_untouched_statement_verify() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let stranger = SigningKey::generate().unwrap();
        // During a rotation both keys are trusted.
        let trusted = TrustedKeys::new(vec![old.public(), new.public()]);
        let s = statement(3, 'a');
        for key in [&old, &new] {
            let signed = SignedStatement::sign(&s, key).unwrap();
            let round = SignedStatement::parse(&signed.to_json()).unwrap();
            assert_eq!(round.verify(&trusted).unwrap(), s);
        }
        let err = SignedStatement::sign(&s, &stranger)
            .unwrap()
            .verify(&trusted)
            .unwrap_err();
        assert!(matches!(err, BundleError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains(&stranger.id().0), "{err}");

        // Tampering with the statement (a higher sequence, another hash) breaks the signature.
        let mut signed = SignedStatement::sign(&s, &old).unwrap();
        signed.statement = signed.statement.replace("\"sequence\":3", "\"sequence\":9");
        let err = signed.verify(&trusted).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
        // A key id swapped to another trusted key does not help.
        let mut signed = SignedStatement::sign(&s, &old).unwrap();
        signed.key_id = new.id().0;
        assert!(matches!(
            signed.verify(&trusted).unwrap_err(),
            BundleError::BadSignature { .. }
        ));
        // Garbage signatures are refused, not a panic.
        let mut signed = SignedStatement::sign(&s, &old).unwrap();
        signed.signature = "zz".into();
        assert!(signed.verify(&trusted).is_err());
    }

    proptest::proptest! {
        /// A forged envelope (any statement text, any signature, the trusted key's own id) never verifies,
        /// and a statement signed by the trusted key verifies only when it is a well-formed statement (the
        /// fuzz target `bundle_verify` runs the same checks on arbitrary bytes).
        #[test]
        fn forged_envelopes_never_verify(text in ".{0,300}", signature in "[0-9a-f]{0,140}") {
            let key = SigningKey::generate().unwrap();
            let trusted = TrustedKeys::new(vec![key.public()]);
            let forged = SignedStatement { statement: text.clone(), key_id: key.id().0, signature };
            proptest::prop_assert!(forged.verify(&trusted).is_err());
            let signed = SignedStatement {
                signature: hex::encode(key.sign(text.as_bytes())),
                statement: text,
                key_id: key.id().0,
            };
            if let Ok(s) = signed.verify(&trusted) {
                proptest::prop_assert_eq!(s.format, FORMAT);
                proptest::prop_assert_eq!(s.sha256.len(), 64);
            }
        }

        /// A well-formed statement signed by the trusted key verifies to itself; the same statement with its
        /// hash cut or a character outside hex does not.
        #[test]
        fn well_formed_statements_verify_and_malformed_hashes_do_not(
            sequence in 0u64..u64::MAX,
            sha in "[0-9a-f]{64}",
            name in "[a-z]{1,12}",
            cut in 1usize..64,
        ) {
            let key = SigningKey::generate().unwrap();
            let trusted = TrustedKeys::new(vec![key.public()]);
            let mut s = statement(sequence, 'a');
            s.sha256 = sha;
            s.name = name;
            let signed = SignedStatement::sign(&s, &key).unwrap();
            proptest::prop_assert_eq!(signed.verify(&trusted).unwrap(), s.clone());
            let mut short = s.clone();
            short.sha256.truncate(cut);
            proptest::prop_assert!(SignedStatement::sign(&short, &key).unwrap().verify(&trusted).is_err());
            let mut odd = s;
            odd.sha256.replace_range(cut - 1..cut, "g");
            proptest::prop_assert!(SignedStatement::sign(&odd, &key).unwrap().verify(&trusted).is_err());
        }
    }

    #[test]
    fn an_unverified_statement_with_odd_text_is_refused_without_a_panic() {
        let key = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::new(vec![key.public()]);
        let mut s = statement(1, 'a');
        s.sha256 = "ééééééééééééé".into();
        let mut signed = SignedStatement::sign(&s, &key).unwrap();
        signed.signature = "00".repeat(64);
        assert!(matches!(
            signed.verify(&trusted).unwrap_err(),
            BundleError::BadSignature { .. }
        ));
        signed.key_id = "unknown".into();
        assert!(
            signed
                .verify(&trusted)
                .unwrap_err()
                .to_string()
                .contains("éééé")
        );
    }

    #[test]
    fn downgrades_need_an_explicit_rollback_naming_the_bundle() {
        let running = statement(5, 'b');
        let current = Some((running.sequence, running.sha256.as_str()));
        assert!(check_sequence(&statement(6, 'c'), current, None).is_ok());
        assert!(check_sequence(&running, current, None).is_ok());
        assert!(check_sequence(&statement(1, 'd'), None, None).is_ok());
        let older = statement(4, 'e');
        let err = check_sequence(&older, current, None).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Downgrade {
                    offered: 4,
                    current: 5,
                    ..
                }
            ),
            "{err}"
        );
        // Another bundle reusing the running sequence is no upgrade either.
        assert!(check_sequence(&statement(5, 'f'), current, None).is_err());
        // A rollback naming another bundle does not let this one through; naming it does.
        assert!(check_sequence(&older, current, Some(&"f".repeat(64))).is_err());
        assert!(check_sequence(&older, current, Some(&older.sha256)).is_ok());
    }
}
