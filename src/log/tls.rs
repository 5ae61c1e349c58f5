//! TLS between members (`--peer_tls_*`): mutual authentication with rustls under
//! the ensemble token, which stays the second factor (every frame still carries
//! its MAC; see [`crate::log::frame`]).
//!
//! # Wire
//!
//! A TLS link announces itself in the clear so the master's one port can still tell
//! it from HTTP and from a plaintext replica link (see [`crate::log::tcp::sniff`]):
//!
//! ```text
//! connector -> acceptor   TLS_PREAMBLE (6 bytes, clear)
//! acceptor  -> connector  TLS_PREAMBLE (6 bytes, clear): "I speak TLS, go on"
//! ...TLS 1.3/1.2 handshake, both sides present certificates of the CA bundle...
//! then, inside TLS, the replica handshake and frames of crate::log::frame.
//! ```
//!
//! The replica protocol version (v1 or v2) is negotiated by that inner handshake,
//! as on a plaintext link, so [`TLS_PREAMBLE`] keeps its version byte 1 and routes
//! both; a connector that falls back to v1 does so on a new TLS connection.
//!
//! A member that disagrees answers with the other side's preamble and closes: a
//! TLS-required acceptor answers a plaintext preamble (any version) with
//! [`TLS_PREAMBLE`], a plaintext acceptor answers [`TLS_PREAMBLE`] with
//! [`PREAMBLE_V1`](crate::log::frame::PREAMBLE_V1) (v1, which the previous build's connectors compare against, and
//! any replica preamble is taken as that answer here); the connector then says in
//! one log line which side has TLS. Both refusals are counted.
//!
//! # Names
//!
//! The connector checks the acceptor's certificate against the CA bundle and the
//! name it expects for that member: by default the host part of its whitelisted
//! address (an IP SAN in the local runtime), or the name `--peer_tls_server_names`
//! maps the address to (`<cluster>-<i>-0.<cluster>-members.<ns>.svc` in Kubernetes,
//! where whitelists hold Service IPs a certificate cannot know in advance). The
//! acceptor checks the connector's certificate against the CA bundle.
//!
//! # Rotation
//!
//! [`PeerTls`] re-reads the three files every reload interval and compares their
//! contents (cert-manager swaps a Secret volume's files by a symlink, so a path's
//! mtime alone may not change; contents always do). New material applies to new
//! connections; established links keep theirs until they reconnect. Material that
//! does not load (a half-written rotation, a key that does not match) is refused,
//! logged and counted, and the previous material stays in use.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::log::frame::{match_preamble, PreambleMatch, PREAMBLE_BYTES};
use crate::log::tcp::LinkCounters;

/// What a TLS replica connection sends first, in the clear: NUL, `MLOT`, version.
/// Starts with NUL like [`crate::log::frame::PREAMBLE_V1`], so it is never taken for HTTP.
pub const TLS_PREAMBLE: [u8; PREAMBLE_BYTES] = *b"\0MLOT\x01";

/// How often the certificate files are re-read by default
/// (`--peer_tls_reload_interval`). cert-manager renews well before expiry, so a few
/// seconds' delay costs nothing, and reading three small files is cheap.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Bounds the TLS handshake, like every other step of a link's set-up.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The flags that name the three files, for messages.
pub const CERT_FLAG: &str = "--peer_tls_cert_file";
pub const KEY_FLAG: &str = "--peer_tls_key_file";
pub const CA_FLAG: &str = "--peer_tls_ca_file";

