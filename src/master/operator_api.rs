//! The Mesos operator API over the registry: the v1 calls on `POST /api/v1` that
//! touch the registry (`GET_STATE`, `GET_AGENTS`, `GET_MAINTENANCE_SCHEDULE`,
//! `UPDATE_MAINTENANCE_SCHEDULE`, `GET_QUOTA`, `UPDATE_QUOTA`, `GET_WEIGHTS`,
//! `UPDATE_WEIGHTS`, `MARK_AGENT_GONE`), the v0 endpoints Mesos serves for the same
//! state, and endpoints of ours: `POST /registrar/admit`, and the registry
//! transfer used to leave single-master mode without losing the registry:
//!
//! - `GET /registry/export`: the registry as of the last applied (learned)
//!   position, as a [`export_document::ExportDocument`]; no side effect (backups).
//! - `POST /registry/seal`: appends a seal through the log; once applied, every
//!   data write (v1, v0, `/registrar/admit`) answers 503 with a JSON error naming
//!   the seal's position; reads go on. Answers the export document as of the seal.
//!   Idempotent.
//! - `POST /registry/unseal`: appends an unseal; writes are accepted again.
//! - `POST /registry/import`: takes an export document; 400 if it is malformed,
//!   truncated, of another format or its checksum does not match; 409 if the
//!   registry holds data; else appends it through the log in chunks that become
//!   visible together, and answers 200 once learned. The result is not sealed.
//!
//! - `GET /registry/export?scope=local`: any member, no quorum needed: the registry
//!   as this member applied its learned prefix (recovery after quorum loss).
//!
//! All four are served by the leader only (307 elsewhere, 503 with no leader),
//! except the local export.
//!
//! Writes go through the leader: a master that does not lead answers 307 to the
//! leader (same path), or 503 when it knows none, as Mesos does. Reads are served
//! by every master from its own registry, with headers saying how stale they may be:
//! [`APPLIED_POSITION_HEADER`], [`LEARNED_POSITION_HEADER`], [`LEADER_LEASE_HEADER`];
//! but only once its replica is `Voting` and its registry has caught up with what
//! it knows to be learned: before that, reads get 503 with the reason, a
//! `Retry-After` and [`REPLICA_STATUS_HEADER`] (a restoring member holds an empty
//! or old registry, and an answer from it would look authoritative).
//!
//! Deliberate differences from Mesos: this master holds no agent sessions, so every
//! admitted agent is listed as an active agent (Mesos lists agents admitted but not
//! yet re-registered under `recovered_agents`); frameworks and tasks are always
//! empty; only JSON is spoken (a protobuf body is refused with 415).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::export_document::{self, ExportDocument};
use super::registrar::{now_ns, ReadPosition, Registrar, WriteError};
use super::registry::{
    AgentRecord, MaintenanceSchedule, Operation, OperationError, QuotaConfig, Registry, Resource,
    Scalar, ValueType, WeightInfo,
};
use super::transfer;
use super::view::{MasterView, SharedMasterView};
use crate::master::registrar::AppendError;

/// Largest request body accepted (413 beyond): a schedule for 50,000 machines fits.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// How long a write waits for the log before answering 503; the write may still be
/// stored afterwards, which the message says.
pub const WRITE_TIMEOUT_MS: u64 = 10_000;
/// Last log position applied to the registry this answer was read from.
pub const APPLIED_POSITION_HEADER: &str = "x-registry-applied-position";
/// Highest position this member knows to be learned: the answer may lag it.
pub const LEARNED_POSITION_HEADER: &str = "x-registry-learned-position";
/// `true` when the answering master leads and holds its read lease: then no write
/// acknowledged to anyone is missing from the answer once applied reaches learned.
pub const LEADER_LEASE_HEADER: &str = "x-registry-leader-lease";
/// On a 503 read: this member's replica status (`RECOVERING`, ...).
pub const REPLICA_STATUS_HEADER: &str = "x-registry-replica-status";
/// On a local export: one past the highest position this replica holds, learned
/// or not (positions from the learned end up to it were accepted, maybe not chosen).
pub const LOG_END_POSITION_HEADER: &str = "x-registry-log-end-position";
/// On a local export: the id (hex) of the log this member's replica belongs to.
pub const LOG_ID_HEADER: &str = "x-registry-log-id";
/// Port of an admitted agent that names none: Mesos' agent default.
const DEFAULT_AGENT_PORT: u16 = 5051;

/// What the operator API reads and writes.
#[derive(Debug, Clone)]
pub struct OperatorState {
    pub view: SharedMasterView,
    pub registrar: Registrar,
}

/// The operator API's routes; merge them with [`super::http::router`] (see
/// [`super::http::router_with_registry`]).
pub fn router(state: OperatorState) -> Router {
    Router::new()
        .route("/api/v1", post(api_v1))
        .route("/api/v1/", post(api_v1))
        .route("/master/state", get(v0_state))
        .route("/state", get(v0_state))
        .route("/master/slaves", get(v0_slaves))
        .route("/slaves", get(v0_slaves))
        .route(
            "/master/maintenance/schedule",
            get(v0_get_schedule).post(v0_post_schedule),
        )
        .route(
            "/maintenance/schedule",
            get(v0_get_schedule).post(v0_post_schedule),
        )
        .route("/quota", get(v0_get_quota).post(v0_set_quota))
        .route("/master/quota", get(v0_get_quota).post(v0_set_quota))
        .route("/quota/{*role}", delete(v0_remove_quota))
        .route("/master/quota/{*role}", delete(v0_remove_quota))
        .route("/weights", get(v0_get_weights).put(v0_put_weights))
        .route("/master/weights", get(v0_get_weights).put(v0_put_weights))
        .route("/registrar/admit", post(admit))
        .route("/registry/export", get(registry_export))
        .route("/registry/seal", post(registry_seal))
        .route("/registry/unseal", post(registry_unseal))
        // A whole registry is larger than any other request.
        .route(
            "/registry/import",
            post(registry_import).layer(DefaultBodyLimit::max(transfer::MAX_IMPORT_BYTES)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| format!("Failed to parse body: {err}"))
}

/// Answers `read(registry)` with the staleness headers, or 503 with the reason
/// when this member's registry is not caught up (see [`not_readable`]).
fn read(state: &OperatorState, read: impl FnOnce(&Registry, &MasterView) -> Value) -> Response {
    let view = state.view.get();
    let readiness = if view.recovered() && !view.elected && view.leader.is_none() {
        // Only a leader's word says how far the log has gone: a member that just
        // rejoined knows of nothing learned yet and would pass any lag check.
        Err("no leader known: it cannot tell how far behind its registry is".to_owned())
    } else if view.recovered() {
        state
            .registrar
            .readable(view.learned_position, view.begin_position)
    } else {
        Err(format!(
            "its replica is {}, not VOTING: it has not caught up with the log",
            view.replica_status
        ))
    };
    if let Err(reason) = readiness {
        return not_readable(&view, &reason);
    }
    match state.registrar.read(|registry| read(registry, &view)) {
        Ok((value, position)) => with_staleness(Json(value).into_response(), &view, &position),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The registry is unavailable: {reason}\n"),
        )
            .into_response(),
    }
}

