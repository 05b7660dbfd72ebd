//! `models`: the model registry, for operators: publish signed bundles (made with `tierline-models sign`),
//! list them and the targets, point a target at a bundle or roll it back, and read the recorded changes.

use crate::conn::ModelsClient;
use crate::error::Refused;
use crate::output::{or_dash, table, time};
use crate::pb;
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `models`.
#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ModelsCommand {
    /// Publish a signed bundle: the server checks its signature, hash and contents before storing it.
    Publish {
        /// The `.bundle` file.
        bundle: PathBuf,
        /// Its signed statement (default: <BUNDLE>.sig).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// List published bundles and what each target runs.
    List,
    /// Point a target (`edges/<group>`, `edge/<edge id>` or `workers/<group>`) at a bundle (its hash or a
    /// unique prefix).
    Target {
        /// `edges/<group>`, `edge/<edge id>` or `workers/<group>`.
        target: String,
        /// Bundle hash or unique prefix.
        bundle: String,
        /// Why (recorded with the change).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Send a target back to an older bundle (edges accept a lower sequence only when it is named so).
    Rollback {
        /// `edges/<group>`, `edge/<edge id>` or `workers/<group>`.
        target: String,
        /// Bundle hash or unique prefix.
        bundle: String,
        /// Why (recorded with the change).
        #[arg(long)]
        reason: String,
    },
    /// Recorded changes, oldest first.
    Events {
        /// Only those about this target, edge or worker.
        #[arg(long, default_value = "")]
        subject: String,
        /// The latest this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn bundle_json(b: &pb::Bundle) -> serde_json::Value {
    json!({"sha256": b.sha256, "name": b.name, "version": b.version, "sequence": b.sequence, "size": b.size,
           "key_id": b.key_id, "published_by": b.published_by, "published_us": b.published_us})
}

fn target_json(t: &pb::Target) -> serde_json::Value {
    json!({"target": t.target, "name": t.name, "sha256": t.sha256, "previous": t.previous,
           "rollback": t.rollback, "changed_by": t.changed_by, "changed_us": t.changed_us})
}

fn short(sha: &str) -> String {
    or_dash(&sha.chars().take(12).collect::<String>())
}

/// Runs the `models` subcommand.
pub async fn run(client: &mut ModelsClient, args: &ModelsArgs, json: bool) -> anyhow::Result<()> {
    match &args.command {
        ModelsCommand::Publish { bundle, signature } => {
            let sig_path = signature.clone().unwrap_or_else(|| {
                let mut p = bundle.as_os_str().to_owned();
                p.push(".sig");
                p.into()
            });
            let bytes = std::fs::read(bundle)
                .with_context(|| format!("cannot read the bundle {}", bundle.display()))?;
            let signed = std::fs::read_to_string(&sig_path).with_context(|| {
                format!(
                    "cannot read its signed statement {} (pass --signature)",
                    sig_path.display()
                )
            })?;
            let r = client
                .publish_bundle(pb::PublishBundleRequest {
                    signed_statement: signed,
                    bundle: bytes,
                })
                .await
                .map_err(Refused)?
                .into_inner();
            let b = r.bundle.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    json!({"bundle": bundle_json(&b), "already_published": r.already_published})
                );
            } else {
                println!(
                    "{} {} {} sequence {} ({} bytes, key {}){}",
                    if r.already_published {
                        "already published:"
                    } else {
                        "published"
                    },
                    b.name,
                    b.version,
                    b.sequence,
                    b.size,
                    b.key_id,
                    format_args!("\n  {}", b.sha256)
                );
            }
        }
        ModelsCommand::List => {
            let r = client
                .list_bundles(pb::ListBundlesRequest {})
                .await
                .map_err(Refused)?
                .into_inner();
            if json {
                let bundles: Vec<_> = r.bundles.iter().map(bundle_json).collect();
                let targets: Vec<_> = r.targets.iter().map(target_json).collect();
                println!("{}", json!({"bundles": bundles, "targets": targets}));
            } else {
                let rows: Vec<_> = r
                    .bundles
                    .iter()
                    .map(|b| {
                        vec![
                            short(&b.sha256),
                            b.name.clone(),
                            b.version.clone(),
                            b.sequence.to_string(),
                            b.size.to_string(),
                            b.key_id.clone(),
                            b.published_by.clone(),
                            time(b.published_us),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "BUNDLE",
                        "NAME",
                        "VERSION",
                        "SEQUENCE",
                        "BYTES",
                        "KEY",
                        "PUBLISHED BY",
                        "AT",
                    ],
                    &rows,
                );
                let rows: Vec<_> = r
                    .targets
                    .iter()
                    .map(|t| {
                        vec![
                            t.target.clone(),
                            t.name.clone(),
                            short(&t.sha256),
                            short(&t.previous),
                            if t.rollback { "rollback" } else { "" }.into(),
                            t.changed_by.clone(),
                            time(t.changed_us),
                        ]
                    })
                    .collect();
                println!();
                table(
                    &[
                        "TARGET",
                        "NAME",
                        "BUNDLE",
                        "PREVIOUS",
                        "",
                        "CHANGED BY",
                        "AT",
                    ],
                    &rows,
                );
            }
        }
        ModelsCommand::Target {
            target,
            bundle,
            reason,
        } => set_target(client, target, bundle, false, reason, json).await?,
        ModelsCommand::Rollback {
            target,
            bundle,
            reason,
        } => set_target(client, target, bundle, true, reason, json).await?,
        ModelsCommand::Events { subject, limit } => {
            let r = client
                .list_model_events(pb::ListModelEventsRequest {
                    subject: subject.clone(),
                    limit: *limit,
                })
                .await
                .map_err(Refused)?
                .into_inner();
            if json {
                let events: Vec<_> = r
                    .events
                    .iter()
                    .map(|e| {
                        json!({"at_us": e.at_us, "actor": e.actor, "subject": e.subject,
                               "sha256": e.sha256, "event": e.event, "detail": e.detail})
                    })
                    .collect();
                println!("{}", json!({ "events": events }));
            } else {
                let rows: Vec<_> = r
                    .events
                    .iter()
                    .map(|e| {
                        vec![
                            time(e.at_us),
                            e.subject.clone(),
                            e.event.clone(),
                            short(&e.sha256),
                            e.actor.clone(),
                            e.detail.clone(),
                        ]
                    })
                    .collect();
                table(&["AT", "SUBJECT", "EVENT", "BUNDLE", "BY", "DETAIL"], &rows);
            }
        }
    }
    Ok(())
}

async fn set_target(
    client: &mut ModelsClient,
    target: &str,
    bundle: &str,
    rollback: bool,
    reason: &str,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .set_target(pb::SetTargetRequest {
            target: target.into(),
            bundle: bundle.into(),
            rollback,
            reason: reason.into(),
        })
        .await
        .map_err(Refused)?
        .into_inner();
    let t = r.target.unwrap_or_default();
    if json {
        println!("{}", target_json(&t));
    } else {
        println!(
            "{} {} → {} ({}){}",
            t.target,
            t.name,
            t.sha256,
            if t.rollback { "rollback" } else { "target" },
            if t.previous.is_empty() {
                String::new()
            } else {
                format!(", was {}", short(&t.previous))
            }
        );
    }
    Ok(())
}
