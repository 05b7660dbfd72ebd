//! `keygen`, `sign` and `verify`: the operator's side of signed model bundles (see
//! `tierline_shared::bundle`). The signing key is read here and nowhere else; what leaves this machine is the
//! bundle and its signed statement.

use anyhow::Context;
use std::path::{Path, PathBuf};
use tierline_shared::bundle::{SignedStatement, SigningKey, TrustedKeys, archive, keys};
use tierline_shared::manifest::Manifest;
use tierline_shared::runner::{ModelRunner, RunnerConfig};

/// Creates a signing key at `path` (owner-only) and its public key at `<path>.pub`.
pub fn keygen(path: &Path) -> anyhow::Result<()> {
    let key = SigningKey::generate()?;
    key.save(path).with_context(|| {
        format!(
            "writing the new key to {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    println!(
        "signing key {} written to {} (keep it on this machine); give edges and workers {}",
        key.id(),
        path.display(),
        keys::public_path(path).display()
    );
    Ok(())
}

/// Where `sign` wrote a bundle.
#[derive(Debug, serde::Serialize)]
pub struct Signed {
    /// The archive.
    pub bundle: PathBuf,
    /// Its signed statement.
    pub signature: PathBuf,
    /// The archive's SHA-256.
    pub sha256: String,
    /// Sequence signed.
    pub sequence: u64,
    /// Id of the signing key.
    pub key_id: String,
}

/// Loads the model as the runtime would, checks its golden samples, packs it and signs the bundle at
/// `sequence`, writing `<name>-<version>-<sha prefix>.bundle` and `.bundle.sig` into `out`.
pub fn sign(manifest: &Path, key: &Path, sequence: u64, out: &Path) -> anyhow::Result<Signed> {
    let key = SigningKey::load(key)?;
    let runner = ModelRunner::start(Manifest::load(manifest)?, RunnerConfig::default())?;
    runner.check_golden_blocking().with_context(|| {
        format!(
            "{} fails its golden samples; a bundle that fails them would be refused by every edge, so it is \
             not signed",
            manifest.display()
        )
    })?;
    drop(runner);
    let packed = archive::pack(manifest)?;
    let signed = SignedStatement::sign(&packed.statement(sequence), &key)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stem = format!(
        "{}-{}-{}",
        packed.manifest.name,
        packed.manifest.version,
        &packed.sha256[..12]
    );
    let bundle = out.join(format!("{stem}.bundle"));
    let signature = out.join(format!("{stem}.bundle.sig"));
    std::fs::write(&bundle, &packed.bytes)
        .with_context(|| format!("writing {}", bundle.display()))?;
    std::fs::write(&signature, signed.to_json())
        .with_context(|| format!("writing {}", signature.display()))?;
    Ok(Signed {
        bundle,
        signature,
        sha256: packed.sha256,
        sequence,
        key_id: key.id().0,
    })
}

/// The signature file `sign` writes beside `bundle`.
pub fn signature_path(bundle: &Path) -> PathBuf {
    let mut p = bundle.as_os_str().to_owned();
    p.push(".sig");
    p.into()
}

/// Verifies a bundle as an edge would before using it: signature by a trusted key, size and hash, unpacked
/// into a scratch directory, model hash, golden samples. Returns a one-line description.
pub fn verify(bundle: &Path, signature: &Path, trusted: &[PathBuf]) -> anyhow::Result<String> {
    anyhow::ensure!(
        !trusted.is_empty(),
        "name at least one trusted public key with --trusted"
    );
    let trusted = TrustedKeys::load(trusted)?;
    let text = std::fs::read_to_string(signature)
        .with_context(|| format!("reading the signature {}", signature.display()))?;
    let signed = SignedStatement::parse(&text)?;
    let statement = signed.verify(&trusted)?;
    let bytes = std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let manifest = archive::unpack(&bytes, &statement, &scratch.path().join("bundle"))?;
    let runner = ModelRunner::start(manifest, RunnerConfig::default())?;
    let slowest = runner.check_golden_blocking()?;
    Ok(format!(
        "{}: {} sequence {}, signed by key {}, {} bytes, model hash and {} golden samples pass (slowest {:.1} ms)",
        bundle.display(),
        statement.label(),
        statement.sequence,
        signed.key_id,
        statement.size,
        runner.manifest().golden.len(),
        slowest.as_secs_f64() * 1000.0
    ))
}
