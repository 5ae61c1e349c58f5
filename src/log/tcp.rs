//! Replica-protocol connections over TCP, on the master's HTTP port.
//!
//! - [`sniff`] peeks at an accepted connection's first bytes and hands it back as a
//!   [`ReplicaConn`] (it starts with a replica preamble of any version, or the TLS
//!   one) or as plain HTTP for hyper/axum, with nothing consumed.
//! - [`serve_replica`] runs an accepted replica connection: handshake (our nonce,
//!   in the protocol version the connector asked for: v1 or v2), then each frame
//!   is authenticated, checked against the whitelist and the log id, and forwarded
//!   to a bounded channel for the driver.
//! - [`connect`] opens an outbound link: v2 first, v1 when the peer is a master of
//!   the previous build (see "Rolling upgrade" in [`crate::log::frame`]).
//! - [`PeerSender`] is the outbound side for one remote member: a bounded queue
//!   (full: the message is dropped and counted, since Paxos tolerates loss and a
//!   slow peer must not grow our memory), a task that connects, reconnects with
//!   capped exponential backoff, and writes frames.
//! - [`LinkCounters`] are plain atomics for the master's metrics, plus the
//!   [`ForeignLogReports`]: which whitelisted members sent authenticated frames of
//!   another log, so the master can tell it holds a stray volume.
//!
//! The frame format and the handshake are in [`crate::log::frame`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ring::rand::SystemRandom;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::log::frame::{
    check_preamble, match_preamble, ConnectionNonce, ConnectionNonces, Frame, FrameDecoder,
    FrameEncoder, FrameError, FrameKey, PreambleMatch, WireVersion, HANDSHAKE_REPLY_BYTES,
    NONCE_BYTES, PREAMBLE_BYTES, PREAMBLE_V1,
};
use crate::log::tls::{self, PeerReadHalf, PeerStream, PeerTls, PeerWriteHalf, TlsLinkError};

/// How long an accepted connection may take to send its first bytes before it is
/// handed to HTTP anyway (HTTP is client-first; the HTTP server applies its own
/// timeouts from there).
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while a connection has sent a proper prefix of the preamble.
const SNIFF_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Bounds each step of the handshake, so a silent peer cannot hold a slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// An accepted replica connection must authenticate with a first frame this soon.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A write stalled this long means the peer is not reading: reconnect.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff doubles from the minimum up to the cap. The cap stays well
/// below a typical election timeout so a returning member is heard from quickly.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Messages waiting for one peer. A Paxos round has at most a few messages per
/// position in flight; 1024 covers a pipelined batch, beyond it the peer is behind.
pub const DEFAULT_PEER_QUEUE_CAPACITY: usize = 1024;
/// Frames written with one system call at most, so one write stays bounded.
const MAX_FRAMES_PER_WRITE: usize = 64;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A frame at least this large, on a connection whose peer has proven the
/// token, is read into a buffer of its own ([`FramedReader::read_large_frame`]).
const OWN_BUFFER_FRAME_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("replica connection with {peer}: {source}")]
    Io {
        peer: String,
        #[source]
        source: io::Error,
    },
    #[error("replica connection with {peer}: {source}")]
    Frame {
        peer: String,
        #[source]
        source: FrameError,
    },
    #[error("replica connection with {peer}: {what} timed out after {timeout:?}")]
    Timeout {
        peer: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("replica connection with {peer}: member {sender} is not in the whitelist")]
    NotWhitelisted { peer: String, sender: String },
    #[error("replica connection with {peer}: member {sender} is on log {theirs:#x}, this replica on log {ours:#x}")]
    WrongLogId {
        peer: String,
        sender: String,
        theirs: u64,
        ours: u64,
    },
    #[error("replica connection with {peer}: connection closed in the middle of a frame ({buffered_bytes} bytes buffered)")]
    TruncatedFrame { peer: String, buffered_bytes: usize },
    #[error("replica connection with {peer}: the system's random number generator failed to make a connection nonce")]
    NoRandomness { peer: String },
    #[error("replica connection from {peer}: bytes after the preamble prefix do not match")]
    NotReplicaProtocol { peer: String },
    #[error("replica connection with {peer}: TLS: {source}")]
    Tls {
        peer: String,
        #[source]
        source: TlsLinkError,
    },
    #[error("replica connection from {peer}: refused a plaintext link, this master requires TLS between members (--peer_tls=required); give that member the --peer_tls_* flags")]
    PlaintextRefused { peer: String },
    #[error("replica connection from {peer}: refused a TLS link, this master runs without TLS between members (no --peer_tls_* flags)")]
    TlsNotConfigured { peer: String },
    #[error("replica connection with {peer}: the member requires TLS between members (--peer_tls=required) and this master runs without it; give this master the --peer_tls_* flags")]
    PeerRequiresTls { peer: String },
    /// The peer closed the connection before answering a byte of our preamble: a
    /// master of an older build refusing `version`, or one going away.
    #[error("replica connection with {peer}: closed without answering the replica protocol {version} preamble")]
    VersionRefused { peer: String, version: WireVersion },
}

