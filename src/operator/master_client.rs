//! The one client of the masters' HTTP API, for everyone in the operator: the
//! Kubernetes reconcile loop, the local runtime, the backup and restore commands.
//!
//! Every call is typed ([`Call`]) and every request is built in one place
//! ([`HttpMasterClient::request`]), so credentials on the HTTP API and HTTPS are
//! added there and nowhere else. Callers hold a [`MasterClient`]: the HTTP client
//! in production, a fake in the tests.
//!
//! The masters' contract for the registry transfer (served by `mesos-master`):
//! - `POST /registry/seal`: the registry refuses writes from now on; 200 with the
//!   export document. Sealing a sealed registry answers the same document, so an
//!   operator that crashed before storing it simply seals again.
//! - `POST /registry/unseal`: writes are accepted again; 200.
//! - `POST /registry/import` with the document: 200 once learned; 409 when the
//!   registry already held data (left as it is); 400 for a bad document.
//! - `GET /registry/export`: the leader's registry as of its learned position.
//! - `GET /registry/export?scope=local`: any member's own applied learned prefix,
//!   with no quorum or leader, and headers saying how far its log reaches.
//! - A member that does not lead answers 307 (Location: the leader) or 503 (no
//!   leader); a master without an endpoint (an older one) answers 404.
//!
//! Redirects are the caller's choice, visible at every call ([`Redirect`]).

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::master::api::LogStatus;
use crate::master::operator_api::{LEARNED_POSITION_HEADER, LOG_END_POSITION_HEADER};

/// A status read by the Kubernetes loop takes at most this long: a hung master
/// must not stall the reconcile of its whole cluster (it simply reports no status
/// this round). Also the connect timeout of every call.
pub const KUBERNETES_STATUS_TIMEOUT_MS: u64 = 2_000;
/// The local runtime reads every member's status in turn on each tick, on
/// loopback: a member that does not answer within this is as good as down, and a
/// longer wait would slow the whole loop.
pub const LOCAL_STATUS_TIMEOUT_MS: u64 = 500;
/// A seal or import by the Kubernetes loop takes at most this long: sealing waits
/// for the registrar to settle its last write, importing for the entries to be
/// learned, both far longer than a status read.
pub const KUBERNETES_REGISTRY_CALL_TIMEOUT_MS: u64 = 30_000;
/// The same for the local runtime and the backup commands: loopback members, and
/// a terminal user waiting.
pub const LOCAL_REGISTRY_CALL_TIMEOUT_MS: u64 = 15_000;
/// An answer larger than this is not read at all: a bounded buffer, well above the
/// largest export the operator stores (`REGISTRY_EXPORT_MAX_BYTES`, 1 MB) so an
/// oversized export is still reported with its size rather than as unreadable, and
/// room for a backup of a large registry.
pub const ANSWER_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Characters of a refusal's body kept in the error: the reason goes into status
/// and Events, which must stay small.
pub const REFUSAL_EXCERPT_CHARS: usize = 200;

/// How long calls may take; per caller, because the Kubernetes loop and the local
/// runtime wait on masters in different settings (see the constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub status_ms: u64,
    pub registry_call_ms: u64,
}

impl Timeouts {
    pub const KUBERNETES: Timeouts = Timeouts {
        status_ms: KUBERNETES_STATUS_TIMEOUT_MS,
        registry_call_ms: KUBERNETES_REGISTRY_CALL_TIMEOUT_MS,
    };
    pub const LOCAL: Timeouts = Timeouts {
        status_ms: LOCAL_STATUS_TIMEOUT_MS,
        registry_call_ms: LOCAL_REGISTRY_CALL_TIMEOUT_MS,
    };
}

/// Whom to ask: a name for errors (a pod on Kubernetes, the address locally) and
/// the address its master listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberTarget {
    pub name: String,
    pub address: SocketAddr,
}

impl MemberTarget {
    /// A member known only by its address.
    pub fn at(address: SocketAddr) -> MemberTarget {
        MemberTarget {
            name: address.to_string(),
            address,
        }
    }
}

/// What a call does with a 307 from a member that does not lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// Reported as [`MasterCallError::NotLeader`] with the Location: the Kubernetes
    /// loop acts on the member the planner named and re-plans from the next
    /// observation otherwise, so it never calls a member it did not choose.
    Report,
    /// Followed once, to the leader the Location names: the local runtime and the
    /// backup commands are handed any member and want the leader's answer.
    FollowOnce,
}

/// The calls the operator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Status,
    Seal,
    Unseal,
    Import,
    Export,
    LocalExport,
}

