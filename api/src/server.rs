//! The HTTP/1.1 server: hyper's connection handling with the limits a
//! reverse proxy would put in front of it, because nothing may be in front.
//!
//! - A request's head (request line and header fields) must arrive within
//!   `header_read_timeout` of its first byte, or of the connection's start
//!   for the first request; a socket that sends half a head and stalls, or a
//!   header line every few seconds, is closed (nothing is answered).
//! - Between requests a connection may sit idle for `keep_alive_timeout`.
//! - One peer address holds at most `max_connections_per_peer` connections;
//!   past that a connection is answered 429 `too-many-connections` and closed.
//! - hyper answers requests it cannot parse (400, 414, 431) itself, before
//!   any service runs, with an empty body. [`Conn`] turns those answers into
//!   problem+json on their way out, so every answer the server writes has
//!   the shape of every other.
//!
//! hyper offers a header read timeout, but it runs from the moment the
//! connection waits for a head, so on a kept-alive connection it also cuts
//! idle time short: [`HeadTimer`] starts it at the head's first byte instead,
//! through the timer hyper takes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::error::{ApiError, PROBLEM_JSON};

/// Limits on connections and request heads.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From a head's first byte (a connection's start, for its first
    /// request) until the head is complete (`AGORA_HEADER_READ_TIMEOUT_MS`).
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request
    /// (`AGORA_KEEP_ALIVE_TIMEOUT_MS`).
    pub keep_alive_timeout: Duration,
    /// Open connections per peer address; 0 is no limit
    /// (`AGORA_MAX_CONNECTIONS_PER_PEER`).
    pub max_connections_per_peer: usize,
    /// The request target (path and query), in bytes (`AGORA_MAX_URI_BYTES`): 414 past it.
    pub max_uri_bytes: usize,
    /// All header fields together, in bytes (`AGORA_MAX_HEADER_BYTES`): 431 past it.
    pub max_header_bytes: usize,
    /// Header fields, in number (`AGORA_MAX_HEADERS`): 431 past it.
    pub max_headers: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections_per_peer: 256,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

impl ConnectionLimits {
    /// The largest head hyper reads before answering 431 itself: room for
    /// the longest target and header block the edge then checks itself, so
    /// that those get their precise answers (414, 431) from the edge.
    fn max_head_bytes(&self) -> usize {
        self.max_uri_bytes + self.max_header_bytes + 1024
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops taking
/// connections and lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let peers = Peers::default();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, say: wait rather than spin. A
                    // connection reset before it was accepted is nothing.
                    if !is_connection_error(&err) {
                        tracing::warn!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match peers.admit(peer.ip(), limits.max_connections_per_peer) {
            Some(slot) => {
                let app = app.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    // The peer address names anonymous clients for rate limits.
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req)
                });
                let open = (slot, metrics::OpenConnection::start());
                spawn(&graceful, stream, &limits, true, service, open);
            }
            None => {
                metrics::refused();
                let limit = limits.max_connections_per_peer;
                let service = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(ApiError::too_many_connections(limit).into_response())
                });
                spawn(&graceful, stream, &limits, false, service, ());
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves one connection with `service` in a task of its own, holding
/// `guard` until it ends.
fn spawn<S>(
    graceful: &GracefulShutdown,
    stream: TcpStream,
    limits: &ConnectionLimits,
    keep_alive: bool,
    service: S,
    guard: impl Send + 'static,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Conn::new(stream, Arc::clone(&activity)));
    let mut builder = http1::Builder::new();
    builder
        .timer(HeadTimer {
            activity,
            header: limits.header_read_timeout,
            keep_alive: limits.keep_alive_timeout,
        })
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(keep_alive)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_head_bytes());
    let connection = graceful.watch(builder.serve_connection(io, service));
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    });
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Open connections per peer address.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its peer, until dropped.
struct PeerSlot {
    peers: Peers,
    ip: IpAddr,
}