impl LinkError {
    /// A refusal that configuration, not a member being down, explains: worth a
    /// warning on the connecting side too.
    pub fn is_configuration_mismatch(&self) -> bool {
        matches!(
            self,
            LinkError::PeerRequiresTls { .. }
                | LinkError::Tls {
                    source: TlsLinkError::PeerIsPlaintext
                        | TlsLinkError::Name(_)
                        | TlsLinkError::Io(_),
                    ..
                }
        )
    }
}

/// What this member needs to speak the protocol. Shared (`Arc`) by all links.
#[derive(Debug)]
pub struct LinkConfig {
    /// Our member address as the others know it (`--advertise_ip:--advertise_port`).
    pub self_address: String,
    pub key: FrameKey,
    /// The member addresses of the ensemble (`--masters`).
    pub whitelist: BTreeSet<String>,
    /// Our log id, 0 until initialized; read for every frame sent and received.
    pub log_id: AtomicU64,
    pub max_payload_bytes: u32,
    pub peer_queue_capacity: usize,
    /// TLS between members (`--peer_tls_*`): required in both directions when set,
    /// refused when not (see [`crate::log::tls`]).
    pub tls: Option<Arc<PeerTls>>,
    /// Where the connection nonces come from: the frame code takes them from here.
    pub random: SystemRandom,
}

impl LinkConfig {
    pub fn new(self_address: String, key: FrameKey, whitelist: BTreeSet<String>) -> LinkConfig {
        LinkConfig {
            self_address,
            key,
            whitelist,
            log_id: AtomicU64::new(0),
            max_payload_bytes: crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES,
            peer_queue_capacity: DEFAULT_PEER_QUEUE_CAPACITY,
            tls: None,
            random: SystemRandom::new(),
        }
    }
}

/// Counters for metrics. Relaxed atomics: each is independent.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub refused_not_whitelisted: AtomicU64,
    pub refused_bad_mac: AtomicU64,
    pub refused_wrong_log_id: AtomicU64,
    /// Frames or handshakes that are not the protocol: bad preamble, magic,
    /// version, flags, sequence. The connection is closed.
    pub malformed_frames: AtomicU64,
    /// Frames whose header announces a payload or sender longer than allowed,
    /// refused from the header alone. The connection is closed.
    pub oversized_frames: AtomicU64,
    /// Connections closed in the middle of a frame.
    pub truncated_frames: AtomicU64,
    /// Outbound messages dropped because the peer's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Outbound messages dropped for exceeding the maximum payload.
    pub dropped_too_large: AtomicU64,
    /// Outbound messages lost with a connection that failed while writing them.
    pub dropped_in_flight: AtomicU64,
    /// Inbound frames dropped because the driver's channel was full.
    pub dropped_inbound_full: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub sniffed_http: AtomicU64,
    pub sniffed_replica: AtomicU64,
    /// Plaintext replica connections refused by a TLS-required master.
    pub refused_plaintext: AtomicU64,
    /// TLS replica connections refused by a master without TLS.
    pub refused_tls_unexpected: AtomicU64,
    /// Inbound TLS handshakes that failed: a certificate of no CA in the bundle,
    /// none at all, expired, or not TLS.
    pub refused_tls_handshake: AtomicU64,
    /// Accepted connections that settled on replica protocol v1: a connector of
    /// a build older than the previous one (a mixed ensemble, during a rolling
    /// upgrade).
    pub v1_accepted: AtomicU64,
    /// Accepted connections that settled on v2: a connector of the previous build.
    pub v2_accepted: AtomicU64,
    /// Outbound links that fell back to v1 because the peer refused v3 and v2:
    /// the peer is a master of a build older than the previous one.
    pub v1_fallbacks: AtomicU64,
    /// Outbound links that fell back to v2 because the peer refused v3: the peer
    /// is a master of the previous build.
    pub v2_fallbacks: AtomicU64,
    /// Certificate files re-loaded after they changed (rotation).
    pub tls_reloads: AtomicU64,
    /// Changed certificate files that could not be read or did not load.
    pub tls_reload_failures: AtomicU64,
    /// Not a counter: who says they are on another log (see [`ForeignLogReports`]).
    pub foreign_logs: ForeignLogReports,
}

