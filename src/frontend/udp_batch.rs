//! Linux socket workers that move UDP packets in batches: one `recvmmsg`
//! takes up to [`BATCH`] requests and one `sendmmsg` sends their replies, so
//! the system-call cost is shared across the batch.
//!
//! Each request's tracker-service future is polled once in place: open mode
//! and cached tokens answer at once. A future still waiting (a JWKS refetch for
//! an unknown kid) moves to the tokio runtime and replies on its own, so the
//! gateway layer stays exactly as the HTTP frontend uses it.

use std::future::Future;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use socket2::SockAddr;
use tokio::sync::watch;
use tower::ServiceExt;

use super::udp::{Step, UdpFrontend};

/// Packets taken per `recvmmsg`.
pub const BATCH: usize = 32;
const BUFFER: usize = 2048;

/// Buffers for one batch, allocated once per worker and reused.
struct Batch {
    packets: Vec<[u8; BUFFER]>,
    sources: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    replies: Vec<Vec<u8>>,
    destinations: Vec<SockAddr>,
}

impl Batch {
    fn new() -> Self {
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all-zero is valid.
        let zero_storage: libc::sockaddr_storage = unsafe { zeroed() };
        let zero_header: libc::mmsghdr = unsafe { zeroed() };
        Self {
            packets: vec![[0u8; BUFFER]; BATCH],
            sources: vec![zero_storage; BATCH],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            headers: vec![zero_header; BATCH],
            replies: (0..BATCH).map(|_| Vec::with_capacity(1500)).collect(),
            destinations: Vec::with_capacity(BATCH),
        }
    }

    /// Blocks until at least one packet arrives (or the socket's read timeout); returns how many.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.packets[i].as_mut_ptr().cast(),
                iov_len: BUFFER,
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.sources[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that outlive the call,
        // with lengths that match them.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(received as usize)
    }

    /// Sends `count` replies (in `replies[..count]` to `destinations[..count]`).
    fn send(&mut self, socket: &UdpSocket, count: usize) {
        for i in 0..count {
            self.iovecs[i] = libc::iovec {
                iov_base: self.replies[i].as_mut_ptr().cast(),
                iov_len: self.replies[i].len(),
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = self.destinations[i].as_ptr() as *mut libc::c_void;
            header.msg_namelen = self.destinations[i].len();
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers `sent..count` point at replies and addresses owned by `self`.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            if result <= 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A reply the kernel refuses (e.g. an unreachable destination) is dropped, as UDP may.
                tracing::debug!(%error, "UDP batch send failed; skipping one reply");
                sent += 1;
                continue;
            }
            sent += result as usize;
        }
    }
}

/// The socket address the kernel wrote into `storage`, if IPv4 or IPv6.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough for.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it is large enough for.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Whether the server is stopping: it said so, or it is gone (a start that
/// failed half-way drops the sender, and its workers must not live on).
fn stopping(stopped: &watch::Receiver<bool>) -> bool {
    stopped.has_changed().is_err() || *stopped.borrow()
}

/// Starts a worker thread serving `socket` until `stopped` turns true (checked
/// at least every 100 ms while idle). `runtime` runs the rare requests that
/// must wait. A panic is logged and the worker serves on, so a bug cannot
/// silently take capacity away.
pub fn spawn_worker(
    name: String,
    frontend: UdpFrontend,
    socket: Arc<UdpSocket>,
    runtime: tokio::runtime::Handle,
    stopped: watch::Receiver<bool>,
) -> io::Result<std::thread::JoinHandle<()>> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    std::thread::Builder::new().name(name).spawn(move || {
        // Futures polled here may register with the runtime's reactor (a JWKS fetch).
        let _runtime = runtime.enter();
        while !stopping(&stopped) {
            let run = || serve(&frontend, &socket, &runtime, &stopped);
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                tracing::error!("UDP worker panicked; restarting it");
            }
        }
    })
}

fn serve(
    frontend: &UdpFrontend,
    socket: &Arc<UdpSocket>,
    runtime: &tokio::runtime::Handle,
    stopped: &watch::Receiver<bool>,
) {
    let mut context = Context::from_waker(Waker::noop());
    serve_batches(
        socket,
        || stopping(stopped),
        |packet, from, out| match frontend.begin(packet, from, out) {
            Step::Done => {}
            Step::Call(request, pending) => {
                let mut answer = frontend.service.clone().oneshot(request);
                match Pin::new(&mut answer).poll(&mut context) {
                    Poll::Ready(result) => frontend.finish(pending, result, out),
                    Poll::Pending => {
                        let frontend = frontend.clone();
                        let socket = socket.clone();
                        runtime.spawn(async move {
                            let from = pending.from;
                            let result = answer.await;
                            let mut out = Vec::new();
                            frontend.finish(pending, result, &mut out);
                            if !out.is_empty()
                                && let Err(error) = socket.send_to(&out, from)
                            {
                                tracing::debug!(%error, %from, "UDP send failed");
                            }
                        });
                    }
                }
            }
        },
    );
}

/// Serves `socket` in batches until `stop()` says so (checked after every
/// batch, and while idle once per the socket's read timeout, which the caller
/// sets): `handle` writes the
/// reply to each packet into its buffer, or leaves it empty for none. The
/// tracker's workers and the load generator's no-work responder share this
/// loop, so the responder measures exactly the system-call floor under them.
pub fn serve_batches(
    socket: &UdpSocket,
    stop: impl Fn() -> bool,
    mut handle: impl FnMut(&[u8], SocketAddr, &mut Vec<u8>),
) {
    let mut batch = Batch::new();
    while !stop() {
        let received = match batch.receive(socket) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(%error, "UDP batch receive failed");
                continue;
            }
        };
        let mut replies = 0;
        batch.destinations.clear();
        for i in 0..received {
            let Some(from) = socket_addr(&batch.sources[i]) else {
                continue;
            };
            let len = (batch.headers[i].msg_len as usize).min(BUFFER);
            let out = &mut batch.replies[replies];
            out.clear();
            handle(&batch.packets[i][..len], from, out);
            if !out.is_empty() {
                batch.destinations.push(SockAddr::from(from));
                replies += 1;
            }
        }
        batch.send(socket, replies);
    }
}