fn with_staleness(mut response: Response, view: &MasterView, position: &ReadPosition) -> Response {
    let headers = response.headers_mut();
    let applied = position
        .applied_position
        .map_or_else(|| "none".to_owned(), |p| p.to_string());
    for (name, value) in [
        (APPLIED_POSITION_HEADER, applied),
        (LEARNED_POSITION_HEADER, view.learned_position.to_string()),
        (
            LEADER_LEASE_HEADER,
            (view.elected && position.read_lease).to_string(),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// A member whose replica is not `Voting`, or whose registry is being restored or
/// trails the learned log, refuses reads: what it holds may be arbitrarily old (a
/// member restoring from a snapshot holds nothing yet), and headers alone are easy
/// to ignore. Mesos never answers from a master that has not recovered its
/// registry either. The answer names the reason and the leader to ask instead.
fn not_readable(view: &MasterView, reason: &str) -> Response {
    let leader = view.leader.map_or_else(
        || "no leader is known".to_owned(),
        |l| format!("the leader is http://{l}"),
    );
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("This master cannot serve the registry yet: {reason}; {leader}\n"),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if let Ok(status) = HeaderValue::from_str(&view.replica_status.to_string()) {
        headers.insert(REPLICA_STATUS_HEADER, status);
    }
    response
}

fn redirect(leader: Option<String>, uri: &Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match leader.and_then(|leader| HeaderValue::from_str(&format!("http://{leader}{path}")).ok()) {
        Some(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "No leader elected\n").into_response(),
    }
}

/// Submits `operation` on the leader; elsewhere redirects to it.
async fn write(state: &OperatorState, uri: &Uri, operation: Operation) -> Response {
    let view = state.view.get();
    if !view.elected {
        return redirect(view.leader.map(|l| l.to_string()), uri);
    }
    let submitted = tokio::time::timeout(
        Duration::from_millis(WRITE_TIMEOUT_MS),
        state.registrar.submit(operation),
    )
    .await;
    match submitted {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(err)) => write_error(err, uri),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Timed out waiting for the registry write; it may still be stored\n",
        )
            .into_response(),
    }
}

fn write_error(err: WriteError, uri: &Uri) -> Response {
    let status = match &err {
        // Machine-readable: the operator and scripts tell a seal from an outage.
        WriteError::Rejected(OperationError::Sealed { position }) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": err.to_string(),
                    "sealed": true,
                    "sealed_position": position,
                })),
            )
                .into_response();
        }
        WriteError::Rejected(OperationError::NotEmpty) => StatusCode::CONFLICT,
        WriteError::Rejected(OperationError::ImportInterrupted { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        WriteError::Rejected(OperationError::AgentNotFound(_)) => StatusCode::NOT_FOUND,
        WriteError::Rejected(
            OperationError::AgentAlreadyAdmitted(_) | OperationError::AgentGone(_),
        ) => StatusCode::CONFLICT,
        WriteError::Rejected(_) => StatusCode::BAD_REQUEST,
        WriteError::Log(AppendError::NotLeader { leader }) => return redirect(leader.clone(), uri),
        WriteError::Log(_) | WriteError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{err}\n")).into_response()
}

// ---- v1 ----

#[derive(Deserialize)]
struct Call {
    #[serde(rename = "type")]
    kind: String,
    update_maintenance_schedule: Option<UpdateMaintenanceScheduleCall>,
    update_quota: Option<UpdateQuotaCall>,
    update_weights: Option<UpdateWeightsCall>,
    mark_agent_gone: Option<MarkAgentGoneCall>,
}

#[derive(Deserialize)]
struct UpdateMaintenanceScheduleCall {
    schedule: MaintenanceSchedule,
}

#[derive(Deserialize)]
struct UpdateQuotaCall {
    /// Mesos skips its capacity heuristic when forced; this master has none.
    #[serde(default)]
    #[allow(dead_code)]
    force: bool,
    #[serde(default)]
    quota_configs: Vec<QuotaConfig>,
}

#[derive(Deserialize)]
struct UpdateWeightsCall {
    #[serde(default)]
    weight_infos: Vec<WeightInfo>,
}

#[derive(Deserialize)]
struct MarkAgentGoneCall {
    agent_id: IdValue,
}

#[derive(Deserialize)]
struct IdValue {
    value: String,
}

fn missing(field: &str) -> Response {
    bad_request(format!("Expecting '{field}' to be present"))
}

/// `POST /api/v1`: one Mesos v1 operator call, JSON only.
async fn api_v1(
    State(state): State<OperatorState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"));
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expecting 'Content-Type' of application/json\n",
        )
            .into_response();
    }
    let call: Call = match parse(&body) {
        Ok(call) => call,
        Err(message) => return bad_request(message),
    };
    match call.kind.as_str() {
        "GET_STATE" => read(&state, |registry, _| {
            json!({
                "type": "GET_STATE",
                "get_state": {
                    "get_tasks": {},
                    "get_executors": {},
                    "get_frameworks": {},
                    "get_agents": agents_v1(registry),
                }
            })
        }),
        "GET_AGENTS" => read(
            &state,
            |registry, _| json!({"type": "GET_AGENTS", "get_agents": agents_v1(registry)}),
        ),
        "GET_MAINTENANCE_SCHEDULE" => read(&state, |registry, _| {
            json!({
                "type": "GET_MAINTENANCE_SCHEDULE",
                "get_maintenance_schedule": {"schedule": registry.schedule},
            })
        }),
        "GET_QUOTA" => read(
            &state,
            |registry, _| json!({"type": "GET_QUOTA", "get_quota": {"status": quota_status(registry)}}),
        ),
        "GET_WEIGHTS" => read(
            &state,
            |registry, _| json!({"type": "GET_WEIGHTS", "get_weights": {"weight_infos": weight_infos(registry)}}),
        ),
        "UPDATE_MAINTENANCE_SCHEDULE" => match call.update_maintenance_schedule {
            Some(update) => {
                let operation = Operation::UpdateMaintenanceSchedule {
                    schedule: update.schedule,
                };
                write(&state, &uri, operation).await
            }
            None => missing("update_maintenance_schedule"),
        },
        "UPDATE_QUOTA" => match call.update_quota {
            Some(update) => {
                let operation = Operation::UpdateQuotas {
                    configs: update.quota_configs,
                };
                write(&state, &uri, operation).await
            }
            None => missing("update_quota"),
        },
        "UPDATE_WEIGHTS" => match call.update_weights {
            Some(update) => {
                let operation = Operation::UpdateWeights {
                    weights: update.weight_infos,
                };
                write(&state, &uri, operation).await
            }
            None => missing("update_weights"),
        },
        "MARK_AGENT_GONE" => match call.mark_agent_gone {
            Some(mark) => {
                let operation = Operation::MarkAgentGone {
                    id: mark.agent_id.value,
                    time_ns: now_ns(),
                };
                write(&state, &uri, operation).await
            }
            None => missing("mark_agent_gone"),
        },
        other => bad_request(format!(
            "Unsupported call type '{}': this master serves GET_STATE, GET_AGENTS, \
             GET_MAINTENANCE_SCHEDULE, UPDATE_MAINTENANCE_SCHEDULE, GET_QUOTA, UPDATE_QUOTA, \
             GET_WEIGHTS, UPDATE_WEIGHTS and MARK_AGENT_GONE",
            other.escape_debug()
        )),
    }
}