/// Whitelisted members whose frames, authenticated by the ensemble token, carried
/// a log id other than ours, with the latest id each announced. A member leaves the
/// list as soon as one of its frames passes the log id check again (it is on our
/// log, or empty and catching up).
///
/// The transport is where this is known: it refuses such frames before the core
/// sees them (the core's own check is the second line), so the core stays pure and
/// the master decides what a quorum of such reports means.
///
/// A member only learns this from frames it receives, and a member of the
/// ensemble that does not lead may have nothing to send to a stray. So a refusal
/// for another log id also leaves a *notice* owed to the refused member: a frame
/// with an empty payload, which carries nothing but the sender's authenticated log
/// id (the driver sends owed notices; receivers never hand an empty payload to the
/// core). A refused notice owes nothing back, so two logs do not ping-pong.
#[derive(Debug, Default)]
pub struct ForeignLogReports {
    reports: Mutex<BTreeMap<String, u64>>,
    owed_notices: Mutex<BTreeSet<String>>,
    /// `reports.len()`, so the path of every accepted frame skips the lock when
    /// nobody is reported, which is always in a healthy ensemble.
    reported: AtomicUsize,
}

impl ForeignLogReports {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // Every update is a single insert or remove: a panicked holder left it valid.
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `sender` sent an authenticated frame of log `log_id` (not ours, not 0).
    pub fn report(&self, sender: &str, log_id: u64) {
        let mut reports = self.lock();
        reports.insert(sender.to_owned(), log_id);
        self.reported.store(reports.len(), Ordering::Relaxed);
    }

    /// `sender` sent a frame that passed the log id check.
    pub fn clear(&self, sender: &str) {
        if self.reported.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut reports = self.lock();
        reports.remove(sender);
        self.reported.store(reports.len(), Ordering::Relaxed);
    }

    /// Member address -> the foreign log id it announced last.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.lock().clone()
    }

    fn owe_notice(&self, sender: &str) {
        self.owed_notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sender.to_owned());
    }

    /// The members owed a notice of our log id since the last call.
    pub fn take_owed_notices(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .owed_notices
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// The payload of a log id notice (see [`ForeignLogReports`]).
pub const LOG_ID_NOTICE: &[u8] = &[];

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An accepted connection, classified by its first bytes.
#[derive(Debug)]
pub enum Sniffed {
    Replica(ReplicaConn),
    /// Untouched: give it to the HTTP server.
    Http(TcpStream),
}

/// An accepted connection that started with the replica preamble (not yet read).
#[derive(Debug)]
pub struct ReplicaConn {
    stream: TcpStream,
    peer: SocketAddr,
    /// It started with [`tls::TLS_PREAMBLE`].
    tls: bool,
}

impl ReplicaConn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connector asked for TLS.
    pub fn wants_tls(&self) -> bool {
        self.tls
    }
}

/// Where a connection's first bytes point, across both preambles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    Plain,
    Tls,
    Other,
    NeedMore,
}

fn sniff_bytes(first: &[u8]) -> Sniff {
    match (match_preamble(first), tls::match_tls_preamble(first)) {
        (PreambleMatch::Replica, _) => Sniff::Plain,
        (_, PreambleMatch::Replica) => Sniff::Tls,
        (PreambleMatch::NeedMore, _) | (_, PreambleMatch::NeedMore) => Sniff::NeedMore,
        _ => Sniff::Other,
    }
}

/// Classifies an accepted connection by peeking; consumes nothing.
pub async fn sniff(stream: TcpStream, counters: &LinkCounters) -> Result<Sniffed, LinkError> {
    let peer = stream.peer_addr().map_err(|source| LinkError::Io {
        peer: "unknown peer".into(),
        source,
    })?;
    let peek = async {
        let mut first = [0u8; PREAMBLE_BYTES];
        loop {
            let seen = stream.peek(&mut first).await?;
            if seen == 0 {
                // Closed before a byte: let HTTP see the EOF.
                return Ok(Sniff::Other);
            }
            match sniff_bytes(&first[..seen]) {
                Sniff::NeedMore => tokio::time::sleep(SNIFF_POLL_INTERVAL).await,
                decided => return Ok(decided),
            }
        }
    };
    let decided = match tokio::time::timeout(SNIFF_TIMEOUT, peek).await {
        Ok(Ok(decided)) => decided,
        Ok(Err(source)) => {
            return Err(LinkError::Io {
                peer: peer.to_string(),
                source,
            })
        }
        // Silent: HTTP is client-first, but the HTTP server owns that timeout.
        Err(_) => Sniff::Other,
    };
    Ok(match decided {
        Sniff::Plain | Sniff::Tls => {
            bump(&counters.sniffed_replica);
            Sniffed::Replica(ReplicaConn {
                stream,
                peer,
                tls: decided == Sniff::Tls,
            })
        }
        _ => {
            bump(&counters.sniffed_http);
            Sniffed::Http(stream)
        }
    })
}

/// Reads frames from one connection into a bounded buffer.
pub struct FramedReader<R> {
    reader: R,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already decoded; compacted before each read so
    /// a burst of small frames costs one move per read, not one per frame.
    consumed: usize,
    peer: String,
}

impl<R: AsyncRead + Unpin> FramedReader<R> {
    pub fn new(reader: R, decoder: FrameDecoder, peer: String) -> Self {
        FramedReader {
            reader,
            decoder,
            buffer: Vec::new(),
            consumed: 0,
            peer,
        }
    }