/// Classifies a connection's first bytes against [`TLS_PREAMBLE`] (the magic only,
/// like [`crate::log::frame::match_preamble`]).
pub fn match_tls_preamble(first_bytes: &[u8]) -> PreambleMatch {
    let magic = &TLS_PREAMBLE[..PREAMBLE_BYTES - 1];
    let seen = first_bytes.len().min(magic.len());
    if first_bytes[..seen] != magic[..seen] {
        PreambleMatch::Other
    } else if seen < magic.len() {
        PreambleMatch::NeedMore
    } else {
        PreambleMatch::Replica
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: cannot read it: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{flag} {path}: not valid PEM: {reason}")]
    BadPem {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{flag} {path}: holds no {what}")]
    Empty {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{flag} {path}: {reason}")]
    BadCa {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{KEY_FLAG} {key}: not the private key of the certificate in {CERT_FLAG} {cert}: {reason}"
    )]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        reason: String,
    },
    #[error("{CERT_FLAG} {cert}: the certificate has expired ({reason})")]
    Expired { cert: PathBuf, reason: String },
    #[error("{CERT_FLAG} {cert}: the certificate is not yet valid ({reason})")]
    NotYetValid { cert: PathBuf, reason: String },
    #[error(
        "{CERT_FLAG} {cert}: the certificate does not verify against {CA_FLAG} {ca}: {reason}"
    )]
    NotSignedByCa {
        cert: PathBuf,
        ca: PathBuf,
        reason: String,
    },
    #[error("--peer_tls_server_names: {name:?} is not a DNS name or IP address")]
    BadServerName { name: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The three files, as given by the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl FileContents {
    fn read(files: &TlsFiles) -> Result<FileContents, TlsError> {
        let read = |flag: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                flag,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(FileContents {
            cert: read(CERT_FLAG, &files.cert)?,
            key: read(KEY_FLAG, &files.key)?,
            ca: read(CA_FLAG, &files.ca)?,
        })
    }

    /// Identifies this set of contents, to notice a rotation.
    fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [&self.cert, &self.key, &self.ca] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }
}

fn provider() -> Arc<CryptoProvider> {
    // Explicit, not the process default: the operator's kube client may install
    // another provider, and both may be compiled in.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One loaded, verified set of certificate, key and CA bundle.
pub struct TlsMaterial {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    /// CA certificates in the bundle (several during a CA rotation).
    pub ca_count: usize,
    digest: [u8; 32],
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_count", &self.ca_count)
            .finish_non_exhaustive()
    }
}

fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            flag,
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            flag,
            path: path.to_path_buf(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

fn describe(error: &rustls::Error) -> String {
    error.to_string()
}

impl TlsMaterial {
    fn load(files: &TlsFiles, contents: &FileContents) -> Result<TlsMaterial, TlsError> {
        let provider = provider();
        let chain = certificates(CERT_FLAG, &files.cert, &contents.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|error| match error {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
                flag: KEY_FLAG,
                path: files.key.clone(),
                what: "PEM private key",
            },
            error => TlsError::BadPem {
                flag: KEY_FLAG,
                path: files.key.clone(),
                reason: error.to_string(),
            },
        })?;
        let cas = certificates(CA_FLAG, &files.ca, &contents.ca)?;
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots.add(ca.clone()).map_err(|error| TlsError::BadCa {
                flag: CA_FLAG,
                path: files.ca.clone(),
                reason: describe(&error),
            })?;
        }
        let roots = Arc::new(roots);

        // The key must be the certificate's, checked here so a mismatch is a
        // startup refusal and not a handshake failure on every link.
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |error| TlsError::KeyMismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
                reason: describe(&error),
            },
        )?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|error| TlsError::BadCa {
                    flag: CA_FLAG,
                    path: files.ca.clone(),
                    reason: error.to_string(),
                })?;
        // Our own certificate must verify where the others will verify it: signed
        // by the bundle and valid now (an expired certificate is refused here with
        // that reason, not discovered by every peer).
        let (end_entity, intermediates) = chain.split_first().ok_or_else(|| TlsError::Empty {
            flag: CERT_FLAG,
            path: files.cert.clone(),
            what: "PEM certificate",
        })?;
        if let Err(error) =
            client_verifier.verify_client_cert(end_entity, intermediates, UnixTime::now())
        {
            let reason = describe(&error);
            return Err(match error {
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => TlsError::Expired {
                    cert: files.cert.clone(),
                    reason,
                },
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
                ) => TlsError::NotYetValid {
                    cert: files.cert.clone(),
                    reason,
                },
                _ => TlsError::NotSignedByCa {
                    cert: files.cert.clone(),
                    ca: files.ca.clone(),
                    reason,
                },
            });
        }

        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|error| TlsError::BadCa {
                flag: CA_FLAG,
                path: files.ca.clone(),
                reason: error.to_string(),
            })?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)?;
        Ok(TlsMaterial {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            ca_count: cas.len(),
            digest: contents.digest(),
        })
    }
}