fn agents_v1(registry: &Registry) -> Value {
    let agents: Vec<Value> = registry.agents.values().map(agent_v1).collect();
    json!({"agents": agents, "recovered_agents": []})
}

fn agent_v1(agent: &AgentRecord) -> Value {
    json!({
        "agent_info": {
            "id": {"value": agent.id},
            "hostname": agent.hostname,
            "port": agent.port,
            "resources": agent.resources,
        },
        "active": true,
        "deactivated": false,
        "registered_time": {"nanoseconds": agent.registered_time_ns},
        "total_resources": agent.resources,
        "allocated_resources": [],
        "offered_resources": [],
        "capabilities": [],
    })
}

fn quota_status(registry: &Registry) -> Value {
    // `infos` is Mesos' deprecated form: the guarantees as scalar resources.
    let infos: Vec<Value> = registry
        .quotas
        .values()
        .map(|config| {
            let guarantee: Vec<Resource> = config
                .guarantees
                .iter()
                .map(|(name, scalar)| Resource::scalar(name, scalar.value))
                .collect();
            json!({"role": config.role, "guarantee": guarantee})
        })
        .collect();
    let configs: Vec<&QuotaConfig> = registry.quotas.values().collect();
    json!({"infos": infos, "configs": configs})
}

fn weight_infos(registry: &Registry) -> Vec<WeightInfo> {
    registry
        .weights
        .iter()
        .map(|(role, weight)| WeightInfo {
            role: role.clone(),
            weight: *weight,
        })
        .collect()
}

// ---- v0 ----

/// Mesos v0 renders resources as `{name: value}`: scalars summed, ranges as
/// `[a-b, c-d]`, sets as `{x, y}`.
fn resources_v0(resources: &[Resource]) -> Map<String, Value> {
    let mut scalars: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    let mut rendered = Map::new();
    for resource in resources {
        match resource.kind {
            ValueType::Scalar => {
                let value = resource.scalar.map_or(0.0, |s| s.value);
                *scalars.entry(&resource.name).or_default() += value;
            }
            ValueType::Ranges => {
                let ranges: Vec<String> = resource
                    .ranges
                    .iter()
                    .flat_map(|r| &r.range)
                    .map(|r| format!("{}-{}", r.begin, r.end))
                    .collect();
                rendered.insert(
                    resource.name.clone(),
                    json!(format!("[{}]", ranges.join(", "))),
                );
            }
            ValueType::Set => {
                let items: Vec<&str> = resource
                    .set
                    .iter()
                    .flat_map(|s| &s.item)
                    .map(String::as_str)
                    .collect();
                rendered.insert(
                    resource.name.clone(),
                    json!(format!("{{{}}}", items.join(", "))),
                );
            }
        }
    }
    for (name, value) in scalars {
        rendered.insert(name.to_owned(), json!(value));
    }
    rendered
}

fn slave_v0(agent: &AgentRecord) -> Value {
    let resources = resources_v0(&agent.resources);
    json!({
        "id": agent.id,
        "hostname": agent.hostname,
        "port": agent.port,
        "registered_time": agent.registered_time_ns as f64 / 1e9,
        "resources": resources,
        "unreserved_resources": resources,
        "used_resources": {},
        "offered_resources": {},
        "reserved_resources": {},
        "attributes": {},
        "active": true,
    })
}

async fn v0_state(State(state): State<OperatorState>) -> Response {
    read(&state, |registry, view| {
        let slaves: Vec<Value> = registry.agents.values().map(slave_v0).collect();
        let mut object = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": format!("master@{}", view.advertise_addr),
            "hostname": view.advertise_addr.ip().to_string(),
            "activated_slaves": registry.agents.len(),
            "deactivated_slaves": 0,
            "unreachable_slaves": registry.unreachable.len(),
            "slaves": slaves,
            "frameworks": [],
            "completed_frameworks": [],
            "unregistered_frameworks": [],
            "orphan_tasks": [],
        });
        if let (Some(leader), Some(fields)) = (view.leader, object.as_object_mut()) {
            fields.insert("leader".to_owned(), json!(format!("master@{leader}")));
        }
        object
    })
}