    /// The next authenticated frame; `Ok(None)` at a clean end of stream.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            let pending = &self.buffer[self.consumed..];
            // Once a frame passed the MAC the peer holds the token, and a large
            // frame's announced length may be allocated before its bytes arrive.
            if self.decoder.frames_decoded() > 0 {
                if let Ok(Some(total)) = self.decoder.frame_bytes(pending) {
                    if total >= OWN_BUFFER_FRAME_BYTES && pending.len() < total {
                        return self.read_large_frame(total).await.map(Some);
                    }
                }
            }
            match self.decoder.decode(pending) {
                Ok(Some((frame, used))) => {
                    self.consumed += used;
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(LinkError::Frame {
                        peer: self.peer.clone(),
                        source,
                    })
                }
            }
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
            self.give_back_room();
            // The buffer grows only by bytes that arrived, one chunk at a time, and
            // the decoder refuses a header with an oversized length as soon as the
            // header is in: the buffer stays within one maximal frame plus a chunk,
            // whatever a peer announces.
            self.buffer.reserve(READ_CHUNK_BYTES);
            let read = match self.reader.read_buf(&mut self.buffer).await {
                Ok(read) => read,
                Err(source) => {
                    return Err(LinkError::Io {
                        peer: self.peer.clone(),
                        source,
                    })
                }
            };
            if read == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(LinkError::TruncatedFrame {
                    peer: self.peer.clone(),
                    buffered_bytes: self.buffer.len(),
                });
            }
        }
    }

    /// Gives back the room a rare large frame took, so idle links stay small.
    fn give_back_room(&mut self) {
        if self.buffer.is_empty() && self.buffer.capacity() > 4 * READ_CHUNK_BYTES {
            self.buffer.shrink_to(READ_CHUNK_BYTES);
        }
    }

    /// Reads the rest of a frame of `total` bytes, whose start is all that is
    /// buffered, into a buffer of its own, straight from the socket, and decodes
    /// it there: the payload (a catch-up answer, MiBs) is handed out as a slice of
    /// that buffer, so it is neither moved as a shared buffer grows nor copied
    /// out of it, and the log values decoded from it can share it in turn.
    async fn read_large_frame(&mut self, total: usize) -> Result<Frame, LinkError> {
        // Its pages faulted in already (ahead, by the stock's helper, when large
        // frames come in a run) or at once: the whole frame is about to be
        // written. Only a peer that proved the token gets here with a large length.
        let mut frame = crate::log::buffers::for_incoming(total);
        frame.extend_from_slice(&self.buffer[self.consumed..]);
        self.buffer.clear();
        self.consumed = 0;
        self.give_back_room();
        match read_until_len(&mut self.reader, &mut frame, total).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(LinkError::TruncatedFrame {
                    peer: self.peer.clone(),
                    buffered_bytes: frame.len(),
                })
            }
            Err(source) => {
                return Err(LinkError::Io {
                    peer: self.peer.clone(),
                    source,
                })
            }
        }
        self.decoder
            .decode_in_place(frame)
            .map_err(|source| LinkError::Frame {
                peer: self.peer.clone(),
                source,
            })
    }
}

