//! `rollout`: staged model rollouts to an edge group, for operators: start one, watch its stages and edges,
//! pause, resume, abort or roll it back.

use crate::conn::ModelsClient;
use crate::error::Refused;
use crate::output::{or_dash, table, time};
use crate::pb;
use serde_json::json;

/// Arguments of `rollout`.
#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    /// What to do.
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(clap::Subcommand, Debug)]
enum RolloutCommand {
    /// Roll a published bundle out to an edge group, stage by stage (the server's `[rollouts]`).
    Start {
        /// Bundle hash or unique prefix.
        bundle: String,
        /// The edge group (`edges/<group>` is its target).
        #[arg(long)]
        group: String,
        /// Why (recorded with the rollout).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Rollouts, newest first, with each edge they reached.
    List {
        /// Only unfinished ones.
        #[arg(long)]
        active: bool,
    },
    /// Stop advancing until resumed.
    Pause {
        /// Rollout id.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Go on after a pause.
    Resume {
        /// Rollout id.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Stop for good where it is (edges keep what they run).
    Abort {
        /// Rollout id.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Send every edge the rollout reached back to the bundle before.
    Rollback {
        /// Rollout id.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

fn rollout_json(r: &pb::Rollout) -> serde_json::Value {
    let edges: Vec<_> = r
        .edges
        .iter()
        .map(|e| json!({"edge_id": e.edge_id, "stage": e.stage, "status": e.status, "detail": e.detail}))
        .collect();
    json!({"id": r.id, "group": r.group, "name": r.name, "sha256": r.sha256, "version": r.version,
           "previous": r.previous, "previous_version": r.previous_version, "state": r.state,
           "stage": r.stage, "stages": r.stages, "reason": r.reason, "created_by": r.created_by,
           "created_us": r.created_us, "updated_us": r.updated_us, "edges": edges})
}

fn print(r: &pb::Rollout) {
    println!(
        "rollout {}: {} {} -> {} on edges/{}: {} (stage {} of {}), started by {} at {}",
        r.id,
        r.name,
        r.previous_version,
        r.version,
        r.group,
        r.state,
        r.stage,
        r.stages,
        r.created_by,
        time(r.created_us)
    );
    println!("  {}", or_dash(&r.reason));
    let rows: Vec<_> = r
        .edges
        .iter()
        .map(|e| {
            vec![
                e.edge_id.clone(),
                e.stage.to_string(),
                e.status.clone(),
                or_dash(&e.detail),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(&["EDGE", "STAGE", "STATUS", "DETAIL"], &rows);
    }
}

/// Runs the `rollout` subcommand.
pub async fn run(client: &mut ModelsClient, args: &RolloutArgs, json: bool) -> anyhow::Result<()> {
    let control = |id: u64, action: &str, reason: &str| pb::ControlRolloutRequest {
        id,
        action: action.into(),
        reason: reason.into(),
    };
    let one = match &args.command {
        RolloutCommand::Start {
            bundle,
            group,
            reason,
        } => client
            .start_rollout(pb::StartRolloutRequest {
                group: group.clone(),
                bundle: bundle.clone(),
                reason: reason.clone(),
            })
            .await
            .map_err(Refused)?
            .into_inner(),
        RolloutCommand::List { active } => {
            let r = client
                .list_rollouts(pb::ListRolloutsRequest {
                    active_only: *active,
                })
                .await
                .map_err(Refused)?
                .into_inner();
            if json {
                let all: Vec<_> = r.rollouts.iter().map(rollout_json).collect();
                println!("{}", json!({"rollouts": all}));
            } else if r.rollouts.is_empty() {
                println!("no rollouts");
            } else {
                for ro in &r.rollouts {
                    print(ro);
                }
            }
            return Ok(());
        }
        RolloutCommand::Pause { id, reason } => client
            .control_rollout(control(*id, "pause", reason))
            .await
            .map_err(Refused)?
            .into_inner(),
        RolloutCommand::Resume { id, reason } => client
            .control_rollout(control(*id, "resume", reason))
            .await
            .map_err(Refused)?
            .into_inner(),
        RolloutCommand::Abort { id, reason } => client
            .control_rollout(control(*id, "abort", reason))
            .await
            .map_err(Refused)?
            .into_inner(),
        RolloutCommand::Rollback { id, reason } => client
            .control_rollout(control(*id, "rollback", reason))
            .await
            .map_err(Refused)?
            .into_inner(),
    };
    let r = one.rollout.unwrap_or_default();
    if json {
        println!("{}", rollout_json(&r));
    } else {
        print(&r);
    }
    Ok(())
}
