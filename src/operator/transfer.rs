//! The registry transfer of a `Preserve` single-master exit, as the operator sees
//! it: three calls on the leading master (seal, unseal, import) and the export
//! document they move.
//!
//! The master's contract (served by `mesos-master`):
//! - `POST /registry/seal`: the registry refuses writes from now on; 200 with the
//!   export document. Sealing a sealed registry answers the same document, so an
//!   operator that crashed before storing it simply seals again.
//! - `POST /registry/unseal`: writes are accepted again; 200.
//! - `POST /registry/import` with the document: 200 once learned; 409 when the
//!   registry already held data (left as it is); 400 for a bad document.
//! - A member that does not lead answers 307 (Location: the leader) or 503 (no
//!   leader); the operator never follows the redirect: it acts on the member the
//!   planner named, and re-plans from the next observation otherwise.
//!
//! Masters are called through [`MasterClient`]: [`HttpMasterClient`] in
//! production, a fake in the tests.

use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::StatusCode;

use crate::operator::observe::{HttpMasterClient, MasterStatusSource, MemberTarget};

/// A seal or import takes at most this long: sealing waits for the registrar to
/// settle its last write, importing for the entries to be learned, both far longer
/// than a status read.
pub const REGISTRY_CALL_TIMEOUT_MS: u64 = 30_000;

/// The largest export the operator stores. Kubernetes refuses a ConfigMap whose
/// data exceeds 1 MiB (1,048,576 bytes); 48,576 bytes stay free for the key and
/// whatever the API server counts besides the value.
pub const REGISTRY_EXPORT_MAX_BYTES: usize = 1_000_000;

/// An answer larger than this is not read at all: a bounded buffer, well above
/// [`REGISTRY_EXPORT_MAX_BYTES`] so an oversized export is still reported with its
/// size rather than as an unreadable answer.
pub const REGISTRY_ANSWER_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How an import ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The export was replayed into the log and learned.
    Imported,
    /// The registry already held data and was left as it is (HTTP 409).
    AlreadyHeldData,
}

/// Why a call on a master failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryCallError {
    #[error("{pod}: {call} got no answer within {REGISTRY_CALL_TIMEOUT_MS} ms")]
    Timeout { pod: String, call: &'static str },
    #[error("{pod}: {call}: {reason}")]
    Unreachable {
        pod: String,
        call: &'static str,
        reason: String,
    },
    #[error("{pod} does not lead ({call} answered {status}{})", location.as_deref().map(|leader| format!(", leader at {leader}")).unwrap_or_default())]
    NotLeader {
        pod: String,
        call: &'static str,
        status: u16,
        location: Option<String>,
    },
    #[error("{pod} refused {call} with HTTP {status}: {body}")]
    Refused {
        pod: String,
        call: &'static str,
        status: u16,
        body: String,
    },
}

/// The master calls of a registry transfer, on top of status reads.
pub trait MasterClient: MasterStatusSource {
    /// Seals the registry of `target` (the leader) and returns the export document.
    fn seal_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<Vec<u8>, RegistryCallError>>;
    /// Lets the registry of `target` (the leader) accept writes again.
    fn unseal_registry(&self, target: MemberTarget)
        -> BoxFuture<'_, Result<(), RegistryCallError>>;
    /// Replays `document` through `target` (the leader).
    fn import_registry(
        &self,
        target: MemberTarget,
        document: Vec<u8>,
    ) -> BoxFuture<'_, Result<ImportOutcome, RegistryCallError>>;
    /// `GET /registry/export?scope=local` on `target` itself: what it applied of its
    /// learned prefix, with no quorum or leader (recovery after quorum loss).
    /// Clients that cannot do it answer a refusal.
    fn export_local_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<Vec<u8>, RegistryCallError>> {
        Box::pin(async move {
            Err(RegistryCallError::Refused {
                pod: target.pod,
                call: "local export",
                status: 501,
                body: "this client cannot read a member's local export".into(),
            })
        })
    }
}

/// One POST's status and body.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: Bytes,
}

impl HttpMasterClient {
    async fn post(
        &self,
        target: &MemberTarget,
        call: &'static str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, RegistryCallError> {
        self.send(hyper::Method::POST, target, call, path, body)
            .await
    }