/// A member's TLS state: the files, the material in use, and reload counters.
#[derive(Debug)]
pub struct PeerTls {
    files: TlsFiles,
    /// Member address (`ip:port`) -> the name its certificate carries.
    server_names: BTreeMap<String, ServerName<'static>>,
    current: RwLock<Arc<TlsMaterial>>,
    /// The contents last tried, loaded or not: a bad set is reported once, not
    /// at every poll.
    last_seen: RwLock<[u8; 32]>,
}

impl PeerTls {
    /// Loads and verifies the files, for startup (errors refuse the start).
    pub fn load(
        files: TlsFiles,
        server_names: &BTreeMap<String, String>,
    ) -> Result<PeerTls, TlsError> {
        let server_names = server_names
            .iter()
            .map(|(address, name)| {
                ServerName::try_from(name.clone())
                    .map(|parsed| (address.clone(), parsed))
                    .map_err(|_| TlsError::BadServerName { name: name.clone() })
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let contents = FileContents::read(&files)?;
        let material = TlsMaterial::load(&files, &contents)?;
        Ok(PeerTls {
            files,
            server_names,
            last_seen: RwLock::new(material.digest),
            current: RwLock::new(Arc::new(material)),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The material new connections use.
    pub fn current(&self) -> Arc<TlsMaterial> {
        // Replaced whole under the lock: a panicked holder left a valid Arc.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files; loads them if their contents changed. `Ok(true)` when
    /// new material is in use, `Ok(false)` when nothing changed, and the load error
    /// when changed files were refused (reported once per distinct contents) or
    /// could not be read.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let contents = FileContents::read(&self.files)?;
        let digest = contents.digest();
        {
            let mut last_seen = self
                .last_seen
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if *last_seen == digest {
                return Ok(false);
            }
            *last_seen = digest;
        }
        match TlsMaterial::load(&self.files, &contents) {
            Ok(material) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(material);
                Ok(true)
            }
            Err(error) => Err(error),
        }
    }

    /// Polls the files every `interval` until the handle is aborted, counting
    /// in `counters.tls_reloads` / `tls_reload_failures`.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        counters: Arc<LinkCounters>,
    ) -> JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let outcome = {
                    let tls = tls.clone();
                    tokio::task::spawn_blocking(move || tls.reload_if_changed()).await
                };
                match outcome {
                    Ok(Ok(true)) => {
                        counters.tls_reloads.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            cas = tls.current().ca_count,
                            "peer TLS: certificate files changed; new connections use the new material"
                        )
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(error @ TlsError::Read { .. })) => {
                        // A rotation in progress (a file briefly missing) or a
                        // permission problem: keep what works, look again.
                        counters.tls_reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%error, "peer TLS: certificate files unreadable, keeping the loaded material");
                    }
                    Ok(Err(error)) => {
                        counters.tls_reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            %error,
                            "peer TLS: changed certificate files refused; keeping the material in use"
                        )
                    }
                    Err(error) => tracing::warn!(%error, "peer TLS: reload task failed"),
                }
            }
        })
    }

    /// The name member `remote` (`host:port`) must prove in its certificate.
    pub fn server_name(&self, remote: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = self.server_names.get(remote) {
            return Ok(name.clone());
        }
        let host = match remote.rsplit_once(':') {
            Some((host, _port)) => host,
            None => remote,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::BadServerName { name: host.into() })
    }
}

