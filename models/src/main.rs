//! `tierline-models`: evaluate the cascade on labeled images, calibrate the edge threshold, fit an anomaly
//! prescreen on good frames, and sign model bundles for rollout.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use tierline_models::{bundle, calibrate, cascade, dataset, fit, report};

#[derive(Parser)]
#[command(name = "tierline-models", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the cascade over a labeled folder and report recall, accuracy and forwarded share.
    Eval {
        #[command(flatten)]
        set: SetArgs,
        /// Edge threshold to use instead of the prescreen manifest's.
        #[arg(long)]
        edge_threshold: Option<f32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pick the edge threshold reaching a target recall relative to the cloud model, and write it into the
    /// prescreen manifest.
    Calibrate {
        #[command(flatten)]
        set: SetArgs,
        /// Share of the cloud model's flags the edge must forward.
        #[arg(long, default_value_t = 0.995)]
        target_recall: f64,
        /// Report only; leave the manifest as it is.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build an anomaly prescreen for a surface from a folder of good frames only (PaDiM statistics over a
    /// trunk's features), calibrated to a target false-alarm rate on good frames kept out of the fit.
    Fit {
        /// Folder of good frames (its labels.csv's `good` rows when it has one).
        frames: PathBuf,
        /// Manifest of the model whose convolutional trunk gives the features; its input settings and
        /// tiling carry over.
        #[arg(long, default_value = "models/prescreen-2.toml")]
        trunk: PathBuf,
        /// Trunk tensor to take features from (repeatable; default: the layer the trunk's head pools).
        #[arg(long = "layer")]
        layers: Vec<String>,
        /// Model name (files `<NAME>-<VERSION>.onnx`, `<NAME>.toml`, `golden-<NAME>/`).
        #[arg(long)]
        name: String,
        /// Model version.
        #[arg(long, default_value = "1.0.0")]
        version: String,
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Share of good frames the prescreen may flag.
        #[arg(long, default_value_t = 0.02)]
        target_false_alarms: f64,
        /// Share of the good frames kept out of the fit to set and check the threshold.
        #[arg(long, default_value_t = 0.3)]
        holdout: f64,
        /// Covariance regularization (times the mean variance) added to each location's diagonal.
        #[arg(long, default_value_t = 0.01)]
        ridge: f64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create an Ed25519 signing key for model bundles (and its public key at <KEY>.pub).
    Keygen {
        /// Where to write the signing key; it is never overwritten.
        key: PathBuf,
    },
    /// Check a model's golden samples, pack it (manifest, model, golden samples) into a bundle and sign it.
    Sign {
        /// The model's manifest.
        manifest: PathBuf,
        /// Signing key made by `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Bundle sequence number: edges refuse a bundle whose sequence is not above the one they run,
        /// unless a rollback names it.
        #[arg(long)]
        sequence: u64,
        /// Directory to write `<name>-<version>-<hash>.bundle` and its `.sig` into.
        #[arg(long, default_value = "bundles")]
        out: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle as an edge would: signature, hash, model, golden samples.
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// Its signed statement (default: <BUNDLE>.sig).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// A trusted public key file (repeat for two keys during a rotation).
        #[arg(long, required = true)]
        trusted: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct SetArgs {
    /// Folder of labeled images: a labels.csv (file,label) or one subfolder per label.
    dir: PathBuf,
    /// Label CSV to use instead of <DIR>/labels.csv.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Prescreen (edge) manifest.
    #[arg(long, default_value = "models/prescreen.toml")]
    edge: PathBuf,
    /// Full (cloud) model manifest.
    #[arg(long, default_value = "models/full.toml")]
    cloud: PathBuf,
    /// Weight the rates to this defect prevalence (e.g. 0.02), keeping per-class rates.
    #[arg(long)]
    prevalence: Option<f64>,
    /// Images scored at once (each model gets this many runner threads).
    #[arg(long, default_value = "1")]
    threads: NonZeroUsize,
}

fn score(set: &SetArgs) -> anyhow::Result<(cascade::Tiers, Vec<cascade::Scored>)> {
    if let Some(p) = set.prevalence
        && !(p > 0.0 && p < 1.0)
    {
        anyhow::bail!("--prevalence is {p}; it must be strictly between 0 and 1");
    }
    let samples = dataset::load(&set.dir, set.labels.as_deref())?;
    let tiers = cascade::Tiers::load(&set.edge, &set.cloud, set.threads)?;
    let scored = cascade::score_all(&tiers, &samples, set.threads)?;
    Ok((tiers, scored))
}

fn eval(set: &SetArgs, edge_threshold: Option<f32>, json: bool) -> anyhow::Result<()> {
    let (tiers, scored) = score(set)?;
    let cloud = tiers.cloud.manifest();
    let threshold = edge_threshold.unwrap_or(tiers.edge.manifest().output.threshold);
    let r = report::compute_by_surface(
        &scored,
        threshold,
        cloud.output.threshold,
        cloud.good_label(),
        &cloud.output.classes,
        set.prevalence,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

fn calibrate_cmd(set: &SetArgs, target: f64, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let (tiers, scored) = score(set)?;
    drop(tiers);
    let previous = calibrate::read_threshold(&set.edge)?;
    let c = calibrate::calibrate(&scored, target, previous)?;
    if !dry_run {
        write_checked(&set.edge, c.threshold)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        println!(
            "edge threshold {:.6} (was {}): forwards {}/{} cloud-flagged frames = {:.2} % (target {:.2} %), \
             Wilson 95 % lower bound {:.2} %{}; forwards {:.2} % of the validation frames",
            c.threshold,
            c.previous_threshold
                .map_or_else(|| "unset".to_string(), |t| format!("{t:.6}")),
            c.edge_forwarded,
            c.cloud_flagged,
            100.0 * c.recall,
            100.0 * c.target_recall,
            100.0 * c.recall_lower_95,
            if c.bound_meets_target {
                ""
            } else {
                " (below the target: more cloud-flagged validation frames are needed to show it)"
            },
            100.0 * c.forwarded_frames
        );
        if dry_run {
            println!("dry run: {} left unchanged", set.edge.display());
        } else {
            println!("wrote the threshold into {}", set.edge.display());
        }
    }
    Ok(())
}

fn fit_cmd(o: &fit::FitOptions, json: bool) -> anyhow::Result<()> {
    let r = fit::fit(o, &mut |line| eprintln!("{line}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "wrote {} and {}: {} features ({}) on a {}×{} map per tile, fitted on {} good frames ({} tiles) in {:.1} s",
            r.manifest.display(),
            r.model.display(),
            r.channels,
            r.layers.join(", "),
            r.map[0],
            r.map[1],
            r.fit_frames,
            r.fit_tiles,
            r.seconds
        );
        println!(
            "threshold: raw distance {:.4}; the runtime flags {}/{} held-out good frames = {:.2} % (target {:.2} %, \
             Wilson 95 % upper bound {:.2} %)",
            r.raw_threshold,
            r.holdout_flagged,
            r.holdout_frames,
            100.0 * r.holdout_false_alarms,
            100.0 * r.target_false_alarms,
            100.0 * r.holdout_false_alarms_upper_95
        );
    }
    Ok(())
}

/// Writes the threshold, then loads the manifest as the runtime would and checks its golden samples; puts the
/// old manifest back if they fail.
fn write_checked(manifest: &Path, threshold: f32) -> anyhow::Result<()> {
    let old = calibrate::write_threshold(manifest, threshold)?;
    let check = (|| -> anyhow::Result<()> {
        let m = tierline_shared::manifest::Manifest::load(manifest)?;
        let runner = tierline_shared::runner::ModelRunner::start(m, Default::default())?;
        runner.check_golden_blocking()?;
        Ok(())
    })();
    if let Err(e) = check {
        std::fs::write(manifest, old)
            .with_context(|| format!("restoring {}", manifest.display()))?;
        anyhow::bail!(
            "threshold {threshold:.6} was not written: with it the prescreen fails its manifest check ({e}); \
             the manifest is unchanged"
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Eval {
            set,
            edge_threshold,
            json,
        } => eval(set, *edge_threshold, *json),
        Command::Calibrate {
            set,
            target_recall,
            dry_run,
            json,
        } => calibrate_cmd(set, *target_recall, *dry_run, *json),
        Command::Fit {
            frames,
            trunk,
            layers,
            name,
            version,
            out,
            target_false_alarms,
            holdout,
            ridge,
            json,
        } => fit_cmd(
            &fit::FitOptions {
                frames: frames.clone(),
                trunk: trunk.clone(),
                layers: layers.clone(),
                name: name.clone(),
                version: version.clone(),
                out: out.clone(),
                target_false_alarms: *target_false_alarms,
                holdout: *holdout,
                ridge: *ridge,
            },
            *json,
        ),
        Command::Keygen { key } => bundle::keygen(key),
        Command::Sign {
            manifest,
            key,
            sequence,
            out,
            json,
        } => bundle::sign(manifest, key, *sequence, out).and_then(|s| {
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "signed {} (sequence {}, key {}); statement in {}",
                    s.bundle.display(),
                    s.sequence,
                    s.key_id,
                    s.signature.display()
                );
            }
            Ok(())
        }),
        Command::Verify {
            bundle: path,
            signature,
            trusted,
        } => {
            let signature = signature
                .clone()
                .unwrap_or_else(|| bundle::signature_path(path));
            bundle::verify(path, &signature, trusted).map(|line| println!("{line}"))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierline-models: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