    async fn send(
        &self,
        method: hyper::Method,
        target: &MemberTarget,
        call: &'static str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, RegistryCallError> {
        let unreachable = |reason: String| RegistryCallError::Unreachable {
            pod: target.pod.clone(),
            call,
            reason,
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", target.address))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| unreachable(format!("bad request: {error}")))?;
        let exchange = async {
            let response = self
                .http()
                .request(request)
                .await
                .map_err(|error| unreachable(error.to_string()))?;
            let status = response.status();
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            let body = Limited::new(response.into_body(), REGISTRY_ANSWER_MAX_BYTES)
                .collect()
                .await
                .map_err(|error| unreachable(format!("answer unreadable: {error}")))?
                .to_bytes();
            Ok(Answer {
                status,
                location,
                body,
            })
        };
        tokio::time::timeout(Duration::from_millis(REGISTRY_CALL_TIMEOUT_MS), exchange)
            .await
            .map_err(|_| RegistryCallError::Timeout {
                pod: target.pod.clone(),
                call,
            })?
    }
}

/// A non-success answer as an error: 307 and 503 mean "not the leader".
fn refusal(target: &MemberTarget, call: &'static str, answer: Answer) -> RegistryCallError {
    let status = answer.status.as_u16();
    if answer.status == StatusCode::TEMPORARY_REDIRECT
        || answer.status == StatusCode::SERVICE_UNAVAILABLE
    {
        return RegistryCallError::NotLeader {
            pod: target.pod.clone(),
            call,
            status,
            location: answer.location,
        };
    }
    // A bounded excerpt: the reason goes into status and Events.
    let body: String = String::from_utf8_lossy(&answer.body)
        .chars()
        .take(200)
        .collect();
    RegistryCallError::Refused {
        pod: target.pod.clone(),
        call,
        status,
        body,
    }
}

impl MasterClient for HttpMasterClient {
    fn seal_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<Vec<u8>, RegistryCallError>> {
        Box::pin(async move {
            let answer = self
                .post(&target, "seal", "/registry/seal", Vec::new())
                .await?;
            if answer.status != StatusCode::OK {
                return Err(refusal(&target, "seal", answer));
            }
            Ok(answer.body.to_vec())
        })
    }

    fn unseal_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<(), RegistryCallError>> {
        Box::pin(async move {
            let answer = self
                .post(&target, "unseal", "/registry/unseal", Vec::new())
                .await?;
            if answer.status != StatusCode::OK {
                return Err(refusal(&target, "unseal", answer));
            }
            Ok(())
        })
    }

    fn import_registry(
        &self,
        target: MemberTarget,
        document: Vec<u8>,
    ) -> BoxFuture<'_, Result<ImportOutcome, RegistryCallError>> {
        Box::pin(async move {
            let answer = self
                .post(&target, "import", "/registry/import", document)
                .await?;
            match answer.status {
                StatusCode::OK => Ok(ImportOutcome::Imported),
                StatusCode::CONFLICT => Ok(ImportOutcome::AlreadyHeldData),
                _ => Err(refusal(&target, "import", answer)),
            }
        })
    }

    fn export_local_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<Vec<u8>, RegistryCallError>> {
        Box::pin(async move {
            let answer = self
                .send(
                    hyper::Method::GET,
                    &target,
                    "local export",
                    "/registry/export?scope=local",
                    Vec::new(),
                )
                .await?;
            if answer.status != StatusCode::OK {
                return Err(refusal(&target, "local export", answer));
            }
            Ok(answer.body.to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use std::net::SocketAddr;

    fn target(address: SocketAddr) -> MemberTarget {
        MemberTarget {
            namespace: "db".into(),
            pod: "prod-0-0".into(),
            address,
        }
    }

    use crate::master::export_document::EXPORT_FORMAT;

    fn document() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format": EXPORT_FORMAT, "log_id": 7, "position": 42,
            "sha256": "00", "registry": {"agents": []},
        }))
        .expect("json")
    }

    async fn serve(router: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        address
    }

    #[tokio::test]
    async fn seal_import_and_unseal_speak_the_masters_contract() {
        let router = axum::Router::new()
            .route("/registry/seal", post(|| async { document() }))
            .route("/registry/unseal", post(|| async { "" }))
            .route(
                "/registry/import",
                post(|body: Bytes| async move {
                    if body.as_ref() == document().as_slice() {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }),
            );
        let address = serve(router).await;
        let client = HttpMasterClient::default();
        let sealed = client.seal_registry(target(address)).await.expect("sealed");
        assert_eq!(sealed, document());
        client
            .unseal_registry(target(address))
            .await
            .expect("unsealed");
        assert_eq!(
            client
                .import_registry(target(address), sealed)
                .await
                .expect("imported"),
            ImportOutcome::Imported
        );
        let error = client
            .import_registry(target(address), b"{}".to_vec())
            .await
            .expect_err("bad document");
        assert!(
            matches!(error, RegistryCallError::Refused { status: 400, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_conflict_is_a_registry_left_as_it_was_and_a_redirect_is_not_the_leader() {
        let router = axum::Router::new()
            .route("/registry/import", post(|| async { StatusCode::CONFLICT }))
            .route(
                "/registry/seal",
                post(|| async {
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        hyper::header::LOCATION,
                        "http://10.96.0.11:5050/registry/seal"
                            .parse()
                            .expect("header"),
                    );
                    (StatusCode::TEMPORARY_REDIRECT, headers)
                }),
            )
            .route(
                "/registry/unseal",
                post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            );
        let address = serve(router).await;
        let client = HttpMasterClient::default();
        assert_eq!(
            client
                .import_registry(target(address), document())
                .await
                .expect("answered"),
            ImportOutcome::AlreadyHeldData
        );
        let error = client
            .seal_registry(target(address))
            .await
            .expect_err("redirected");
        assert!(
            matches!(&error, RegistryCallError::NotLeader { status: 307, location: Some(location), .. } if location.contains("10.96.0.11")),
            "{error}"
        );
        let error = client
            .unseal_registry(target(address))
            .await
            .expect_err("no leader");
        assert!(
            matches!(error, RegistryCallError::NotLeader { status: 503, .. }),
            "{error}"
        );
    }
}
