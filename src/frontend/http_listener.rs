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
//!   its next request, then closes; a client that does not read its response
//!   is cut off after the same time.
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
/// first byte arrives.
struct PhaseIo {
    stream: TcpStream,
    phase: Arc<watch::Sender<Phase>>,
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
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Resolves when the connection has stayed in one phase past that phase's
/// limit (a response that the client does not read keeps it idle, so the
/// idle limit covers that too).
async fn deadline(mut phase: watch::Receiver<Phase>, timeouts: ConnectionTimeouts) -> &'static str {
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
                tokio::select! {
                    () = tokio::time::sleep(limit) => return what,
                    changed = phase.changed() => {
                        if changed.is_err() {
                            std::future::pending::<()>().await;
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
    let io = PhaseIo {
        stream,
        phase: phase.clone(),
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
        what = deadline(watched, timeouts) => {
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