impl Call {
    fn method(self) -> Method {
        match self {
            Call::Status | Call::Export | Call::LocalExport => Method::GET,
            Call::Seal | Call::Unseal | Call::Import => Method::POST,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Call::Status => "/log/status",
            Call::Seal => "/registry/seal",
            Call::Unseal => "/registry/unseal",
            Call::Import => "/registry/import",
            Call::Export => "/registry/export",
            Call::LocalExport => "/registry/export?scope=local",
        }
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method(), self.path())
    }
}

/// How an import ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The export was replayed into the log and learned.
    Imported,
    /// The registry already held data and was left as it is (HTTP 409).
    AlreadyHeldData,
}

/// A member's local export as it answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalExport {
    pub document: Vec<u8>,
    /// `x-registry-learned-position`: one past the last position it knows learned.
    pub learned_end: Option<u64>,
    /// `x-registry-log-end-position`.
    pub end: Option<u64>,
}

/// Why a call on a master failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterCallError {
    #[error("{member}: {call} got no answer within {timeout_ms} ms")]
    Timeout {
        member: String,
        call: Call,
        timeout_ms: u64,
    },
    #[error("{member}: {call}: {reason}")]
    Unreachable {
        member: String,
        call: Call,
        reason: String,
    },
    #[error("{member} does not lead ({call} answered {status}{})", location.as_deref().map(|leader| format!(", leader at {leader}")).unwrap_or_default())]
    NotLeader {
        member: String,
        call: Call,
        status: u16,
        location: Option<String>,
    },
    #[error("{member} refused {call} with HTTP {status}: {body}")]
    Refused {
        member: String,
        call: Call,
        status: u16,
        body: String,
    },
    #[error("{member} answered 404 to {call}: this mesos-master does not serve it (an older master; the operator needs one with the registry transfer endpoints)")]
    EndpointMissing { member: String, call: Call },
    #[error("{member}: the answer to {call} is larger than {limit_bytes} bytes")]
    AnswerTooLarge {
        member: String,
        call: Call,
        limit_bytes: usize,
    },
    #[error("{member}: the answer to {call} is unreadable: {reason}")]
    Unreadable {
        member: String,
        call: Call,
        reason: String,
    },
}

/// The calls on a master; a trait so tests can stand in.
pub trait MasterClient: Send + Sync {
    /// `GET /log/status` on `target` itself.
    fn log_status(&self, target: MemberTarget)
        -> BoxFuture<'_, Result<LogStatus, MasterCallError>>;
    /// `POST /registry/seal` on the leader: seals the registry through the log (every
    /// later write is refused, so the export stays complete until the wipe) and
    /// returns the export document as of the seal.
    fn seal_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>>;
    /// `POST /registry/unseal` on the leader: writes are accepted again.
    fn unseal_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<(), MasterCallError>>;
    /// `POST /registry/import` of `document` through the leader.
    fn import_registry(
        &self,
        target: MemberTarget,
        document: Vec<u8>,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<ImportOutcome, MasterCallError>>;
    /// `GET /registry/export` on the leader: the registry as of its learned
    /// position, with no side effect (backups).
    fn export_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>>;
    /// `GET /registry/export?scope=local` on `target` itself, never redirected: a
    /// survivor of a quorum loss knows no leader (recovery).
    fn export_local_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<LocalExport, MasterCallError>>;
}

/// One answer: status, the headers callers read, and the bounded body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn location(&self) -> Option<String> {
        self.header(hyper::header::LOCATION.as_str())
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    }
}

/// The HTTP client.
pub struct HttpMasterClient {
    http: Client<HttpConnector, Full<Bytes>>,
    timeouts: Timeouts,
}