impl Peers {
    fn admit(&self, ip: IpAddr, limit: usize) -> Option<PeerSlot> {
        // A std mutex: held for one map update, never across an await.
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(ip).or_insert(0);
        if limit > 0 && *count >= limit {
            if *count == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .peers
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection has done, shared by its IO and its timer.
#[derive(Default)]
struct Activity {
    /// Bytes read from the peer so far.
    read: AtomicU64,
    /// Heads waited for so far.
    heads: AtomicU64,
}

/// hyper's timer, which it uses on an HTTP/1 server connection only for the
/// header read timeout: each `sleep_until` is the wait for one head.
struct HeadTimer {
    activity: Arc<Activity>,
    header: Duration,
    keep_alive: Duration,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(TokioSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        let first = self.activity.heads.fetch_add(1, Ordering::Relaxed) == 0;
        let read_before = self.activity.read.load(Ordering::Relaxed);
        // The first request is what the connection was opened for: its head
        // is due from the start. Later ones may keep the peer waiting idle.
        let wait = if first { self.header } else { self.keep_alive };
        Box::pin(HeadSleep {
            activity: Arc::clone(&self.activity),
            read_before,
            header: self.header,
            head_started: first,
            sleep: Box::pin(tokio::time::sleep(wait)),
        })
    }
}

struct TokioSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for TokioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Sleep for TokioSleep {}

/// The wait for one head: the keep-alive timeout until its first byte
/// arrives, then the header read timeout from that byte on. hyper polls it
/// whenever bytes arrived that do not complete the head, so the switch
/// happens as the first byte is read.
struct HeadSleep {
    activity: Arc<Activity>,
    read_before: u64,
    header: Duration,
    head_started: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.head_started && self.activity.read.load(Ordering::Relaxed) > self.read_before {
            self.head_started = true;
            let due = tokio::time::Instant::now() + self.header;
            self.sleep.as_mut().reset(due);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for HeadSleep {}

/// A client's TCP stream, counting what is read and rewriting hyper's own
/// answers to unparsable requests into problem+json.
struct Conn {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// A rewritten answer being written: its bytes, how many are out, and
    /// the length of hyper's original, which is reported written at the end.
    rewriting: Option<(Vec<u8>, usize, usize)>,
}

impl Conn {
    fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self {
            stream,
            activity,
            rewriting: None,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewriting.is_none() {
            if let Some(answer) = problem_for_parse_error(buf) {
                metrics::unparsed(answer.0);
                self.rewriting = Some((answer.1, 0, buf.len()));
            }
        }
        let this = &mut *self;
        if let Some((answer, written, original)) = &mut this.rewriting {
            while *written < answer.len() {
                let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            let original = *original;
            this.rewriting = None;
            return Poll::Ready(Ok(original));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    // Not vectored, so that hyper hands over each answer's head in one
    // buffer, where a parse error's answer can be recognised. Our answers
    // are small: hyper copies their bodies into that buffer either way.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// hyper's answer to a request it could not parse is exactly a status line
/// (400, 414 or 431), `content-length: 0`, maybe `connection: close`, a
/// `date`, and nothing else: every answer of ours carries a content type.
/// Recognised, it becomes the same status as problem+json.
fn problem_for_parse_error(buf: &[u8]) -> Option<(StatusCode, Vec<u8>)> {
    const STATUSES: [&[u8]; 3] = [b"400 ", b"414 ", b"431 "];
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    if !STATUSES.iter().any(|s| rest.starts_with(s)) {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.get(9..12)?.parse().ok()?;
    let mut date = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value == "0" => {}
            "connection" => {}
            "date" => date = Some(value),
            _ => return None,
        }
    }
    let status = StatusCode::from_u16(status).ok()?;
    let detail = match status {
        StatusCode::URI_TOO_LONG => "the request target is too long to read",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request's header fields are too large or too many to read"
        }
        _ => "the request is not valid HTTP/1.1",
    };
    let body = ApiError::from_status(status, detail).problem_json();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\n{}: {PROBLEM_JSON}\r\n{}: {}\r\n{}: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        body.len(),
        header::CONNECTION,
    );
    if let Some(date) = date.and_then(|d| HeaderValue::from_str(d).ok()) {
        if let Ok(date) = date.to_str() {
            answer.push_str(&format!("{}: {date}\r\n", header::DATE));
        }
    }
    answer.push_str("\r\n");
    let mut bytes = answer.into_bytes();
    bytes.extend_from_slice(&body);
    Some((status, bytes))
}

/// The server's own series, beside the HTTP metrics of `crate::metrics`.
mod metrics {
    use axum::http::StatusCode;

    /// Counts one open connection while it lives.
    pub(super) struct OpenConnection;

    impl OpenConnection {
        pub(super) fn start() -> Self {
            metrics::gauge!("agora_http_connections_open").increment(1.0);
            Self
        }
    }

    impl Drop for OpenConnection {
        fn drop(&mut self) {
            metrics::gauge!("agora_http_connections_open").decrement(1.0);
        }
    }

    pub(super) fn refused() {
        metrics::counter!("agora_http_connections_refused_total").increment(1);
    }

    pub(super) fn unparsed(status: StatusCode) {
        let status = match status {
            StatusCode::URI_TOO_LONG => "414",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "431",
            _ => "400",
        };
        metrics::counter!("agora_http_unparsed_requests_total", "status" => status).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_parse_error_answers_become_problems_and_ours_pass() {
        let canned = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n";
        let (status, answer) = problem_for_parse_error(canned).expect("rewritten");
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(
            head.contains("date: Tue, 01 Dec 2026 10:00:00 GMT"),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["type"], "/problems/header-fields-too-large");
        assert_eq!(problem["status"], 431);

        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-request-id: 1\r\n\r\n",
            b"{\"type\": \"HTTP/1.1 400 \"}",
        ] {
            assert!(problem_for_parse_error(ours).is_none(), "{ours:?}");
        }
    }

    #[test]
    fn a_peer_holds_at_most_its_limit_and_a_slot_frees_on_drop() {
        let peers = Peers::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let first = peers.admit(ip, 2).expect("first");
        let _second = peers.admit(ip, 2).expect("second");
        assert!(peers.admit(ip, 2).is_none());
        assert!(peers.admit([127, 0, 0, 2].into(), 2).is_some());
        drop(first);
        assert!(peers.admit(ip, 2).is_some());
        assert!(peers.admit(ip, 0).is_some(), "0 is no limit");
    }
}