/// Reads from `reader` into `buffer` until it holds `len` bytes, and not one byte
/// more: the buffer may have more room than that (a stocked buffer, see
/// `buffers::for_incoming`), and the bytes after are the next frame's. False if
/// the stream ends first.
async fn read_until_len<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
    len: usize,
) -> io::Result<bool> {
    use bytes::BufMut;
    while buffer.len() < len {
        let mut room = buffer.limit(len - buffer.len());
        if reader.read_buf(&mut room).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes frames to one connection.
pub struct FramedWriter<W> {
    writer: W,
    encoder: FrameEncoder,
    buffer: Vec<u8>,
    peer: String,
}

impl<W: AsyncWrite + Unpin> FramedWriter<W> {
    pub fn new(writer: W, encoder: FrameEncoder, peer: String) -> Self {
        FramedWriter {
            writer,
            encoder,
            buffer: Vec::new(),
            peer,
        }
    }

    /// The replica protocol version of the link.
    pub fn version(&self) -> WireVersion {
        self.encoder.version()
    }

    /// Encodes the payloads as consecutive frames and writes them in one go.
    /// A payload of at least [`OWN_BUFFER_FRAME_BYTES`] is written from where it
    /// lies, between its header and its tag, rather than copied next to them; in
    /// v3 it is encrypted where it lies, so the payloads are spent either way
    /// (what is not sent is dropped: Paxos retries what matters).
    pub async fn send_all(
        &mut self,
        log_id: u64,
        payloads: &mut [Vec<u8>],
    ) -> Result<(), LinkError> {
        let frame_error = |peer: &str, source| LinkError::Frame {
            peer: peer.to_owned(),
            source,
        };
        self.buffer.clear();
        // Encoded up front, so a refused payload sends nothing of the batch: each
        // part is a range of the buffer and maybe the index of a payload after it.
        let mut parts: Vec<(std::ops::Range<usize>, Option<usize>)> = Vec::new();
        let mut start = 0;
        for (index, payload) in payloads.iter_mut().enumerate() {
            if payload.len() >= OWN_BUFFER_FRAME_BYTES {
                let tag = self
                    .encoder
                    .encode_around(log_id, payload, &mut self.buffer)
                    .map_err(|source| frame_error(&self.peer, source))?;
                parts.push((start..self.buffer.len(), Some(index)));
                start = self.buffer.len();
                self.buffer.extend_from_slice(tag.as_ref());
            } else {
                self.encoder
                    .encode(log_id, payload, &mut self.buffer)
                    .map_err(|source| frame_error(&self.peer, source))?;
            }
        }
        parts.push((start..self.buffer.len(), None));
        let write = async {
            for (encoded, payload) in parts {
                self.writer.write_all(&self.buffer[encoded]).await?;
                if let Some(index) = payload {
                    self.writer.write_all(&payloads[index]).await?;
                }
            }
            self.writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(LinkError::Io {
                peer: self.peer.clone(),
                source,
            }),
            Err(_) => Err(LinkError::Timeout {
                peer: self.peer.clone(),
                what: "writing frames",
                timeout: WRITE_TIMEOUT,
            }),
        }
    }
}

/// A frame that passed every check, for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundFrame {
    /// The member address the frame claims (authenticated by the MAC).
    pub sender: String,
    pub log_id: u64,
    /// Shared with the buffer a large frame was read into ([`FramedReader`]).
    pub payload: bytes::Bytes,
    /// The socket address it came from (may differ from `sender` behind NAT).
    pub peer: SocketAddr,
}

async fn with_timeout<T>(
    peer: &str,
    what: &'static str,
    future: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(LinkError::Io {
            peer: peer.to_string(),
            source,
        }),
        Err(_) => Err(LinkError::Timeout {
            peer: peer.to_string(),
            what,
            timeout: HANDSHAKE_TIMEOUT,
        }),
    }
}

/// Runs one accepted replica connection until it closes or misbehaves, forwarding
/// frames that pass every check to `inbound` (dropped and counted when it is full:
/// the driver is behind, and Paxos tolerates loss). A refusal closes the connection
/// and is returned as the error (and counted).
pub async fn serve_replica(
    conn: ReplicaConn,
    config: Arc<LinkConfig>,
    counters: Arc<LinkCounters>,
    inbound: mpsc::Sender<InboundFrame>,
) -> Result<(), LinkError> {
    let ReplicaConn {
        mut stream,
        peer,
        tls: wants_tls,
    } = conn;
    let peer_name = peer.to_string();
    let _ = stream.set_nodelay(true);
    match (wants_tls, &config.tls) {
        (false, None) => serve_replica_stream(stream, peer, config, counters, inbound).await,
        (true, Some(peer_tls)) => {
            let stream = match tls::accept(stream, peer_tls).await {
                Ok(stream) => stream,
                Err(source) => {
                    bump(&counters.refused_tls_handshake);
                    let error = LinkError::Tls {
                        peer: peer_name,
                        source,
                    };
                    tracing::warn!(%error, "refused a replica connection");
                    return Err(error);
                }
            };
            serve_replica_stream(stream, peer, config, counters, inbound).await
        }
        (false, Some(_)) => {
            bump(&counters.refused_plaintext);
            // Tell the connector why before closing, so its log says it too.
            let mut preamble = [0u8; PREAMBLE_BYTES];
            let _ = with_timeout(
                &peer_name,
                "reading the preamble",
                stream.read_exact(&mut preamble),
            )
            .await;
            let _ = with_timeout(
                &peer_name,
                "refusing plaintext",
                stream.write_all(&tls::TLS_PREAMBLE),
            )
            .await;
            let error = LinkError::PlaintextRefused { peer: peer_name };
            tracing::warn!(%error, "refused a replica connection");
            Err(error)
        }
        (true, None) => {
            bump(&counters.refused_tls_unexpected);
            let mut preamble = [0u8; PREAMBLE_BYTES];
            let _ = with_timeout(
                &peer_name,
                "reading the preamble",
                stream.read_exact(&mut preamble),
            )
            .await;
            // v1: the previous build's TLS connectors look for exactly this answer.
            let _ = with_timeout(&peer_name, "refusing TLS", stream.write_all(&PREAMBLE_V1)).await;
            let error = LinkError::TlsNotConfigured { peer: peer_name };
            tracing::warn!(%error, "refused a replica connection");
            Err(error)
        }
    }
}

