//! The HTTP listener: accepts connections for the router in [`super::http`]
//! and keeps hostile or forgotten ones from holding the process.
//!
//! - **Connection cap**: at most `http.max_connections` open at once; one
//!   accepted past it is closed at once and counted
//!   (`swarmgate_limit_hits_total{limit="http_connections"}`), so file
//!   descriptors stay bounded and the kernel's backlog does not fill with
//!   connections nobody will serve.
//! - **Header timeout**: a request's headers must arrive within
//!   `http.header_read_timeout` of its first byte (of the accept, for the
//!   first request), which cuts off clients that trickle header bytes.
//! - **Idle timeout**: a keep-alive connection waits `http.idle_timeout` for
//!   its next request, then closes; a client that stops reading its response
//!   is cut off once no write sent a byte for that long. A long response
//!   read as it comes (a web seed's layer over a slow link) is never cut:
//!   the deadline counts from the last write.
//!
//! The timeouts follow Go's `ReadHeaderTimeout`/`IdleTimeout` split: hyper's
//! own header timer starts when the connection goes idle, which would make
//! the two one setting. Here each connection's phase is watched: the service
//! marks when a request's headers are complete (busy: no deadline) and when
//! its response is ready (idle), the socket wrapper marks the next request's
//! first byte (reading), and a deadline per phase drops the connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::http::HttpSettings;

/// The per-connection deadlines, from `[http]` (read at each accept, so a
/// reload applies to new connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From a request's first byte to its last header byte.
    pub header_read: Duration,
    /// From a response to the next request's first byte.
    pub idle: Duration,
}

/// Where a connection is: reading a request, answering it, or waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// From the accept, or the next request's first byte, to its last header byte.
    Reading,
    /// Headers complete; the router is answering.
    Busy,
    /// The response is ready; waiting for the next request.
    Idle,
}

/// A socket that tells the connection's phase when the next request's
/// first byte arrives, and counts the writes that made progress.
struct PhaseIo {
    stream: TcpStream,
    phase: Arc<watch::Sender<Phase>>,
    /// When a write last sent bytes: the idle deadline counts from it.
    written: Arc<LastWrite>,
}

/// When a connection's last write sent bytes, as nanoseconds since it was
/// accepted: a clock read and a relaxed store per write, and no wake-up
/// (the deadline reads it only when its timer fires).
struct LastWrite {
    accepted: std::time::Instant,
    nanos: AtomicU64,
}