impl HttpMasterClient {
    pub fn new(timeouts: Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(timeouts.status_ms)));
        // One connection per call: masters are called seldom (a status read per
        // member per reconcile), and a restarted master is then never called
        // through a pooled connection that died with its old process.
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Self { http, timeouts }
    }

    /// Every request to a master is built here (credentials and HTTPS go here).
    fn request(
        target: &MemberTarget,
        call: Call,
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, MasterCallError> {
        hyper::Request::builder()
            .method(call.method())
            .uri(format!("http://{}{}", target.address, call.path()))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|error| MasterCallError::Unreachable {
                member: target.name.clone(),
                call,
                reason: format!("bad request: {error}"),
            })
    }

    /// One request and its whole, bounded answer, within the call's timeout.
    async fn exchange(
        &self,
        target: &MemberTarget,
        call: Call,
        body: Bytes,
    ) -> Result<Answer, MasterCallError> {
        let timeout_ms = match call {
            Call::Status => self.timeouts.status_ms,
            _ => self.timeouts.registry_call_ms,
        };
        let member = || target.name.clone();
        let request = Self::request(target, call, body)?;
        let exchange =
            async {
                let response = self.http.request(request).await.map_err(|error| {
                    MasterCallError::Unreachable {
                        member: member(),
                        call,
                        reason: error.to_string(),
                    }
                })?;
                let status = response.status();
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, ANSWER_MAX_BYTES)
                    .collect()
                    .await
                    .map_err(|error| {
                        if error.downcast_ref::<LengthLimitError>().is_some() {
                            MasterCallError::AnswerTooLarge {
                                member: member(),
                                call,
                                limit_bytes: ANSWER_MAX_BYTES,
                            }
                        } else {
                            MasterCallError::Unreachable {
                                member: member(),
                                call,
                                reason: format!("answer cut off: {error}"),
                            }
                        }
                    })?
                    .to_bytes();
                Ok(Answer {
                    status,
                    headers: parts.headers,
                    body,
                })
            };
        tokio::time::timeout(Duration::from_millis(timeout_ms), exchange)
            .await
            .map_err(|_| MasterCallError::Timeout {
                member: member(),
                call,
                timeout_ms,
            })?
    }

    /// [`Self::exchange`], following one redirect if the caller asked for it; the
    /// answer comes with the member that gave it.
    async fn call(
        &self,
        target: MemberTarget,
        call: Call,
        body: Vec<u8>,
        redirect: Redirect,
    ) -> Result<(MemberTarget, Answer), MasterCallError> {
        let body = Bytes::from(body);
        let mut target = target;
        let mut redirects_left = match redirect {
            Redirect::Report => 0,
            Redirect::FollowOnce => 1,
        };
        loop {
            let answer = self.exchange(&target, call, body.clone()).await?;
            let leader = (answer.status == StatusCode::TEMPORARY_REDIRECT && redirects_left > 0)
                .then(|| answer.location().as_deref().and_then(location_address))
                .flatten();
            match leader {
                Some(leader) => {
                    redirects_left -= 1;
                    target = MemberTarget::at(leader);
                }
                None => return Ok((target, answer)),
            }
        }
    }

    /// A call whose only success is 200, answering the body.
    async fn expect_ok(
        &self,
        target: MemberTarget,
        call: Call,
        redirect: Redirect,
    ) -> Result<Vec<u8>, MasterCallError> {
        let (target, answer) = self.call(target, call, Vec::new(), redirect).await?;
        if answer.status != StatusCode::OK {
            return Err(refusal(&target, call, answer));
        }
        Ok(answer.body.to_vec())
    }
}

/// `http://127.0.0.2:5050/registry/seal` → 127.0.0.2:5050; none for a Location
/// without an `ip:port` authority (nothing to follow).
fn location_address(location: &str) -> Option<SocketAddr> {
    let uri: hyper::Uri = location.parse().ok()?;
    uri.authority()?.as_str().parse().ok()
}

/// A non-success answer as an error: 404 an endpoint this master lacks, 307 and
/// 503 a member that does not lead, anything else a refusal with its reason.
fn refusal(target: &MemberTarget, call: Call, answer: Answer) -> MasterCallError {
    let member = target.name.clone();
    match answer.status {
        StatusCode::NOT_FOUND => MasterCallError::EndpointMissing { member, call },
        StatusCode::TEMPORARY_REDIRECT | StatusCode::SERVICE_UNAVAILABLE
            if call != Call::Status =>
        {
            MasterCallError::NotLeader {
                member,
                call,
                status: answer.status.as_u16(),
                location: answer.location(),
            }
        }
        status => MasterCallError::Refused {
            member,
            call,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&answer.body)
                .chars()
                .take(REFUSAL_EXCERPT_CHARS)
                .collect(),
        },
    }
}