/// [`serve_replica`] once the transport is settled (plaintext or TLS): the
/// replica handshake, then frames.
async fn serve_replica_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    config: Arc<LinkConfig>,
    counters: Arc<LinkCounters>,
    inbound: mpsc::Sender<InboundFrame>,
) -> Result<(), LinkError> {
    let peer_name = peer.to_string();
    let mut preamble = [0u8; PREAMBLE_BYTES];
    with_timeout(
        &peer_name,
        "reading the preamble",
        stream.read_exact(&mut preamble),
    )
    .await?;
    // Any version: answer in the one asked for, so connectors of older builds
    // (v1 only, v1 and v2) and of this one (v3) are all served.
    let version = match check_preamble(&preamble) {
        Ok(version) => version,
        Err(source) => {
            bump(&counters.malformed_frames);
            return Err(LinkError::Frame {
                peer: peer_name,
                source,
            });
        }
    };
    let mut connector_nonce = None;
    if version.has_connector_nonce() {
        let mut nonce = [0u8; NONCE_BYTES];
        with_timeout(
            &peer_name,
            "reading the connector's nonce",
            stream.read_exact(&mut nonce),
        )
        .await?;
        connector_nonce = Some(ConnectionNonce(nonce));
    }
    let nonce = ConnectionNonce::generate(&config.random).map_err(|_| LinkError::NoRandomness {
        peer: peer_name.clone(),
    })?;
    let mut reply = [0u8; HANDSHAKE_REPLY_BYTES];
    reply[..PREAMBLE_BYTES].copy_from_slice(&version.preamble());
    reply[PREAMBLE_BYTES..].copy_from_slice(&nonce.0);
    with_timeout(&peer_name, "sending the nonce", stream.write_all(&reply)).await?;

    let nonces = ConnectionNonces {
        acceptor: nonce,
        connector: connector_nonce,
    };
    let decoder = FrameDecoder::new(
        version,
        config.key.clone(),
        nonces,
        config.max_payload_bytes,
    )
    .map_err(|source| LinkError::Frame {
        peer: peer_name.clone(),
        source,
    })?;
    let mut reader = FramedReader::new(stream, decoder, peer_name.clone());
    let mut authenticated = false;
    loop {
        let next = if authenticated {
            reader.next_frame().await
        } else {
            // Until a frame proves the token, the peer is anyone: it gets a bounded
            // wait, not a connection held open forever. A PeerSender connects only
            // when it has a message, so its first frame follows at once.
            match tokio::time::timeout(FIRST_FRAME_TIMEOUT, reader.next_frame()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(LinkError::Timeout {
                        peer: peer_name,
                        what: "waiting for the first frame",
                        timeout: FIRST_FRAME_TIMEOUT,
                    })
                }
            }
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(error) => {
                match &error {
                    LinkError::Frame { source, .. } => match source {
                        FrameError::BadMac => bump(&counters.refused_bad_mac),
                        FrameError::TooLarge { .. } | FrameError::SenderTooLong { .. } => {
                            bump(&counters.oversized_frames)
                        }
                        FrameError::Truncated { .. } => bump(&counters.truncated_frames),
                        _ => bump(&counters.malformed_frames),
                    },
                    LinkError::TruncatedFrame { .. } => bump(&counters.truncated_frames),
                    _ => {}
                }
                return Err(error);
            }
        };
        if !config.whitelist.contains(&frame.sender) {
            bump(&counters.refused_not_whitelisted);
            return Err(LinkError::NotWhitelisted {
                peer: peer_name,
                sender: frame.sender,
            });
        }
        // 0 on either side means "not initialized yet": recovery and
        // auto-initialization must talk before a log id exists.
        let ours = config.log_id.load(Ordering::Relaxed);
        if ours != 0 && frame.log_id != 0 && frame.log_id != ours {
            bump(&counters.refused_wrong_log_id);
            // Whitelisted and proven to hold the token: a member's word on its log.
            counters.foreign_logs.report(&frame.sender, frame.log_id);
            if frame.payload != LOG_ID_NOTICE {
                counters.foreign_logs.owe_notice(&frame.sender);
            }
            return Err(LinkError::WrongLogId {
                peer: peer_name,
                sender: frame.sender,
                theirs: frame.log_id,
                ours,
            });
        }
        if !authenticated && version < WireVersion::LATEST {
            // Counted and logged once the sender is known and proven: a connector
            // in an older version is a master of an older build.
            match version {
                WireVersion::V1 => bump(&counters.v1_accepted),
                _ => bump(&counters.v2_accepted),
            }
            tracing::debug!(%peer, sender = %frame.sender, %version, "replica connection in an older protocol version: the member runs an older build");
        }
        authenticated = true;
        counters.foreign_logs.clear(&frame.sender);
        bump(&counters.frames_received);
        if frame.payload == LOG_ID_NOTICE {
            // Its log id was the whole message, and it matched (or one side is
            // not initialized): nothing for the core.
            continue;
        }
        let inbound_frame = InboundFrame {
            sender: frame.sender,
            log_id: frame.log_id,
            payload: frame.payload,
            peer,
        };
        match inbound.try_send(inbound_frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.dropped_inbound_full),
            // The driver is gone: nothing left to serve.
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        }
    }
}