impl LastWrite {
    fn new() -> Self {
        Self {
            accepted: std::time::Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let nanos = u64::try_from(self.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(nanos, Ordering::Relaxed);
    }

    fn at(&self) -> std::time::Instant {
        self.accepted + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

impl AsyncRead for PhaseIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before && *self.phase.borrow() == Phase::Idle {
            self.phase.send_replace(Phase::Reading);
        }
        polled
    }
}

impl AsyncWrite for PhaseIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(sent)) if sent > 0) {
            self.written.mark();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Resolves when the connection has stayed in one phase past that phase's
/// limit. A response is written in the idle phase, so the idle limit counts
/// from the last write that sent bytes: it cuts off a client that stops
/// reading a response, never one that reads a long one as it comes.
async fn deadline(
    mut phase: watch::Receiver<Phase>,
    timeouts: ConnectionTimeouts,
    written: Arc<LastWrite>,
) -> &'static str {
    loop {
        let current = *phase.borrow_and_update();
        let limit = match current {
            Phase::Busy => None,
            Phase::Reading => Some((timeouts.header_read, "header read")),
            Phase::Idle => Some((timeouts.idle, "idle")),
        };
        match limit {
            None => {
                if phase.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Some((limit, what)) => {
                let mut until = tokio::time::Instant::now() + limit;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {
                            let quiet_until = written.at() + limit;
                            if current != Phase::Idle || quiet_until <= std::time::Instant::now() {
                                return what;
                            }
                            until = quiet_until.into();
                        }
                        changed = phase.changed() => {
                            if changed.is_err() {
                                std::future::pending::<()>().await;
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Serves `router` on `listener` until `stopped`, then stops accepting and
/// lets open connections finish their current request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Arc<ArcSwap<HttpSettings>>,
    max_connections: usize,
    refused: metrics::Counter,
    stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let (closing, close) = watch::channel(false);
    let mut connections = JoinSet::new();
    let stopping = async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, most likely: back off
                        // instead of spinning on the error.
                        tracing::warn!(%error, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    refused.increment(1);
                    tracing::debug!(%remote, max_connections, "HTTP connection refused: at http.max_connections");
                    continue;
                };
                let timeouts = settings.load().timeouts;
                let (router, close) = (router.clone(), close.clone());
                connections.spawn(async move {
                    serve_connection(stream, remote, router, timeouts, close).await;
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stopping => break,
        }
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    timeouts: ConnectionTimeouts,
    close: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (phase, watched) = watch::channel(Phase::Reading);
    let phase = Arc::new(phase);
    let written = Arc::new(LastWrite::new());
    let io = PhaseIo {
        stream,
        phase: phase.clone(),
        written: written.clone(),
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        phase.send_replace(Phase::Busy);
        let (router, phase) = (router.clone(), phase.clone());
        async move {
            let response = router.oneshot(request).await;
            phase.send_replace(Phase::Idle);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Our own deadlines replace hyper's header timer (see the module comment).
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let closing = async move {
        let mut close = close;
        let _ = close.wait_for(|close| *close).await;
    };
    tokio::select! {
        result = connection.as_mut() => log_end(result, remote),
        what = deadline(watched, timeouts, written) => {
            // Dropping the connection closes the socket.
            tracing::debug!(%remote, "HTTP connection closed: {what} timeout");
        }
        () = closing => {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await, remote);
        }
    }
}

fn log_end(result: Result<(), hyper::Error>, remote: SocketAddr) {
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "HTTP connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CHUNK: usize = 64 * 1024;

    /// A listener on loopback whose `/stream` sends `chunks` chunks of 64 KiB,
    /// `gap` apart, with `idle` as the idle timeout; and its stop switch.
    async fn streaming(
        idle: Duration,
        chunks: usize,
        gap: Duration,
    ) -> (SocketAddr, watch::Sender<bool>) {
        let router = Router::new().route(
            "/stream",
            get(move || async move {
                let stream = futures_util::stream::unfold(0, move |sent| async move {
                    if sent == chunks {
                        return None;
                    }
                    if sent > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    Some((Ok::<_, io::Error>(Bytes::from(vec![b'x'; CHUNK])), sent + 1))
                });
                Body::from_stream(stream)
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut settings = HttpSettings::from_config(&crate::config::Config::default());
        settings.timeouts = ConnectionTimeouts {
            header_read: Duration::from_secs(5),
            idle,
        };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(
            listener,
            router,
            Arc::new(ArcSwap::from_pointee(settings)),
            16,
            metrics::Counter::noop(),
            stopped,
        ));
        (addr, stop)
    }

    /// Asks for `/stream` and returns the connection, its request sent.
    async fn ask(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        stream
    }

    /// Reads what is left until the server closes; bounded in time.
    async fn rest(stream: &mut TcpStream) -> usize {
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
            .await
            .expect("the server closes the connection")
            .map_or(bytes.len(), |_| bytes.len())
    }

    /// A response whose body takes longer than the idle timeout to stream,
    /// to a client that reads it as it comes, is sent whole: the idle
    /// deadline counts from the last progress, not from the response's
    /// headers (a web seed's big layer over a slow link).
    #[tokio::test]
    async fn a_long_response_read_as_it_comes_is_sent_whole() {
        let chunks = 12;
        let (addr, _stop) = streaming(
            Duration::from_millis(500),
            chunks,
            Duration::from_millis(100),
        )
        .await;
        let mut stream = ask(addr).await;
        let received = rest(&mut stream).await;
        assert!(received > chunks * CHUNK, "cut short: {received} bytes");
    }

    /// A client that stops reading a response is cut off: the idle deadline
    /// runs out while its writes make no progress.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off() {
        let chunks = 512;
        let (addr, _stop) = streaming(Duration::from_millis(200), chunks, Duration::ZERO).await;
        let mut stream = ask(addr).await;
        let mut first = vec![0; CHUNK];
        stream
            .read_exact(&mut first)
            .await
            .expect("the response starts");
        // The client stands still for 15 idle timeouts, then reads on.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let received = CHUNK + rest(&mut stream).await;
        assert!(received < chunks * CHUNK, "never cut: {received} bytes");
    }
}
