//! The signed-bundle checks on hostile input, in three modes chosen by the first byte:
//!
//! - a forged `.sig` envelope: parsed and verified against a trusted key it was not signed with; it must be
//!   refused, never accepted, never a panic;
//! - a statement text signed with the trusted key (what a leaked or misused key could produce): verified,
//!   and if accepted it holds a 64-hex-digit hash, and the downgrade check answers without panicking;
//! - an archive that matches its statement's hash and size (the last line of defence after the signature):
//!   unpacked into a fresh staging directory, it writes nothing outside that directory, whatever names,
//!   links or sizes its entries claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tierline_shared::bundle::archive::{sha256_hex, unpack};
use tierline_shared::bundle::statement::FORMAT;
use tierline_shared::bundle::{
    BundleStatement, SignedStatement, SigningKey, TrustedKeys, check_sequence,
};

fn key() -> &'static (SigningKey, TrustedKeys) {
    static KEY: OnceLock<(SigningKey, TrustedKeys)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("an Ed25519 key");
        let trusted = TrustedKeys::new(vec![key.public()]);
        (key, trusted)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (signing, trusted) = key();
    match mode % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(envelope) = SignedStatement::parse(text) {
                assert!(
                    envelope.verify(trusted).is_err(),
                    "a forged envelope verified: {text}"
                );
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let envelope = SignedStatement {
                statement: text.to_string(),
                key_id: signing.id().0,
                signature: hex_sign(signing, text),
            };
            if let Ok(s) = envelope.verify(trusted) {
                assert_eq!(s.format, FORMAT);
                assert_eq!(s.sha256.len(), 64);
                let _ = check_sequence(&s, Some((s.sequence / 2, &s.sha256)), None);
                let _ = check_sequence(&s, Some((s.sequence.saturating_add(1), "0")), Some(&s.sha256));
            }
        }
        _ => {
            let statement = BundleStatement {
                format: FORMAT.into(),
                name: "full".into(),
                version: "1.0.0".into(),
                sequence: 1,
                sha256: sha256_hex(rest),
                size: rest.len() as u64,
                signed_at_us: 0,
            };
            // Staging two levels down, so an entry climbing out by one or two levels is seen.
            let root = tempfile::tempdir().expect("a temporary directory");
            let staging = root.path().join("a/b/staging");
            std::fs::create_dir_all(root.path().join("a/b")).expect("the staging parent");
            let _ = unpack(rest, &statement, &staging);
            for (dir, only) in [("", "a"), ("a", "b"), ("a/b", "staging")] {
                for entry in std::fs::read_dir(root.path().join(dir)).expect("the temporary directory") {
                    let name = entry.expect("an entry").file_name();
                    assert_eq!(name, only, "an archive wrote {name:?} outside its staging directory");
                }
            }
        }
    }
});

fn hex_sign(key: &SigningKey, text: &str) -> String {
    key.sign(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