async fn v0_slaves(State(state): State<OperatorState>) -> Response {
    read(&state, |registry, _| {
        let slaves: Vec<Value> = registry.agents.values().map(slave_v0).collect();
        json!({"slaves": slaves, "recovered_slaves": []})
    })
}

async fn v0_get_schedule(State(state): State<OperatorState>) -> Response {
    read(&state, |registry, _| json!(registry.schedule))
}

async fn v0_post_schedule(State(state): State<OperatorState>, uri: Uri, body: Bytes) -> Response {
    match parse::<MaintenanceSchedule>(&body) {
        Ok(schedule) => {
            write(
                &state,
                &uri,
                Operation::UpdateMaintenanceSchedule { schedule },
            )
            .await
        }
        Err(message) => bad_request(message),
    }
}

async fn v0_get_quota(State(state): State<OperatorState>) -> Response {
    read(&state, |registry, _| quota_status(registry))
}

/// Mesos' deprecated `QuotaRequest`: a guarantee, which becomes the limit too.
#[derive(Deserialize)]
struct QuotaRequest {
    role: String,
    #[serde(default)]
    guarantee: Vec<Resource>,
    #[serde(default)]
    #[allow(dead_code)]
    force: bool,
}

async fn v0_set_quota(State(state): State<OperatorState>, uri: Uri, body: Bytes) -> Response {
    let request: QuotaRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let mut guarantees = std::collections::BTreeMap::new();
    for resource in &request.guarantee {
        match (resource.kind, resource.scalar) {
            (ValueType::Scalar, Some(Scalar { value })) => {
                *guarantees
                    .entry(resource.name.clone())
                    .or_insert(Scalar { value: 0.0 }) = Scalar { value };
            }
            _ => {
                return bad_request(format!(
                    "Quota guarantee '{}' must be a scalar resource",
                    resource.name
                ))
            }
        }
    }
    if guarantees.is_empty() {
        return bad_request("Quota request has an empty guarantee");
    }
    let config = QuotaConfig {
        role: request.role,
        limits: guarantees.clone(),
        guarantees,
    };
    write(
        &state,
        &uri,
        Operation::UpdateQuotas {
            configs: vec![config],
        },
    )
    .await
}

async fn v0_remove_quota(
    State(state): State<OperatorState>,
    uri: Uri,
    Path(role): Path<String>,
) -> Response {
    write(&state, &uri, Operation::RemoveQuota { role }).await
}

async fn v0_get_weights(State(state): State<OperatorState>) -> Response {
    read(&state, |registry, _| json!(weight_infos(registry)))
}

async fn v0_put_weights(State(state): State<OperatorState>, uri: Uri, body: Bytes) -> Response {
    match parse::<Vec<WeightInfo>>(&body) {
        Ok(weights) => write(&state, &uri, Operation::UpdateWeights { weights }).await,
        Err(message) => bad_request(message),
    }
}

/// Body of `POST /registrar/admit`.
#[derive(Deserialize)]
struct AdmitRequest {
    id: String,
    hostname: String,
    #[serde(default = "default_agent_port")]
    port: u16,
    #[serde(default)]
    resources: Vec<Resource>,
}

fn default_agent_port() -> u16 {
    DEFAULT_AGENT_PORT
}

/// `POST /registrar/admit` — ours, not Mesos': admits an agent into the registry,
/// as the Mesos master does when an agent first registers (the registrar's
/// `AdmitSlave`). This master holds no agent sessions, so tests, benchmarks and
/// tools fill the registry through it. Body (JSON):
/// `{"id": "S1", "hostname": "a.example", "port": 5051, "resources": [<v1 Resource>]}`
/// (`port` defaults to 5051, `resources` to none). 200 once stored; 409 if the id is
/// admitted or gone; 400 if invalid; 307/503 from a master that does not lead.
async fn admit(State(state): State<OperatorState>, uri: Uri, body: Bytes) -> Response {
    let request: AdmitRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let agent = AgentRecord {
        id: request.id,
        hostname: request.hostname,
        port: request.port,
        resources: request.resources,
        registered_time_ns: now_ns(),
    };
    write(&state, &uri, Operation::AdmitAgent { agent }).await
}

// ---- registry transfer ----

/// How long an import may take to be learned: a 50,000-agent registry is a few
/// chunks of megabytes, each a quorum round trip plus fsync.
pub const IMPORT_TIMEOUT_MS: u64 = 60_000;

/// The leader's view, or the redirect a non-leader answers with.
fn leading(state: &OperatorState, uri: &Uri) -> Result<MasterView, Box<Response>> {
    let view = state.view.get();
    if view.elected {
        Ok(view)
    } else {
        Err(Box::new(redirect(view.leader.map(|l| l.to_string()), uri)))
    }
}

/// `GET /registry/export`; with `?scope=local`, [`registry_export_local`].
async fn registry_export(State(state): State<OperatorState>, uri: Uri) -> Response {
    if uri
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "scope=local"))
    {
        return registry_export_local(&state);
    }
    let view = match leading(&state, &uri) {
        Ok(view) => view,
        Err(response) => return *response,
    };
    match state.registrar.read(Registry::clone) {
        Ok((registry, position)) => {
            let document = ExportDocument::new(
                &registry,
                view.log_id.unwrap_or(0),
                position.applied_position.unwrap_or(0),
            );
            with_staleness(Json(document).into_response(), &view, &position)
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The registry is unavailable: {reason}\n"),
        )
            .into_response(),
    }
}

