//! The bundle archive: a plain tar of `manifest.toml`, the model file and the golden samples, written the
//! same way every time (sorted names, fixed modes and times), so packing the same model twice gives the same
//! bytes and the same address.

use super::BundleError;
use super::statement::{BundleStatement, FORMAT};
use crate::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The manifest's name inside every bundle.
pub const MANIFEST: &str = "manifest.toml";

/// A packed bundle.
#[derive(Debug)]
pub struct Packed {
    /// The archive.
    pub bytes: Vec<u8>,
    /// Lowercase hex SHA-256 of `bytes`: the bundle's address.
    pub sha256: String,
    /// The manifest packed.
    pub manifest: Manifest,
}

impl Packed {
    /// The statement to sign for this bundle at `sequence`.
    pub fn statement(&self, sequence: u64) -> BundleStatement {
        BundleStatement {
            format: FORMAT.into(),
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            sequence,
            sha256: self.sha256.clone(),
            size: self.bytes.len() as u64,
            signed_at_us: crate::time::now_us(),
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Packs the model the manifest at `manifest_path` describes: the manifest as written, the model file (its
/// hash checked against the manifest first) and every golden sample.
pub fn pack(manifest_path: &Path) -> Result<Packed, BundleError> {
    let manifest = Manifest::load(manifest_path)?;
    let label = manifest_path.display().to_string();
    let text = std::fs::read(manifest_path).map_err(|source| BundleError::Io {
        path: manifest_path.to_path_buf(),
        source,
    })?;
    let mut files = BTreeMap::new();
    files.insert(PathBuf::from(MANIFEST), text);
    let model = manifest.read_verified_model()?;
    files.insert(relative(&label, &manifest.file)?, model);
    for g in &manifest.golden {
        let path = manifest.dir.join(&g.file);
        let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path, source })?;
        files.insert(relative(&label, &g.file)?, bytes);
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (name, bytes) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, &bytes[..])
            .map_err(|e| BundleError::Archive {
                bundle: label.clone(),
                problem: format!("cannot add {}: {e}", name.display()),
            })?;
    }
    let bytes = builder.into_inner().map_err(|e| BundleError::Archive {
        bundle: label.clone(),
        problem: e.to_string(),
    })?;
    Ok(Packed {
        sha256: sha256_hex(&bytes),
        bytes,
        manifest,
    })
}

/// Checks an archive's size and hash against its (verified) statement.
pub fn check(bytes: &[u8], statement: &BundleStatement) -> Result<(), BundleError> {
    let got = bytes.len() as u64;
    if got < statement.size {
        return Err(BundleError::Truncated {
            bundle: statement.sha256.clone(),
            expected: statement.size,
            got,
        });
    }
    if got > statement.size {
        return Err(BundleError::Mismatch {
            bundle: statement.sha256.clone(),
            problem: format!("{got} bytes where the statement says {}", statement.size),
        });
    }
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(&statement.sha256) {
        return Err(BundleError::Mismatch {
            bundle: statement.sha256.clone(),
            problem: format!("its SHA-256 is {actual}"),
        });
    }
    Ok(())
}

/// Checks the archive against its (verified) statement, unpacks it into `dir` (created; it must not exist
/// yet) and loads its manifest, checking the model file's hash and that the manifest names the model the
/// statement names. On error `dir` may hold part of the bundle; the caller discards it.
pub fn unpack(
    bytes: &[u8],
    statement: &BundleStatement,
    dir: &Path,
) -> Result<Manifest, BundleError> {
    check(bytes, statement)?;
    let bundle = statement.sha256.clone();
    let archive_err = |problem: String| BundleError::Archive {
        bundle: bundle.clone(),
        problem,
    };
    std::fs::create_dir(dir).map_err(|source| BundleError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| archive_err(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(format!("unreadable entry: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| archive_err(format!("unreadable entry name: {e}")))?
            .into_owned();
        let unsafe_entry = || BundleError::UnsafeEntry {
            bundle: bundle.clone(),
            entry: name.display().to_string(),
        };
        if entry.header().entry_type() != tar::EntryType::Regular || !is_plain(&name) {
            return Err(unsafe_entry());
        }
        let target = dir.join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|source| BundleError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|source| BundleError::Io {
                path: target.clone(),
                source,
            })?;
        std::io::copy(&mut entry, &mut out).map_err(|source| BundleError::Io {
            path: target.clone(),
            source,
        })?;
        out.sync_all().map_err(|source| BundleError::Io {
            path: target,
            source,
        })?;
    }
    sync_dirs(dir)?;
    let manifest = Manifest::load(&dir.join(MANIFEST))?;
    if manifest.name != statement.name || manifest.version != statement.version {
        return Err(BundleError::Mismatch {
            bundle,
            problem: format!(
                "its manifest is {} {}, the statement names {} {}",
                manifest.name, manifest.version, statement.name, statement.version
            ),
        });
    }
    manifest.read_verified_model()?;
    for g in &manifest.golden {
        if !is_plain(&g.file) || !dir.join(&g.file).is_file() {
            return Err(archive_err(format!(
                "golden sample {} is not in the bundle",
                g.file.display()
            )));
        }
    }
    Ok(manifest)
}

/// Makes the directory entries under `dir` (and `dir` itself) durable: the files were synced as they were
/// written, their names are synced here.
pub fn sync_dirs(dir: &Path) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_dirs(&path)?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Whether `p` is a relative path of plain names (no `..`, no root, not empty).
fn is_plain(p: &Path) -> bool {
    p.components().count() > 0 && p.components().all(|c| matches!(c, Component::Normal(_)))
}

fn relative(label: &str, p: &Path) -> Result<PathBuf, BundleError> {
    if is_plain(p) {
        Ok(p.to_path_buf())
    } else {
        Err(BundleError::Archive {
            bundle: label.to_string(),
            problem: format!(
                "{} is not a plain path below the manifest's directory; a bundle only carries files beside \
                 or below its manifest",
                p.display()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bundle::{SignedStatement, SigningKey, TrustedKeys};
    use proptest::strategy::Strategy;

    fn shipped_prescreen() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/prescreen.toml")
    }

    #[test]
    fn a_packed_bundle_unpacks_to_the_same_model_and_packs_to_the_same_bytes() {
        let packed = pack(&shipped_prescreen()).unwrap();
        assert_eq!(pack(&shipped_prescreen()).unwrap().sha256, packed.sha256);
        let key = SigningKey::generate().unwrap();
        let signed = SignedStatement::sign(&packed.statement(7), &key).unwrap();
        let statement = signed
            .verify(&TrustedKeys::new(vec![key.public()]))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged");
        let manifest = unpack(&packed.bytes, &statement, &staged).unwrap();
        assert_eq!(manifest.name, "prescreen");
        assert_eq!(manifest.sha256, packed.manifest.sha256);
        // The model file unpacked is byte for byte the one packed (an independent read of both files).
        assert_eq!(
            std::fs::read(staged.join(&manifest.file)).unwrap(),
            std::fs::read(packed.manifest.model_path()).unwrap()
        );
        assert_eq!(manifest.golden.len(), packed.manifest.golden.len());
        for g in &manifest.golden {
            assert!(staged.join(&g.file).is_file());
        }
    }

    #[test]
    fn truncated_altered_and_padded_archives_are_refused_before_unpacking() {
        let packed = pack(&shipped_prescreen()).unwrap();
        let statement = packed.statement(1);
        let dir = tempfile::tempdir().unwrap();
        let cut = &packed.bytes[..packed.bytes.len() / 2];
        let err = unpack(cut, &statement, &dir.path().join("a")).unwrap_err();
        assert!(matches!(err, BundleError::Truncated { .. }), "{err}");
        let mut altered = packed.bytes.clone();
        let mid = altered.len() / 3;
        altered[mid] ^= 0x01;
        let err = unpack(&altered, &statement, &dir.path().join("b")).unwrap_err();
        assert!(matches!(err, BundleError::Mismatch { .. }), "{err}");
        let mut padded = packed.bytes.clone();
        padded.push(0);
        let err = unpack(&padded, &statement, &dir.path().join("c")).unwrap_err();
        assert!(matches!(err, BundleError::Mismatch { .. }), "{err}");
        // Nothing was unpacked for any of them.
        for d in ["a", "b", "c"] {
            assert!(!dir.path().join(d).exists());
        }
    }

    #[test]
    fn entries_outside_the_staging_directory_are_refused() {
        // A hand-made archive with an escaping name; even correctly hashed (as a signed one would be) it
        // must not write outside the staging directory.
        let mut header = tar::Header::new_gnu();
        let evil = b"../escaped.txt";
        header.as_gnu_mut().unwrap().name[..evil.len()].copy_from_slice(evil);
        header.set_size(2);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b"hi"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let statement = statement_of(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&bytes, &statement, &dir.path().join("staged")).unwrap_err();
        assert!(matches!(err, BundleError::UnsafeEntry { .. }), "{err}");
        assert!(!dir.path().join("escaped.txt").exists());
    }

    /// A statement naming `bytes` by hash and size, as a signed one would (the signature is not checked here).
    fn statement_of(bytes: &[u8]) -> BundleStatement {
        BundleStatement {
            format: FORMAT.into(),
            name: "prescreen".into(),
            version: "1".into(),
            sequence: 1,
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
            signed_at_us: 0,
        }
    }

    /// A tar archive of hand-made entries: any name bytes, any entry type, a link target.
    fn archive(entries: &[(String, u8, String)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            let gnu = header.as_gnu_mut().unwrap();
            let n = name.len().min(gnu.name.len());
            gnu.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            let l = link.len().min(gnu.linkname.len());
            gnu.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
            header.set_entry_type(tar::EntryType::new(*kind));
            header.set_size(2);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, &b"hi"[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    proptest::proptest! {
        /// Whatever names, types and links a correctly hashed archive's entries claim, unpacking writes
        /// nothing outside its staging directory (the fuzz target `bundle_verify` runs the same check on
        /// arbitrary bytes).
        #[test]
        fn no_archive_writes_outside_its_staging_directory(
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "a.onnx", "../up", "..", "/abs", "x/../../up", "dir/", "./b", "x/y/z.jpg", "up",
                        "a.onnx",
                    ])
                    .prop_map(String::from),
                    proptest::sample::select(vec![b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'L', b'x']),
                    proptest::sample::select(vec!["", "../up", "../../up", "a.onnx"]).prop_map(String::from),
                ),
                0..6,
            )
        ) {
            let bytes = archive(&entries);
            let statement = statement_of(&bytes);
            // Staging two levels down, so an entry climbing out of it by one or two levels lands where it
            // is seen (absolute names and links are refused before anything is written).
            let root = tempfile::tempdir().unwrap();
            let staging = root.path().join("a/b/staging");
            std::fs::create_dir_all(staging.parent().unwrap()).unwrap();
            let _ = unpack(&bytes, &statement, &staging);
            for (dir, only) in [("", "a"), ("a", "b"), ("a/b", "staging")] {
                for entry in std::fs::read_dir(root.path().join(dir)).unwrap() {
                    let name = entry.unwrap().file_name();
                    proptest::prop_assert_eq!(name, only);
                }
            }
        }
    }
}
