//! A blocking HTTP/1.1 client with short timeouts that tells apart a request that
//! never reached the server (it cannot have taken effect) from one whose outcome is
//! unknown (sent, then no complete answer).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[path = "../master_common/mod.rs"]
mod master_common;

pub use master_common::HttpResponse;

/// How long a connection attempt may take: a partitioned member never answers.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub enum CallError {
    /// The connection failed: nothing was sent.
    NotSent(std::io::Error),
    /// Sent, but no complete answer (timeout, reset, garbage): may have taken effect.
    Unknown(std::io::Error),
}

/// One request on its own connection; `json` is sent as `application/json`.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, CallError> {
    let body = json.unwrap_or("");
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if json.is_none() {
        raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
    }
    let mut stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(CallError::NotSent)?;
    let exchange = |stream: &mut TcpStream| -> std::io::Result<HttpResponse> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(raw.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        master_common::parse_response(&response)
    };
    exchange(&mut stream).map_err(CallError::Unknown)
}