/// A TLS connection from the connector's side, as [`crate::log::tcp::connect`]
/// returns it.
pub type ClientTlsStream = tokio_rustls::client::TlsStream<TcpStream>;
/// A TLS connection from the acceptor's side.
pub type ServerTlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Why a TLS link could not be set up, for the transport's errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsLinkError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out after {0:?} during the TLS handshake")]
    Timeout(Duration),
    #[error("the member runs without TLS between members (no --peer_tls_* flags) but this master requires it")]
    PeerIsPlaintext,
    #[error("the member answered the TLS preamble with {found:02x?}, not the replica protocol")]
    UnexpectedAnswer { found: Vec<u8> },
    #[error("{0}")]
    Name(#[from] TlsError),
}

async fn bounded<T>(
    future: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, TlsLinkError> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(TlsLinkError::Io(error)),
        Err(_) => Err(TlsLinkError::Timeout(TLS_HANDSHAKE_TIMEOUT)),
    }
}

/// The connector's side: announces TLS, waits for the acceptor to agree, runs the
/// handshake and checks the acceptor's certificate for `remote`'s name.
pub async fn connect(
    mut stream: TcpStream,
    remote: &str,
    tls: &PeerTls,
) -> Result<ClientTlsStream, TlsLinkError> {
    let name = tls.server_name(remote)?;
    bounded(stream.write_all(&TLS_PREAMBLE)).await?;
    let mut answer = [0u8; PREAMBLE_BYTES];
    bounded(stream.read_exact(&mut answer)).await?;
    if match_preamble(&answer) == PreambleMatch::Replica {
        return Err(TlsLinkError::PeerIsPlaintext);
    }
    if answer != TLS_PREAMBLE {
        return Err(TlsLinkError::UnexpectedAnswer {
            found: answer.to_vec(),
        });
    }
    let connector = tls.current().connector.clone();
    bounded(connector.connect(name, stream)).await
}

/// The acceptor's side after [`crate::log::tcp::sniff`] saw [`TLS_PREAMBLE`]:
/// consumes it, agrees, and runs the handshake (which verifies the connector's
/// certificate against the CA bundle).
pub async fn accept(mut stream: TcpStream, tls: &PeerTls) -> Result<ServerTlsStream, TlsLinkError> {
    let mut preamble = [0u8; PREAMBLE_BYTES];
    bounded(stream.read_exact(&mut preamble)).await?;
    if preamble != TLS_PREAMBLE {
        return Err(TlsLinkError::UnexpectedAnswer {
            found: preamble.to_vec(),
        });
    }
    bounded(stream.write_all(&TLS_PREAMBLE)).await?;
    let acceptor = tls.current().acceptor.clone();
    bounded(acceptor.accept(stream)).await
}

/// The read half of an outbound link, plaintext or TLS.
#[derive(Debug)]
pub enum PeerReadHalf {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<ClientTlsStream>),
}

/// The write half of an outbound link, plaintext or TLS.
#[derive(Debug)]
pub enum PeerWriteHalf {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<ClientTlsStream>),
}

/// An outbound link before it is split: plaintext keeps tokio's lock-free split.
#[derive(Debug)]
pub enum PeerStream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream>),
}

impl PeerStream {
    pub fn into_split(self) -> (PeerReadHalf, PeerWriteHalf) {
        match self {
            PeerStream::Plain(stream) => {
                let (read, write) = stream.into_split();
                (PeerReadHalf::Plain(read), PeerWriteHalf::Plain(write))
            }
            PeerStream::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (PeerReadHalf::Tls(read), PeerWriteHalf::Tls(write))
            }
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for PeerReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerReadHalf::Plain(half) => Pin::new(half).poll_read(cx, buf),
            PeerReadHalf::Tls(half) => Pin::new(half).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerWriteHalf::Plain(half) => Pin::new(half).poll_write(cx, buf),
            PeerWriteHalf::Tls(half) => Pin::new(half).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerWriteHalf::Plain(half) => Pin::new(half).poll_flush(cx),
            PeerWriteHalf::Tls(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerWriteHalf::Plain(half) => Pin::new(half).poll_shutdown(cx),
            PeerWriteHalf::Tls(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}

// The tests generate their certificates with the local runtime's CA.
#[cfg(test)]
mod test_certs;
#[cfg(test)]
mod tests;
