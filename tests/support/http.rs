//! The tests' HTTP client: hyper's HTTP/1.1 client connection, one request per
//! connection, behind a blocking call (the tests are threads, not tasks). It tells
//! a request that never reached the server (it cannot have taken effect) from one
//! whose outcome is unknown (sent, then no complete answer), which the fault
//! workloads depend on.
//!
//! `send_raw` is for bytes no real client would send (the master's robustness
//! tests); it reads until the server closes and never parses what it got beyond
//! the status code.

#![allow(dead_code)] // each test module uses a different part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, CONNECTION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;

/// No test request should take anywhere near this long on loopback.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// `http://127.0.0.2:5050/...` in the `Location` header -> 127.0.0.2:5050.
    pub fn location(&self) -> Option<SocketAddr> {
        let rest = self.header("location")?.strip_prefix("http://")?;
        rest.split('/').next()?.parse().ok()
    }
}

#[derive(Debug)]
pub enum CallError {
    /// The connection failed: nothing was sent.
    NotSent(String),
    /// Sent (or being sent), but no complete answer: timeout, reset, garbage. It
    /// may have taken effect.
    Unknown(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(why) => write!(f, "not sent: {why}"),
            CallError::Unknown(why) => write!(f, "outcome unknown: {why}"),
        }
    }
}

/// One request; `send` blocks until the answer, an error or the timeout.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
    json: bool,
    connect_timeout: Duration,
    timeout: Duration,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            method,
            path,
            body: b"",
            json: false,
            connect_timeout: IO_TIMEOUT,
            timeout: IO_TIMEOUT,
        }
    }

    /// The body, sent without a content type (e.g. `POST /log/append`).
    pub fn body(mut self, body: &'a [u8]) -> Request<'a> {
        self.body = body;
        self.json = false;
        self
    }

    /// A JSON document as the body, sent as `application/json`.
    pub fn json(mut self, json: &'a str) -> Request<'a> {
        self.body = json.as_bytes();
        self.json = true;
        self
    }

    /// Bounds the whole exchange after the connection is made.
    pub fn timeout(mut self, timeout: Duration) -> Request<'a> {
        self.timeout = timeout;
        self
    }

    /// Bounds the connection attempt (a partitioned member never answers).
    pub fn connect_timeout(mut self, timeout: Duration) -> Request<'a> {
        self.connect_timeout = timeout;
        self
    }

    pub fn send(&self, addr: SocketAddr) -> Result<HttpResponse, CallError> {
        runtime().block_on(self.exchange(addr))
    }

    async fn exchange(&self, addr: SocketAddr) -> Result<HttpResponse, CallError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| CallError::NotSent(format!("connecting to {addr} timed out")))?
                .map_err(|error| CallError::NotSent(format!("connecting to {addr}: {error}")))?;
        let unknown = |what: &str, error: &dyn std::fmt::Display| {
            CallError::Unknown(format!(
                "{} {} on {addr}: {what}: {error}",
                self.method, self.path
            ))
        };
        let exchange = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|error| unknown("handshake", &error))?;
            tokio::spawn(connection);
            let mut request = hyper::Request::builder()
                .method(self.method)
                .uri(self.path)
                .header(HOST, addr.to_string())
                .header(CONNECTION, "close");
            if self.json {
                request = request.header(CONTENT_TYPE, "application/json");
            }
            let request = request
                .body(Full::new(Bytes::copy_from_slice(self.body)))
                .map_err(|error| unknown("building the request", &error))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| unknown("sending", &error))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| unknown("reading the body", &error))?
                .to_bytes();
            Ok(HttpResponse {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unknown("no answer", &format!("within {:?}", self.timeout)))?
    }
}

/// One runtime for every test thread of the binary: `block_on` may be called from
/// many threads at once on a multi-thread runtime.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-http")
            .enable_all()
            .build()
            .expect("the test HTTP client's runtime")
    })
}

pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<HttpResponse, CallError> {
    Request::new(method, path).send(addr)
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path).unwrap_or_else(|err| panic!("GET {path} on {addr}: {err}"))
}

/// A request with a body sent without a content type (e.g. `POST /log/append`).
pub fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<HttpResponse, CallError> {
    Request::new(method, path).body(body).send(addr)
}

/// A request with a body and a bound on the whole exchange (connect included).
pub fn request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse, CallError> {
    Request::new(method, path)
        .body(body)
        .timeout(timeout)
        .connect_timeout(timeout)
        .send(addr)
}

/// `POST` of a JSON document.
pub fn post_json(addr: SocketAddr, path: &str, json: &str) -> Result<HttpResponse, CallError> {
    Request::new("POST", path).json(json).send(addr)
}

/// Writes `bytes` and reads until the server closes the connection.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // No half-close: hyper may drop a connection whose client stops writing before
    // it answers. Every request sent this way asks the server to close after
    // answering, or is one it cannot answer but by closing.
    stream.write_all(bytes)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response)
}

/// The status code of a raw answer (`HTTP/1.x NNN ...`), if it has one.
pub fn raw_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("HTTP/1.")?;
    rest.get(2..5)?.parse().ok()
}