/// Connects to `remote` and performs the connector's side of the handshake, in
/// the newest protocol version the peer speaks: [`WireVersion::LATEST`] first and,
/// each time the peer closes the connection without answering (a master of an
/// older build refuses an unknown version that way), the version before it on a
/// new connection at once, down to v1. The writer tells which version the link
/// speaks. Every call asks for the latest first again, so a link reaches it on the
/// first reconnect after the peer is upgraded (see "Rolling upgrade" in
/// [`crate::log::frame`]).
///
/// The read half carries nothing after the handshake; it becomes readable when the
/// peer closes (for instance after refusing a frame), which tells the sender to
/// reconnect before it writes into a dead connection.
pub async fn connect(
    remote: &str,
    config: &LinkConfig,
) -> Result<(FramedWriter<PeerWriteHalf>, PeerReadHalf), LinkError> {
    let mut version = WireVersion::LATEST;
    loop {
        match connect_version(remote, config, version).await {
            Err(LinkError::VersionRefused {
                version: refused,
                peer,
            }) => match refused.previous() {
                Some(previous) => {
                    tracing::debug!(%remote, %refused, asking = %previous, "replica link: peer refused the version, asking for the one before");
                    version = previous;
                }
                None => {
                    return Err(LinkError::VersionRefused {
                        peer,
                        version: refused,
                    })
                }
            },
            outcome => return outcome,
        }
    }
}

/// [`connect`] in one given version, without fallback.
pub async fn connect_version(
    remote: &str,
    config: &LinkConfig,
    version: WireVersion,
) -> Result<(FramedWriter<PeerWriteHalf>, PeerReadHalf), LinkError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => {
            return Err(LinkError::Io {
                peer: remote.to_string(),
                source,
            })
        }
        Err(_) => {
            return Err(LinkError::Timeout {
                peer: remote.to_string(),
                what: "connecting",
                timeout: CONNECT_TIMEOUT,
            })
        }
    };
    let _ = stream.set_nodelay(true);
    let mut stream = match &config.tls {
        Some(peer_tls) => match tls::connect(stream, remote, peer_tls).await {
            Ok(stream) => PeerStream::Tls(Box::new(stream)),
            Err(source) => {
                return Err(LinkError::Tls {
                    peer: remote.to_string(),
                    source,
                })
            }
        },
        None => PeerStream::Plain(stream),
    };
    // v3 sends its own nonce with the preamble, in one write: an acceptor of an
    // older build closes the connection after the preamble either way.
    let connector_nonce = match version.has_connector_nonce() {
        true => Some(ConnectionNonce::generate(&config.random).map_err(|_| {
            LinkError::NoRandomness {
                peer: remote.to_string(),
            }
        })?),
        false => None,
    };
    let mut opening = version.preamble().to_vec();
    if let Some(nonce) = &connector_nonce {
        opening.extend_from_slice(&nonce.0);
    }
    with_timeout(remote, "sending the preamble", stream.write_all(&opening)).await?;
    let mut reply = [0u8; HANDSHAKE_REPLY_BYTES];
    let answered = with_timeout(
        remote,
        "reading the preamble",
        read_answer(&mut stream, &mut reply[..PREAMBLE_BYTES]),
    )
    .await?;
    if answered == 0 {
        return Err(LinkError::VersionRefused {
            peer: remote.to_string(),
            version,
        });
    }
    if answered < PREAMBLE_BYTES {
        return Err(LinkError::Io {
            peer: remote.to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {answered} bytes of the preamble"),
            ),
        });
    }
    if config.tls.is_none() && reply[..PREAMBLE_BYTES] == tls::TLS_PREAMBLE {
        return Err(LinkError::PeerRequiresTls {
            peer: remote.to_string(),
        });
    }
    with_timeout(
        remote,
        "reading the nonce",
        stream.read_exact(&mut reply[PREAMBLE_BYTES..]),
    )
    .await?;
    let frame_error = |source| LinkError::Frame {
        peer: remote.to_string(),
        source,
    };
    let answered = check_preamble(&reply[..PREAMBLE_BYTES]).map_err(frame_error)?;
    if answered != version {
        return Err(frame_error(FrameError::VersionMismatch {
            asked: version,
            answered: answered.byte(),
        }));
    }
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(&reply[PREAMBLE_BYTES..]);
    let nonces = ConnectionNonces {
        acceptor: ConnectionNonce(nonce),
        connector: connector_nonce,
    };
    let encoder = FrameEncoder::new(
        version,
        config.key.clone(),
        nonces,
        config.self_address.clone(),
        config.max_payload_bytes,
    )
    .map_err(frame_error)?;
    let (read_half, write_half) = stream.into_split();
    Ok((
        FramedWriter::new(write_half, encoder, remote.to_string()),
        read_half,
    ))
}