impl MasterClient for HttpMasterClient {
    fn log_status(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<LogStatus, MasterCallError>> {
        Box::pin(async move {
            let call = Call::Status;
            let body = self
                .expect_ok(target.clone(), call, Redirect::Report)
                .await?;
            serde_json::from_slice(&body).map_err(|error| MasterCallError::Unreadable {
                member: target.name,
                call,
                reason: error.to_string(),
            })
        })
    }

    fn seal_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>> {
        Box::pin(self.expect_ok(target, Call::Seal, redirect))
    }

    fn unseal_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<(), MasterCallError>> {
        Box::pin(async move {
            self.expect_ok(target, Call::Unseal, redirect).await?;
            Ok(())
        })
    }

    fn import_registry(
        &self,
        target: MemberTarget,
        document: Vec<u8>,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<ImportOutcome, MasterCallError>> {
        Box::pin(async move {
            let (target, answer) = self.call(target, Call::Import, document, redirect).await?;
            match answer.status {
                StatusCode::OK => Ok(ImportOutcome::Imported),
                StatusCode::CONFLICT => Ok(ImportOutcome::AlreadyHeldData),
                _ => Err(refusal(&target, Call::Import, answer)),
            }
        })
    }

    fn export_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>> {
        Box::pin(self.expect_ok(target, Call::Export, redirect))
    }

    fn export_local_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<LocalExport, MasterCallError>> {
        Box::pin(async move {
            let call = Call::LocalExport;
            let (target, answer) = self
                .call(target, call, Vec::new(), Redirect::Report)
                .await?;
            if answer.status != StatusCode::OK {
                return Err(refusal(&target, call, answer));
            }
            let number = |name: &str| answer.header(name)?.trim().parse().ok();
            Ok(LocalExport {
                learned_end: number(LEARNED_POSITION_HEADER),
                end: number(LOG_END_POSITION_HEADER),
                document: answer.body.to_vec(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::api;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use std::sync::{Arc, Mutex};

    fn status() -> LogStatus {
        LogStatus {
            member: "10.96.0.10:5050".parse().expect("address"),
            status: api::ReplicaStatus::Voting,
            log_id: Some(7),
            begin: 0,
            end: 42,
            learned: 42,
            quorum: 2,
            masters: vec!["10.96.0.10:5050".parse().expect("address")],
            leader: None,
            elected: false,
            peer_tls: false,
        }
    }

    fn target(address: SocketAddr) -> MemberTarget {
        MemberTarget {
            name: "prod-0-0".into(),
            address,
        }
    }

    fn document() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format": crate::master::export_document::EXPORT_FORMAT, "log_id": 7,
            "position": 42, "sha256": "00", "registry": {"agents": []},
        }))
        .expect("json")
    }

    fn client() -> HttpMasterClient {
        HttpMasterClient::new(Timeouts::KUBERNETES)
    }

    async fn serve(router: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        address
    }

    fn redirect_to(location: String) -> (StatusCode, HeaderMap) {
        let mut headers = HeaderMap::new();
        headers.insert(hyper::header::LOCATION, location.parse().expect("header"));
        (StatusCode::TEMPORARY_REDIRECT, headers)
    }

    #[tokio::test]
    async fn reads_a_masters_log_status() {
        let router =
            axum::Router::new().route("/log/status", get(|| async { axum::Json(status()) }));
        let address = serve(router).await;
        let read = client()
            .log_status(target(address))
            .await
            .expect("status read");
        assert_eq!(read, status());
    }

    #[tokio::test]
    async fn names_the_member_it_could_not_reach() {
        // Bound and dropped: nothing listens there any more.
        let address = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("address");
        let error = client()
            .log_status(target(address))
            .await
            .expect_err("nothing listens");
        assert!(error.to_string().starts_with("prod-0-0"), "{error}");
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
        let client = client();
        let sealed = client
            .seal_registry(target(address), Redirect::Report)
            .await
            .expect("sealed");
        assert_eq!(sealed, document());
        client
            .unseal_registry(target(address), Redirect::Report)
            .await
            .expect("unsealed");
        assert_eq!(
            client
                .import_registry(target(address), sealed, Redirect::Report)
                .await
                .expect("imported"),
            ImportOutcome::Imported
        );
        let error = client
            .import_registry(target(address), b"{}".to_vec(), Redirect::Report)
            .await
            .expect_err("bad document");
        assert!(
            matches!(error, MasterCallError::Refused { status: 400, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_conflict_is_a_registry_left_as_it_was_and_a_redirect_is_not_the_leader() {
        let router = axum::Router::new()
            .route("/registry/import", post(|| async { StatusCode::CONFLICT }))
            .route(
                "/registry/seal",
                post(|| async { redirect_to("http://10.96.0.11:5050/registry/seal".into()) }),
            )
            .route(
                "/registry/unseal",
                post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            );
        let address = serve(router).await;
        let client = client();
        assert_eq!(
            client
                .import_registry(target(address), document(), Redirect::Report)
                .await
                .expect("answered"),
            ImportOutcome::AlreadyHeldData
        );
        let error = client
            .seal_registry(target(address), Redirect::Report)
            .await
            .expect_err("redirected");
        assert!(
            matches!(&error, MasterCallError::NotLeader { status: 307, location: Some(location), .. } if location.contains("10.96.0.11")),
            "{error}"
        );
        let error = client
            .unseal_registry(target(address), Redirect::Report)
            .await
            .expect_err("no leader");
        assert!(
            matches!(error, MasterCallError::NotLeader { status: 503, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn follow_once_reaches_the_leader_and_stops_at_a_second_redirect() {
        let imported = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let seen = imported.clone();
        let leader = serve(
            axum::Router::new()
                .route(
                    "/registry/import",
                    post(move |body: Bytes| async move {
                        seen.lock().expect("lock").push(body.to_vec());
                        StatusCode::OK
                    }),
                )
                .route("/registry/export", get(|| async { document() })),
        )
        .await;
        let follower =
            serve(
                axum::Router::new()
                    .route(
                        "/registry/import",
                        post(move || async move {
                            redirect_to(format!("http://{leader}/registry/import"))
                        }),
                    )
                    .route(
                        "/registry/export",
                        get(move || async move {
                            redirect_to(format!("http://{leader}/registry/export"))
                        }),
                    ),
            )
            .await;
        let client = client();
        assert_eq!(
            client
                .import_registry(target(follower), document(), Redirect::FollowOnce)
                .await
                .expect("imported through the leader"),
            ImportOutcome::Imported
        );
        assert_eq!(*imported.lock().expect("lock"), vec![document()]);
        assert_eq!(
            client
                .export_registry(target(follower), Redirect::FollowOnce)
                .await
                .expect("exported by the leader"),
            document()
        );
        // Report never follows: nothing more reaches the leader.
        let error = client
            .import_registry(target(follower), document(), Redirect::Report)
            .await
            .expect_err("not followed");
        assert!(
            matches!(error, MasterCallError::NotLeader { status: 307, .. }),
            "{error}"
        );
        assert_eq!(imported.lock().expect("lock").len(), 1);

        // A member that redirects to one that redirects again: one hop only.
        let loop_back = serve(axum::Router::new().route(
            "/registry/export",
            get(move || async move { redirect_to(format!("http://{follower}/registry/export")) }),
        ))
        .await;
        let error = client
            .export_registry(target(loop_back), Redirect::FollowOnce)
            .await
            .expect_err("two redirects");
        assert!(
            matches!(&error, MasterCallError::NotLeader { status: 307, member, .. } if *member == follower.to_string()),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_local_export_carries_the_learned_and_end_positions() {
        let router = axum::Router::new().route(
            "/registry/export",
            get(
                |query: axum::extract::Query<std::collections::BTreeMap<String, String>>| async move {
                    let mut headers = HeaderMap::new();
                    if query.get("scope").map(String::as_str) != Some("local") {
                        return (StatusCode::TEMPORARY_REDIRECT, headers, Vec::new());
                    }
                    headers.insert(LEARNED_POSITION_HEADER, "41".parse().expect("header"));
                    headers.insert(LOG_END_POSITION_HEADER, " 45 ".parse().expect("header"));
                    (StatusCode::OK, headers, document())
                },
            ),
        );
        let address = serve(router).await;
        let export = client()
            .export_local_registry(target(address))
            .await
            .expect("local export");
        assert_eq!(
            export,
            LocalExport {
                document: document(),
                learned_end: Some(41),
                end: Some(45),
            }
        );
    }

    #[tokio::test]
    async fn an_older_master_without_the_endpoint_and_an_oversized_answer_say_so() {
        let router = axum::Router::new().route(
            "/registry/export",
            get(|| async { vec![b' '; ANSWER_MAX_BYTES + 1] }),
        );
        let address = serve(router).await;
        let client = client();
        let error = client
            .seal_registry(target(address), Redirect::FollowOnce)
            .await
            .expect_err("no such endpoint");
        assert_eq!(
            error,
            MasterCallError::EndpointMissing {
                member: "prod-0-0".into(),
                call: Call::Seal
            }
        );
        assert!(error.to_string().contains("POST /registry/seal"), "{error}");
        let error = client
            .export_registry(target(address), Redirect::Report)
            .await
            .expect_err("too large");
        assert!(
            matches!(
                error,
                MasterCallError::AnswerTooLarge {
                    limit_bytes: ANSWER_MAX_BYTES,
                    ..
                }
            ),
            "{error}"
        );
    }
}
