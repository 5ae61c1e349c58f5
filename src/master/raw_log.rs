//! `POST /log/append` and `GET /log/read` (behind `--raw_log_api`): the replicated
//! log without the registry, so tests and benchmarks can measure and check the log
//! itself. Appends go through this member's coordinator; a member that does not
//! lead answers 307 to the leader, as Mesos does for writes.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::log::driver::{AppendError, LogHandle};
use crate::log::Action;

/// Every raw entry starts with this byte, so the registry can tell them from its
/// own entries and skip them.
pub const RAW_ENTRY_TAG: u8 = 0xfe;
/// Largest raw append accepted.
pub const MAX_RAW_APPEND_BYTES: usize = 1024 * 1024;
/// An append that is not learned by then is answered 503 with an unknown outcome
/// (it may still be chosen), rather than holding the client forever.
pub const RAW_APPEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Appended {
    pub position: u64,
}

#[derive(Debug, Deserialize)]
struct ReadRange {
    from: u64,
    to: u64,
}

/// One learned position as `GET /log/read` reports it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RawEntry {
    pub position: u64,
    /// `append`, `raw` (a raw append: `data` is its payload), `nop` or `truncate`.
    pub kind: String,
    /// Hex of the payload (raw appends without the tag).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

pub fn router(log: LogHandle) -> Router {
    Router::new()
        .route("/log/append", post(append))
        .route("/log/read", get(read))
        .layer(DefaultBodyLimit::max(MAX_RAW_APPEND_BYTES))
        .with_state(log)
}

async fn append(State(log): State<LogHandle>, body: Bytes) -> Response {
    let mut entry = Vec::with_capacity(body.len() + 1);
    entry.push(RAW_ENTRY_TAG);
    entry.extend_from_slice(&body);
    match tokio::time::timeout(RAW_APPEND_TIMEOUT, log.append(entry)).await {
        Ok(Ok(position)) => Json(Appended { position }).into_response(),
        Ok(Err(AppendError::NotLeader {
            leader: Some(leader),
        })) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{leader}/log/append"))],
        )
            .into_response(),
        Ok(Err(error)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "timed out waiting for a quorum; the outcome is unknown\n",
        )
            .into_response(),
    }
}

async fn read(State(log): State<LogHandle>, Query(range): Query<ReadRange>) -> Response {
    if range.to < range.from {
        return (StatusCode::BAD_REQUEST, "`to` is below `from`\n").into_response();
    }
    match log.read_learned(range.from, range.to).await {
        Ok(entries) => Json(entries.into_iter().map(describe).collect::<Vec<_>>()).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
    }
}

fn describe((position, action): (u64, Action)) -> RawEntry {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match action {
        Action::Nop => RawEntry {
            position,
            kind: "nop".into(),
            data: String::new(),
            to: None,
        },
        Action::Truncate { to } => RawEntry {
            position,
            kind: "truncate".into(),
            data: String::new(),
            to: Some(to),
        },
        Action::Append(bytes) => match bytes.split_first() {
            Some((&RAW_ENTRY_TAG, payload)) => RawEntry {
                position,
                kind: "raw".into(),
                data: hex(payload),
                to: None,
            },
            _ => RawEntry {
                position,
                kind: "append".into(),
                data: hex(&bytes),
                to: None,
            },
        },
    }
}
