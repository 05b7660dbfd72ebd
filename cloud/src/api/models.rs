//! The `Models` gRPC service (`proto/tierline/review/v1/review.proto`): publishing bundles and steering
//! targets, for operators only. It shares the review API's server and bearer tokens; who is an operator is
//! `api.operators`.

use super::{Reviewer, pb};
use crate::registry::{Registry, RegistryError};
use crate::rollout::{self, Control, RolloutConfig, RolloutError, plan};
use crate::store::RolloutRow;
use crate::store::{BundleRow, Published, RegistryRule, StoreError, TargetRow};
use std::collections::BTreeSet;
use std::sync::Arc;
use tierline_shared::bundle::BundleError;
use tonic::{Request, Response, Status};

/// The `Models` service.
#[derive(Clone)]
pub struct ModelsService {
    registry: Registry,
    /// Reviewer names allowed to call it; `None`: everyone (the API has no tokens).
    operators: Option<Arc<BTreeSet<String>>>,
    /// Stages and gates of new rollouts.
    rollouts: RolloutConfig,
}

impl ModelsService {
    /// The service over `registry`, callable by `operators` (`None`: by every caller, for an API without
    /// tokens).
    pub fn new(registry: Registry, operators: Option<BTreeSet<String>>) -> Self {
        Self {
            registry,
            operators: operators.map(Arc::new),
            rollouts: RolloutConfig::default(),
        }
    }

    /// Starts rollouts with `rollouts`' stages.
    pub fn with_rollouts(mut self, rollouts: RolloutConfig) -> Self {
        self.rollouts = rollouts;
        self
    }

    /// The operator making the call, or `permission_denied`.
    fn operator<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let who = request
            .extensions()
            .get::<Reviewer>()
            .map(|r| r.0.clone())
            .ok_or_else(|| Status::unauthenticated("the caller is not identified"))?;
        match &self.operators {
            Some(ops) if !ops.contains(&who) => Err(Status::permission_denied(format!(
                "{who} is not an operator: model bundles and targets are for the names in the server's \
                 api.operators"
            ))),
            _ => Ok(who),
        }
    }
}

fn status(e: RegistryError) -> Status {
    match e {
        RegistryError::Store(StoreError::NotFound { .. })
        | RegistryError::Rule(RegistryRule::UnknownBundle(_)) => Status::not_found(e.to_string()),
        RegistryError::Store(other) => {
            tracing::warn!(error = %other, "Models API call failed in the store.");
            Status::unavailable(
                "the registry's store is unavailable; try again later (the cause is in the cloud worker's log)",
            )
        }
        RegistryError::NoTrustedKeys => Status::failed_precondition(e.to_string()),
        RegistryError::Downgrade { .. }
        | RegistryError::Rule(
            RegistryRule::SequenceTaken { .. } | RegistryRule::AlreadyPublished { .. },
        ) => Status::failed_precondition(e.to_string()),
        RegistryError::Bundle(
            BundleError::UnknownKey { .. } | BundleError::BadSignature { .. },
        ) => Status::permission_denied(e.to_string()),
        RegistryError::Bundle(BundleError::Io { .. }) => {
            tracing::warn!(error = %e, "Models API could not check a bundle.");
            Status::internal("the worker could not check the bundle (its log says why)")
        }
        _ => Status::invalid_argument(e.to_string()),
    }
}

fn rollout_status(e: RolloutError) -> Status {
    match e {
        RolloutError::Rule(RegistryRule::UnknownBundle(_) | RegistryRule::UnknownRollout(_)) => {
            Status::not_found(e.to_string())
        }
        RolloutError::Rule(_) => Status::failed_precondition(e.to_string()),
        RolloutError::Invalid(_) => Status::failed_precondition(e.to_string()),
        RolloutError::Store(other) => status(RegistryError::Store(other)),
    }
}

fn rollout_pb(r: RolloutRow) -> pb::Rollout {
    let stages: Vec<plan::StageSize> = serde_json::from_str(&r.stages).unwrap_or_default();
    let members: Vec<String> = serde_json::from_str(&r.members).unwrap_or_default();
    let stages = plan::stage_counts(&stages, members.len()).len() as u32;
    let progress = plan::Progress::parse(&r.progress);
    pb::Rollout {
        id: r.id.max(0) as u64,
        group: r.grp,
        name: r.name,
        sha256: r.sha256,
        version: r.version,
        previous: r.previous,
        previous_version: r.previous_version,
        state: r.state,
        stage: r.stage.max(0) as u32 + 1,
        stages,
        reason: r.reason,
        created_by: r.created_by,
        created_us: r.created_us,
        updated_us: r.updated_us,
        edges: progress
            .edges
            .into_iter()
            .map(|(edge_id, p)| pb::RolloutEdge {
                edge_id,
                stage: p.stage + 1,
                status: if p.failed.is_some() {
                    "failed"
                } else if p.active_us.is_some() {
                    "active"
                } else {
                    "pending"
                }
                .into(),
                detail: p.failed.unwrap_or(p.note),
            })
            .collect(),
    }
}