/// `GET /registry/export?scope=local`: what THIS member has applied of its learned
/// prefix, served by any member with no quorum, leader or `Voting` status (the
/// operator's recovery after quorum loss reads it from a survivor). The document's
/// `position` is the last learned position applied; accepted but unlearned entries
/// are never in it (they may not be the chosen values), their extent is in
/// [`LOG_END_POSITION_HEADER`] so the operator can say what may be lost. Read-only.
fn registry_export_local(state: &OperatorState) -> Response {
    let view = state.view.get();
    match state.registrar.local_export() {
        Ok((registry, position)) => {
            let document = ExportDocument::new(&registry, view.log_id.unwrap_or(0), position);
            let mut response = Json(document).into_response();
            let headers = response.headers_mut();
            for (name, value) in [
                (LEARNED_POSITION_HEADER, view.learned_position.to_string()),
                (LOG_END_POSITION_HEADER, view.end_position.to_string()),
                (REPLICA_STATUS_HEADER, view.replica_status.to_string()),
                (
                    LOG_ID_HEADER,
                    view.log_id
                        .map_or_else(|| "none".to_owned(), |id| format!("{id:016x}")),
                ),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
            response
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("This member cannot export its registry: {reason}\n"),
        )
            .into_response(),
    }
}

/// `POST /registry/seal`.
async fn registry_seal(State(state): State<OperatorState>, uri: Uri) -> Response {
    let view = match leading(&state, &uri) {
        Ok(view) => view,
        Err(response) => return *response,
    };
    let sealed = tokio::time::timeout(
        Duration::from_millis(WRITE_TIMEOUT_MS),
        state.registrar.seal(),
    )
    .await;
    match sealed {
        Ok(Ok((registry, position))) => Json(ExportDocument::new(
            &registry,
            view.log_id.unwrap_or(0),
            position,
        ))
        .into_response(),
        Ok(Err(err)) => write_error(err, &uri),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Timed out waiting for the seal; it may still be stored\n",
        )
            .into_response(),
    }
}

/// `POST /registry/unseal`.
async fn registry_unseal(State(state): State<OperatorState>, uri: Uri) -> Response {
    if let Err(response) = leading(&state, &uri) {
        return *response;
    }
    write(&state, &uri, Operation::Unseal).await
}