/// Reads up to `buf.len()` bytes of the acceptor's answer; 0 when the peer closed
/// (or reset) the connection before sending a byte, which is how a master of an
/// older build refuses a version it does not know.
async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(read) => filled += read,
            // A close with our preamble unread, or a TLS close without
            // close_notify, shows as an error rather than an end of stream.
            Err(error)
                if filled == 0
                    && matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::UnexpectedEof
                    ) =>
            {
                break
            }
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The outbound link to one remote member. Dropping it stops its task.
#[derive(Debug)]
pub struct PeerSender {
    remote: String,
    queue: mpsc::Sender<Vec<u8>>,
    counters: Arc<LinkCounters>,
    max_payload_bytes: u32,
    task: JoinHandle<()>,
}

impl Drop for PeerSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerSender {
    /// Starts the link's task on the current tokio runtime.
    pub fn spawn(
        remote: String,
        config: Arc<LinkConfig>,
        counters: Arc<LinkCounters>,
    ) -> PeerSender {
        let (queue, receiver) = mpsc::channel(config.peer_queue_capacity.max(1));
        let max_payload_bytes = config.max_payload_bytes;
        let task = tokio::spawn(run_peer(remote.clone(), config, counters.clone(), receiver));
        PeerSender {
            remote,
            queue,
            counters,
            max_payload_bytes,
            task,
        }
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// Queues `payload` for the peer; returns false if it was dropped (queue full,
    /// or larger than the maximum payload), which the counters record.
    pub fn send(&self, payload: Vec<u8>) -> bool {
        if payload.len() as u64 > u64::from(self.max_payload_bytes) {
            bump(&self.counters.dropped_too_large);
            return false;
        }
        match self.queue.try_send(payload) {
            Ok(()) => true,
            Err(_) => {
                bump(&self.counters.dropped_queue_full);
                false
            }
        }
    }
}

async fn run_peer(
    remote: String,
    config: Arc<LinkConfig>,
    counters: Arc<LinkCounters>,
    mut queue: mpsc::Receiver<Vec<u8>>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(MAX_FRAMES_PER_WRITE);
    // The version of the previous link, so a peer found to speak an older version
    // is an `info!` once, not at every reconnect.
    let mut last_version = None;
    loop {
        // Connect only when there is something to say, so an idle link to a member
        // that is down costs nothing.
        if batch.is_empty() {
            match queue.recv().await {
                Some(payload) => batch.push(payload),
                None => return,
            }
        }
        let (mut writer, mut closed_probe) = match connect(&remote, &config).await {
            Ok(link) => {
                bump(&counters.connects);
                backoff = RECONNECT_BACKOFF_MIN;
                let version = link.0.version();
                if version < WireVersion::LATEST {
                    match version {
                        WireVersion::V1 => bump(&counters.v1_fallbacks),
                        _ => bump(&counters.v2_fallbacks),
                    }
                    if last_version != Some(version) {
                        tracing::info!(%remote, %version, "replica link: the member speaks protocol {version} at most (an older build); using {version} with it until it is upgraded");
                    } else {
                        tracing::debug!(%remote, %version, "replica link: the member still speaks protocol {version} at most");
                    }
                } else if last_version.is_some_and(|last| last < version) {
                    tracing::info!(%remote, %version, "replica link: the member now speaks protocol {version}");
                }
                last_version = Some(version);
                link
            }
            Err(error) => {
                bump(&counters.connect_failures);
                if error.is_configuration_mismatch() {
                    // Not a member being down: TLS settings disagree. At most one
                    // line per backoff period.
                    tracing::warn!(%remote, %error, "replica link: connect refused");
                } else {
                    tracing::debug!(%remote, %error, ?backoff, "replica link: connect failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        loop {
            while batch.len() < MAX_FRAMES_PER_WRITE {
                match queue.try_recv() {
                    Ok(payload) => batch.push(payload),
                    Err(_) => break,
                }
            }
            let log_id = config.log_id.load(Ordering::Relaxed);
            match writer.send_all(log_id, &mut batch).await {
                Ok(()) => {
                    counters
                        .frames_sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.drain(..).for_each(crate::log::buffers::give_back);
                }
                Err(error) => {
                    // Whether the peer got them is unknown; Paxos retries what matters.
                    counters
                        .dropped_in_flight
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.drain(..).for_each(crate::log::buffers::give_back);
                    tracing::debug!(%remote, %error, "replica link: write failed, reconnecting");
                    break;
                }
            }
            let mut probe = [0u8; 1];
            tokio::select! {
                payload = queue.recv() => match payload {
                    Some(payload) => batch.push(payload),
                    None => return,
                },
                // End of stream, an error, or bytes the protocol never sends: the
                // connection is over either way.
                _ = closed_probe.read(&mut probe) => {
                    tracing::debug!(%remote, "replica link: peer closed the connection");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