fn bundle_pb(r: BundleRow) -> pb::Bundle {
    pb::Bundle {
        sha256: r.sha256,
        name: r.name,
        version: r.version,
        sequence: r.sequence.max(0) as u64,
        size: r.size.max(0) as u64,
        key_id: r.key_id,
        published_by: r.published_by,
        published_us: r.published_us,
    }
}

fn target_pb(t: TargetRow) -> pb::Target {
    pb::Target {
        target: t.target,
        name: t.name,
        sha256: t.sha256,
        previous: t.previous.unwrap_or_default(),
        rollback: t.rollback,
        changed_by: t.changed_by,
        changed_us: t.changed_us,
    }
}

#[tonic::async_trait]
impl pb::models_server::Models for ModelsService {
    async fn publish_bundle(
        &self,
        request: Request<pb::PublishBundleRequest>,
    ) -> Result<Response<pb::PublishBundleResponse>, Status> {
        let who = self.operator(&request)?;
        let r = request.into_inner();
        let (row, outcome) = self
            .registry
            .publish(&r.signed_statement, r.bundle, &who)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PublishBundleResponse {
            bundle: Some(bundle_pb(row)),
            already_published: outcome == Published::Known,
        }))
    }

    async fn list_bundles(
        &self,
        request: Request<pb::ListBundlesRequest>,
    ) -> Result<Response<pb::ListBundlesResponse>, Status> {
        self.operator(&request)?;
        let store = self.registry.store();
        let bundles = store.list_bundles().await.map_err(|e| status(e.into()))?;
        let targets = store.model_targets().await.map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListBundlesResponse {
            bundles: bundles.into_iter().map(bundle_pb).collect(),
            targets: targets.into_iter().map(target_pb).collect(),
        }))
    }

    async fn set_target(
        &self,
        request: Request<pb::SetTargetRequest>,
    ) -> Result<Response<pb::SetTargetResponse>, Status> {
        let who = self.operator(&request)?;
        let r = request.into_inner();
        let row = self
            .registry
            .set_target(&r.target, &r.bundle, r.rollback, &who, &r.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetTargetResponse {
            target: Some(target_pb(row)),
        }))
    }

    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::RolloutResponse>, Status> {
        let who = self.operator(&request)?;
        let r = request.into_inner();
        let row = rollout::start(
            self.registry.store(),
            &self.rollouts,
            &r.group,
            &r.bundle,
            &who,
            &r.reason,
        )
        .await
        .map_err(rollout_status)?;
        Ok(Response::new(pb::RolloutResponse {
            rollout: Some(rollout_pb(row)),
        }))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        self.operator(&request)?;
        let r = request.into_inner();
        let rows = self
            .registry
            .store()
            .rollouts(r.active_only)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: rows.into_iter().map(rollout_pb).collect(),
        }))
    }

    async fn control_rollout(
        &self,
        request: Request<pb::ControlRolloutRequest>,
    ) -> Result<Response<pb::RolloutResponse>, Status> {
        let who = self.operator(&request)?;
        let r = request.into_inner();
        let action: Control = r.action.parse().map_err(Status::invalid_argument)?;
        let id =
            i64::try_from(r.id).map_err(|_| Status::not_found(format!("no rollout {}", r.id)))?;
        let row = rollout::control(self.registry.store(), id, action, &who, &r.reason)
            .await
            .map_err(rollout_status)?;
        Ok(Response::new(pb::RolloutResponse {
            rollout: Some(rollout_pb(row)),
        }))
    }

    async fn list_model_events(
        &self,
        request: Request<pb::ListModelEventsRequest>,
    ) -> Result<Response<pb::ListModelEventsResponse>, Status> {
        self.operator(&request)?;
        let r = request.into_inner();
        let limit = if r.limit == 0 {
            100
        } else {
            r.limit.min(10_000)
        };
        let subject = (!r.subject.is_empty()).then_some(r.subject.as_str());
        let events = self
            .registry
            .store()
            .model_events(subject, i64::from(limit))
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListModelEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::ModelEvent {
                    at_us: e.at_us,
                    actor: e.actor,
                    subject: e.subject,
                    sha256: e.sha256,
                    event: e.event,
                    detail: e.detail,
                })
                .collect(),
        }))
    }
}