/// `POST /registry/import`.
async fn registry_import(State(state): State<OperatorState>, uri: Uri, body: Bytes) -> Response {
    if let Err(response) = leading(&state, &uri) {
        return *response;
    }
    let document = match export_document::parse(&body) {
        Ok(document) => document,
        Err(err) => return bad_request(err),
    };
    let imported = tokio::time::timeout(
        Duration::from_millis(IMPORT_TIMEOUT_MS),
        state.registrar.import(&document.registry),
    )
    .await;
    match imported {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(err)) => write_error(err, &uri),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Timed out waiting for the import to be learned; retry it (an import applies at most once)\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::master::api::ReplicaStatus;
    use crate::master::http::{router_with_registry, MasterState};
    use crate::master::metrics::Metrics;
    use crate::master::registrar::test_support::memory_registrar;
    use crate::master::registrar::RegistrarConfig;

    const SELF: &str = "127.0.0.1:5050";
    const OTHER: &str = "127.0.0.2:5050";

    fn view(elected: bool, leader: Option<&str>) -> MasterView {
        MasterView {
            replica_status: ReplicaStatus::Voting,
            log_id: Some(1),
            begin_position: 0,
            end_position: 0,
            learned_position: 0,
            quorum: 2,
            masters: vec![SELF.parse().unwrap(), OTHER.parse().unwrap()],
            advertise_addr: SELF.parse().unwrap(),
            leader: leader.map(|l| l.parse().unwrap()),
            elected,
            read_lease: elected,
            peer_tls: false,
        }
    }

    fn master(view: MasterView) -> (Router, Registrar) {
        let metrics = Arc::new(Metrics::new());
        let (registrar, _log) = memory_registrar(RegistrarConfig::new(SELF), Arc::clone(&metrics));
        let state = MasterState {
            view: SharedMasterView::new(view),
            metrics,
        };
        (router_with_registry(state, registrar.clone()), registrar)
    }

    fn leader() -> (Router, Registrar) {
        master(view(true, Some(SELF)))
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: String,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
        }
    }

    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = app
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn v1(app: &Router, call: Value) -> Answer {
        send(
            app,
            "POST",
            "/api/v1",
            Some("application/json"),
            call.to_string(),
        )
        .await
    }

    async fn admit(app: &Router, id: &str) -> Answer {
        let body = json!({
            "id": id,
            "hostname": format!("{id}.example"),
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}},
                          {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 32000}]}}],
        });
        send(app, "POST", "/registrar/admit", None, body.to_string()).await
    }

    fn registry(registrar: &Registrar) -> Registry {
        registrar.read(Registry::clone).unwrap().0
    }

    #[tokio::test]
    async fn weights_v1_and_v0() {
        let (app, _) = leader();
        let update = json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "dev", "weight": 2.0}]}});
        assert_eq!(v1(&app, update).await.status, StatusCode::OK);
        let got = v1(&app, json!({"type": "GET_WEIGHTS"})).await;
        assert_eq!(
            got.json(),
            json!({"type": "GET_WEIGHTS", "get_weights": {"weight_infos": [{"role": "dev", "weight": 2.0}]}})
        );
        let put = send(
            &app,
            "PUT",
            "/weights",
            None,
            r#"[{"role":"ops","weight":0.5}]"#,
        )
        .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        let got = send(&app, "GET", "/weights", None, "").await;
        assert_eq!(
            got.json(),
            json!([{"role": "dev", "weight": 2.0}, {"role": "ops", "weight": 0.5}])
        );
    }

    #[tokio::test]
    async fn maintenance_schedule_v1_and_v0() {
        let (app, _) = leader();
        let schedule = json!({"windows": [{
            "machine_ids": [{"hostname": "h1"}, {"ip": "10.0.0.1"}],
            "unavailability": {"start": {"nanoseconds": 1}, "duration": {"nanoseconds": 3600}},
        }]});
        let update = json!({"type": "UPDATE_MAINTENANCE_SCHEDULE", "update_maintenance_schedule": {"schedule": schedule}});
        assert_eq!(v1(&app, update).await.status, StatusCode::OK);
        let got = v1(&app, json!({"type": "GET_MAINTENANCE_SCHEDULE"})).await;
        assert_eq!(got.json()["get_maintenance_schedule"]["schedule"], schedule);
        let empty = send(&app, "POST", "/master/maintenance/schedule", None, "{}").await;
        assert_eq!(empty.status, StatusCode::OK);
        let got = send(&app, "GET", "/master/maintenance/schedule", None, "").await;
        assert_eq!(got.json(), json!({"windows": []}));
    }

    #[tokio::test]
    async fn quota_v1_and_v0() {
        let (app, registrar) = leader();
        let update = json!({"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": [
            {"role": "dev", "guarantees": {"cpus": {"value": 1.0}}, "limits": {"cpus": {"value": 2.0}}}]}});
        assert_eq!(v1(&app, update).await.status, StatusCode::OK);
        let got = v1(&app, json!({"type": "GET_QUOTA"})).await.json();
        assert_eq!(
            got["get_quota"]["status"]["configs"][0]["limits"]["cpus"]["value"],
            2.0
        );
        assert_eq!(
            got["get_quota"]["status"]["infos"][0]["guarantee"][0]["scalar"]["value"],
            1.0
        );
        let set = json!({"role": "ops", "guarantee": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 512.0}}]});
        assert_eq!(
            send(&app, "POST", "/quota", None, set.to_string())
                .await
                .status,
            StatusCode::OK
        );
        let got = send(&app, "GET", "/quota", None, "").await.json();
        assert_eq!(got["configs"].as_array().unwrap().len(), 2);
        assert_eq!(
            send(&app, "DELETE", "/quota/ops", None, "").await.status,
            StatusCode::OK
        );
        let again = send(&app, "DELETE", "/quota/ops", None, "").await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
        assert_eq!(
            registry(&registrar).quotas.keys().collect::<Vec<_>>(),
            ["dev"]
        );
    }

    #[tokio::test]
    async fn agents_state_and_gone() {
        let (app, registrar) = leader();
        assert_eq!(admit(&app, "S1").await.status, StatusCode::OK);
        assert_eq!(admit(&app, "S2").await.status, StatusCode::OK);
        assert_eq!(admit(&app, "S1").await.status, StatusCode::CONFLICT);
        let agents = v1(&app, json!({"type": "GET_AGENTS"})).await.json();
        let list = agents["get_agents"]["agents"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["agent_info"]["id"]["value"], "S1");
        assert_eq!(list[0]["agent_info"]["port"], 5051);
        let state = v1(&app, json!({"type": "GET_STATE"})).await.json();
        assert_eq!(
            state["get_state"]["get_agents"]["agents"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let slaves = send(&app, "GET", "/master/slaves", None, "").await.json();
        assert_eq!(
            slaves["slaves"][1]["resources"],
            json!({"cpus": 4.0, "ports": "[31000-32000]"})
        );
        let state = send(&app, "GET", "/master/state", None, "").await.json();
        assert_eq!(state["activated_slaves"], 2);
        assert_eq!(state["leader"], format!("master@{SELF}"));

        for alias in [
            "/state",
            "/slaves",
            "/maintenance/schedule",
            "/master/quota",
            "/master/weights",
        ] {
            let answer = send(&app, "GET", alias, None, "").await;
            assert_eq!(answer.status, StatusCode::OK, "{alias}");
            assert!(
                answer.headers.contains_key(APPLIED_POSITION_HEADER),
                "{alias}"
            );
        }
        // Mesos' own examples post to `/api/v1/`.
        let answer = send(
            &app,
            "POST",
            "/api/v1/",
            Some("application/json"),
            r#"{"type":"GET_AGENTS"}"#,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        let gone =
            json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "S1"}}});
        assert_eq!(v1(&app, gone.clone()).await.status, StatusCode::OK);
        assert_eq!(
            v1(&app, gone).await.status,
            StatusCode::OK,
            "marking gone twice is fine, as in Mesos"
        );
        let unknown =
            json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "nope"}}});
        assert_eq!(v1(&app, unknown).await.status, StatusCode::NOT_FOUND);
        assert_eq!(admit(&app, "S1").await.status, StatusCode::CONFLICT);
        let registry = registry(&registrar);
        assert_eq!(registry.agents.keys().collect::<Vec<_>>(), ["S2"]);
        assert!(registry.gone.contains_key("S1"));
    }

    #[tokio::test]
    async fn bad_requests_are_refused_and_leave_the_registry_untouched() {
        let (app, registrar) = leader();
        assert_eq!(admit(&app, "S1").await.status, StatusCode::OK);
        let before = registry(&registrar);
        let too_many: Vec<Value> = (0..2_000)
            .map(|i| json!({"role": format!("r{i}"), "weight": 1.0}))
            .collect();
        let cases: Vec<(&str, &str, Option<&str>, String, StatusCode)> = vec![
            ("POST", "/api/v1", Some("application/json"), "{not json".into(), StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"), r#"{"type":"LAUNCH_ROCKETS"}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"), r#"{"type":"UPDATE_WEIGHTS"}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"), r#"{"no_type":1}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/x-protobuf"), r#"{"type":"GET_WEIGHTS"}"#.into(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("POST", "/api/v1", None, r#"{"type":"GET_WEIGHTS"}"#.into(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("POST", "/api/v1", Some("application/json"),
             json!({"type":"UPDATE_WEIGHTS","update_weights":{"weight_infos":[{"role":"dev","weight":-1.0}]}}).to_string(),
             StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"),
             r#"{"type":"UPDATE_WEIGHTS","update_weights":{"weight_infos":[{"role":"dev","weight":NaN}]}}"#.into(),
             StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"),
             r#"{"type":"UPDATE_WEIGHTS","update_weights":{"weight_infos":[{"role":"dev","weight":1e999}]}}"#.into(),
             StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"),
             json!({"type":"UPDATE_WEIGHTS","update_weights":{"weight_infos":too_many}}).to_string(),
             StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"),
             json!({"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"dev","guarantees":{"cpus":{"value":3.0}},"limits":{"cpus":{"value":1.0}}}]}}).to_string(),
             StatusCode::BAD_REQUEST),
            ("POST", "/api/v1", Some("application/json"),
             json!({"type":"UPDATE_MAINTENANCE_SCHEDULE","update_maintenance_schedule":{"schedule":{"windows":[{"machine_ids":[],"unavailability":{"start":{"nanoseconds":0}}}]}}}).to_string(),
             StatusCode::BAD_REQUEST),
            ("PUT", "/weights", None, r#"[{"role":"-bad","weight":1.0}]"#.into(), StatusCode::BAD_REQUEST),
            ("PUT", "/weights", None, r#"{"role":"dev"}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/quota", None, r#"{"role":"dev","guarantee":[]}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/master/maintenance/schedule", None, r#"{"windows":{}}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/registrar/admit", None, r#"{"id":"a/b","hostname":"h"}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/registrar/admit", None, r#"{"id":"x","hostname":"h","port":70000}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/registrar/admit", None,
             r#"{"id":"x","hostname":"h","resources":[{"name":"cpus","type":"SCALAR"}]}"#.into(), StatusCode::BAD_REQUEST),
            ("POST", "/registrar/admit", None, "\u{0}\u{ff}".into(), StatusCode::BAD_REQUEST),
            ("POST", "/registrar/admit", None, "x".repeat(MAX_BODY_BYTES + 1), StatusCode::PAYLOAD_TOO_LARGE),
            ("GET", "/registrar/admit", None, String::new(), StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, uri, content_type, body, expected) in cases {
            let answer = send(&app, method, uri, content_type, body.clone()).await;
            assert_eq!(
                answer.status,
                expected,
                "{method} {uri} {}: {}",
                &body[..body.len().min(120)],
                answer.body
            );
        }
        assert_eq!(registry(&registrar), before);
    }

    #[tokio::test]
    async fn a_follower_redirects_writes_and_serves_reads_with_staleness() {
        let (app, registrar) = master(view(false, Some(OTHER)));
        let update = json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "dev", "weight": 2.0}]}});
        let answer = v1(&app, update.clone()).await;
        assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            answer.headers[header::LOCATION],
            format!("http://{OTHER}/api/v1")
        );
        let answer = send(&app, "PUT", "/weights?x=1", None, "[]").await;
        assert_eq!(
            answer.headers[header::LOCATION],
            format!("http://{OTHER}/weights?x=1")
        );
        // Reads are served here, saying how stale they may be.
        registrar
            .apply_learned(
                7,
                &crate::master::registry::encode_batch(
                    9,
                    0,
                    vec![Operation::UpdateWeights {
                        weights: vec![WeightInfo {
                            role: "ops".into(),
                            weight: 3.0,
                        }],
                    }],
                ),
            )
            .unwrap();
        let got = v1(&app, json!({"type": "GET_WEIGHTS"})).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.json()["get_weights"]["weight_infos"][0]["role"], "ops");
        assert_eq!(got.headers[APPLIED_POSITION_HEADER], "7");
        assert_eq!(got.headers[LEARNED_POSITION_HEADER], "0");
        assert_eq!(got.headers[LEADER_LEASE_HEADER], "false");

        let (app, _) = master(view(false, None));
        assert_eq!(
            v1(&app, update).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            admit(&app, "S1").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn a_member_not_caught_up_refuses_reads_with_the_reason() {
        let mut recovering = view(false, Some(OTHER));
        recovering.replica_status = ReplicaStatus::Recovering;
        let (app, _) = master(recovering);
        for path in ["/master/state", "/master/slaves", "/weights", "/quota"] {
            let answer = send(&app, "GET", path, None, "").await;
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(answer.headers[REPLICA_STATUS_HEADER], "RECOVERING");
            assert_eq!(answer.headers[header::RETRY_AFTER], "1");
            assert!(answer.body.contains("RECOVERING"), "{}", answer.body);
            assert!(answer.body.contains(OTHER), "{}", answer.body);
        }
        let answer = v1(&app, json!({"type": "GET_AGENTS"})).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);

        // Voting, but far behind what it knows to be learned.
        let mut behind = view(false, Some(OTHER));
        behind.learned_position = 10_000;
        let (app, registrar) = master(behind);
        let answer = send(&app, "GET", "/master/slaves", None, "").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.body.contains("catching up"), "{}", answer.body);
        registrar.note_delivered(9_990);
        let answer = send(&app, "GET", "/master/slaves", None, "").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

        // Truncated past it: nothing is served until the snapshot is applied.
        registrar.skipped_to(20_000);
        let answer = send(&app, "GET", "/master/slaves", None, "").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.body.contains("snapshot"), "{}", answer.body);
        let mut registry = Registry::default();
        registry
            .apply(&Operation::AdmitAgent {
                agent: crate::master::registry::tests::agent("S9"),
            })
            .unwrap();
        let snapshot = crate::master::registry::encode_snapshot(5, 1, Some(19_000), &registry);
        for (i, chunk) in crate::master::registry::encode_snapshot_chunks(5, 1, &snapshot, 256)
            .unwrap()
            .iter()
            .enumerate()
        {
            registrar.apply_learned(20_000 + i as u64, chunk).unwrap();
        }
        let answer = send(&app, "GET", "/master/slaves", None, "").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.json()["slaves"][0]["id"], "S9");
    }

    #[tokio::test]
    async fn the_leader_reports_its_lease_and_the_metrics_include_the_registrar() {
        let (app, registrar) = leader();
        registrar.set_read_lease(true);
        assert_eq!(admit(&app, "S1").await.status, StatusCode::OK);
        let got = send(&app, "GET", "/master/slaves", None, "").await;
        assert_eq!(got.headers[LEADER_LEASE_HEADER], "true");
        assert_eq!(got.headers[APPLIED_POSITION_HEADER], "1");
        let metrics = send(&app, "GET", "/metrics/snapshot", None, "")
            .await
            .json();
        assert_eq!(metrics["registrar/queued_operations"], 0.0);
        assert!(metrics["registrar/registry_size_bytes"].as_f64().unwrap() > 0.0);
        assert!(
            metrics["registrar/state_store_ms/p99"].as_f64().is_some(),
            "{metrics}"
        );
        let text = send(&app, "GET", "/metrics", None, "").await.body;
        assert!(
            text.contains("mesos_registrar_state_store_ms_count 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_sealed_registry_refuses_every_write_path_and_serves_reads() {
        let (app, registrar) = leader();
        assert_eq!(admit(&app, "a").await.status, StatusCode::OK);
        let sealed = send(&app, "POST", "/registry/seal", None, "").await;
        assert_eq!(sealed.status, StatusCode::OK, "{}", sealed.body);
        let document = sealed.json();
        assert_eq!(document["format"], export_document::EXPORT_FORMAT);
        assert_eq!(document["log_id"], 1);
        let position = document["position"].as_u64().unwrap();
        assert_eq!(registry(&registrar).sealed, Some(position));
        assert_eq!(document["registry"]["agents"][0]["id"], "a");

        let refusals = [
            admit(&app, "b").await,
            v1(
                &app,
                json!({"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "dev", "weight": 2.0}]}}),
            )
            .await,
            send(&app, "PUT", "/weights", None, json!([{"role": "dev", "weight": 2.0}]).to_string()).await,
            send(&app, "POST", "/maintenance/schedule", None, json!({"windows": []}).to_string()).await,
            v1(&app, json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "a"}}})).await,
        ];
        for refusal in &refusals {
            assert_eq!(
                refusal.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                refusal.body
            );
            let error = refusal.json();
            assert_eq!(error["sealed"], true);
            assert_eq!(error["sealed_position"], position);
            assert!(error["error"]
                .as_str()
                .unwrap()
                .contains(&format!("at position {position}")));
        }
        // Reads go on.
        let slaves = send(&app, "GET", "/master/slaves", None, "").await;
        assert_eq!(slaves.status, StatusCode::OK);
        assert_eq!(slaves.json()["slaves"][0]["id"], "a");
        // Sealing again is idempotent: the same position and registry.
        let again = send(&app, "POST", "/registry/seal", None, "").await;
        assert_eq!(again.json(), document);
        // The export of a sealed registry holds the same registry.
        let export = send(&app, "GET", "/registry/export", None, "").await.json();
        assert_eq!(export["sha256"], document["sha256"]);

        let unsealed = send(&app, "POST", "/registry/unseal", None, "").await;
        assert_eq!(unsealed.status, StatusCode::OK, "{}", unsealed.body);
        assert_eq!(admit(&app, "b").await.status, StatusCode::OK);
        assert_eq!(registry(&registrar).sealed, None);
    }

    #[tokio::test]
    async fn import_checks_the_document_and_refuses_a_registry_with_data() {
        let (source, _) = leader();
        for id in ["a", "b", "c"] {
            assert_eq!(admit(&source, id).await.status, StatusCode::OK);
        }
        let weights = json!([{"role": "dev", "weight": 2.0}]).to_string();
        assert_eq!(
            send(&source, "PUT", "/weights", None, weights).await.status,
            StatusCode::OK
        );
        let document = send(&source, "GET", "/registry/export", None, "")
            .await
            .body;

        let (target, registrar) = leader();
        let before = registry(&registrar);
        let truncated = document[..document.len() - 10].to_owned();
        let wrong_format = document.replace(
            export_document::EXPORT_FORMAT,
            "mesos-operator/registry-export/v9",
        );
        let edited = document.replace("\"weights\":{\"dev\":2.0}", "\"weights\":{\"dev\":3.0}");
        assert_ne!(edited, document);
        for (what, body) in [
            ("truncated", truncated),
            ("format", wrong_format),
            ("checksum", edited),
            ("shape", "{}".into()),
        ] {
            let answer = send(&target, "POST", "/registry/import", None, body).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                answer.body
            );
            assert_eq!(registry(&registrar), before, "{what}");
        }

        let imported = send(&target, "POST", "/registry/import", None, document.clone()).await;
        assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
        let after = registry(&registrar);
        assert_eq!(after.agents.len(), 3);
        assert_eq!(after.weights.get("dev"), Some(&2.0));
        assert_eq!(after.sealed, None);
        // Not empty any more: a second import (a retry) is refused and changes nothing.
        let again = send(&target, "POST", "/registry/import", None, document).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        assert_eq!(registry(&registrar), after);
        // The imported registry takes writes.
        assert_eq!(admit(&target, "d").await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn followers_redirect_the_transfer_endpoints() {
        let (app, _) = master(view(false, Some(OTHER)));
        for (method, path) in [
            ("GET", "/registry/export"),
            ("POST", "/registry/seal"),
            ("POST", "/registry/unseal"),
            ("POST", "/registry/import"),
        ] {
            let answer = send(&app, method, path, None, "").await;
            assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT, "{path}");
            assert_eq!(
                answer.headers[header::LOCATION],
                format!("http://{OTHER}{path}")
            );
        }
        let (app, _) = master(view(false, None));
        let answer = send(&app, "POST", "/registry/seal", None, "").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_local_export_needs_no_leader_and_holds_only_the_learned_prefix() {
        let metrics = Arc::new(Metrics::new());
        let (registrar, log) = memory_registrar(RegistrarConfig::new(SELF), Arc::clone(&metrics));
        let leading = router_with_registry(
            MasterState {
                view: SharedMasterView::new(view(true, Some(SELF))),
                metrics: Arc::clone(&metrics),
            },
            registrar.clone(),
        );
        assert_eq!(admit(&leading, "a").await.status, StatusCode::OK);
        // An append that is accepted somewhere but never learned.
        log.hold();
        let unlearned = tokio::spawn({
            let leading = leading.clone();
            async move { admit(&leading, "b").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The survivor of a quorum loss: no leader, not even Voting.
        let survivor_view = MasterView {
            replica_status: ReplicaStatus::Recovering,
            log_id: Some(0xabc),
            end_position: 9,
            learned_position: 5,
            ..view(false, None)
        };
        let survivor = router_with_registry(
            MasterState {
                view: SharedMasterView::new(survivor_view),
                metrics,
            },
            registrar.clone(),
        );
        let plain = send(&survivor, "GET", "/registry/export", None, "").await;
        assert_eq!(
            plain.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            plain.body
        );
        let local = send(&survivor, "GET", "/registry/export?scope=local", None, "").await;
        assert_eq!(local.status, StatusCode::OK, "{}", local.body);
        let document = export_document::parse(local.body.as_bytes()).expect("a valid document");
        assert_eq!(document.log_id, 0xabc);
        assert!(document.registry.agents.contains_key("a"));
        assert!(
            !document.registry.agents.contains_key("b"),
            "an unlearned write was exported"
        );
        assert_eq!(Some(document.position), registrar.applied_position());
        assert_eq!(local.headers[LOG_END_POSITION_HEADER], "9");
        assert_eq!(local.headers[LEARNED_POSITION_HEADER], "5");
        assert_eq!(local.headers[REPLICA_STATUS_HEADER], "RECOVERING");
        assert_eq!(local.headers[LOG_ID_HEADER], "0000000000000abc");
        // Read-only: the registry is as it was.
        assert!(!registry(&registrar).agents.contains_key("b"));
        log.release();
        assert_eq!(unlearned.await.expect("joined").status, StatusCode::OK);
        let after = send(&survivor, "GET", "/registry/export?scope=local", None, "").await;
        let document = export_document::parse(after.body.as_bytes()).expect("a valid document");
        assert!(
            document.registry.agents.contains_key("b"),
            "learned and applied now"
        );
    }
}
