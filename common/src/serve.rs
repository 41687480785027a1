//! The accept side of every gRPC server: TCP connections, optionally wrapped
//! in TLS, handed to tonic through `serve_with_incoming_shutdown`.
//!
//! Limits enforced here, before tonic sees a connection:
//! - at most `max_connections` open connections; more are closed at once;
//! - TCP keep-alive and no Nagle delay on every socket;
//! - TLS handshakes run in their own tasks with a timeout, so a client that
//!   stalls or fails its handshake never holds up the accept loop;
//! - a connection with no request in flight for `idle_timeout` is closed
//!   (this includes one that never sends anything: slowloris).

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use rustls::pki_types::CertificateDer;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::{Layer, Service};

use crate::{limits::ServerLimits, shutdown::Shutdown, tls::ServerTls};

/// Requests in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    active: AtomicUsize,
    /// Milliseconds after `born` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    born: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(self.clone())
    }

    fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst))
    }
}

/// Ends one request's activity when dropped (after its response body ended).
#[derive(Debug)]
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = activity.born.elapsed().as_millis() as u64;
        activity.idle_since_ms.store(since, Ordering::SeqCst);
        activity.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request learns about its connection (a request extension).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Local address.
    pub local_addr: Option<SocketAddr>,
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, when it presented one (mTLS).
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    activity: Arc<Activity>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection, plaintext or TLS.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    idle_timeout: Option<Duration>,
    idle_timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("remote_addr", &self.info.remote_addr)
            .finish()
    }
}

impl Conn {
    fn new(io: Io, permit: OwnedSemaphorePermit, idle_timeout: Option<Duration>) -> Self {
        let (tcp, peer_certs) = match &io {
            Io::Plain(tcp) => (tcp, None),
            Io::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                (tcp, session.peer_certificates().map(|c| Arc::new(c.to_vec())))
            }
        };
        let info = ConnInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
            peer_certs,
            activity: Arc::new(Activity::new()),
        };
        let first = Instant::now() + idle_timeout.unwrap_or(Duration::from_secs(3600));
        Self {
            io,
            info,
            idle_timeout,
            idle_timer: Box::pin(tokio::time::sleep_until(first)),
            _permit: permit,
        }
    }

    /// True once the connection has had no request in flight for the idle
    /// timeout; re-arms the timer otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        if self.idle_timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let activity = &self.info.activity;
        let next = if activity.active.load(Ordering::SeqCst) == 0 {
            let deadline = activity.idle_since() + timeout;
            if Instant::now() >= deadline {
                return true;
            }
            deadline
        } else {
            Instant::now() + timeout
        };
        self.idle_timer.as_mut().reset(next);
        // Registers the waker for the new deadline.
        let _ = self.idle_timer.as_mut().poll(cx);
        false
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let expired = self.idle_expired(cx);
        let filled = buf.filled().len();
        let read = match &mut self.io {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        };
        if !expired {
            return read;
        }
        match read {
            // Bytes were already on their way (a request racing the timeout):
            // count them as activity and serve them.
            Poll::Ready(Ok(())) if buf.filled().len() > filled => {
                let activity = &self.info.activity;
                let now = activity.born.elapsed().as_millis() as u64;
                activity.idle_since_ms.store(now, Ordering::SeqCst);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                tracing::debug!(remote = ?self.info.remote_addr, "closing idle connection");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }
}

/// Connections refused or dropped before tonic saw them, by reason (for the
/// `server.connections.refused` counter).
fn count_refused(reason: &'static str) {
    let counter = opentelemetry::global::meter("postmesh")
        .u64_counter("server.connections.refused")
        .with_description("Connections closed before serving: over the connection cap, or a failed TLS handshake")
        .build();
    counter.add(1, &[opentelemetry::KeyValue::new("reason", reason)]);
}

fn tune(stream: &TcpStream, keepalive: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    if let Some(time) = keepalive {
        let sock = socket2::SockRef::from(stream);
        let _ = sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(time));
    }
}

/// Accepts on `listener` until the returned stream is dropped (tonic drops it
/// when shutdown begins, which closes the listening socket at once).
pub fn incoming(
    listener: TcpListener,
    limits: &ServerLimits,
    tls: Option<ServerTls>,
) -> ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let keepalive = limits.tcp_keepalive();
    let idle = limits.idle_timeout();
    tokio::spawn(async move {
        let mut last_cap_warning: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                count_refused("max_connections");
                if last_cap_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(%remote, "connection cap reached (MAX_CONNECTIONS); closing new connections");
                    last_cap_warning = Some(Instant::now());
                }
                drop(stream);
                continue;
            };
            tune(&stream, keepalive);
            match &tls {
                None => {
                    if tx.send(Ok(Conn::new(Io::Plain(stream), permit, idle))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let limit = tls.handshake_timeout();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::new(Io::Tls(Box::new(stream)), permit, idle))).await;
                            }
                            Ok(Err(error)) => {
                                count_refused("tls_handshake");
                                tracing::debug!(%remote, %error, "TLS handshake failed");
                            }
                            Err(_) => {
                                count_refused("tls_handshake_timeout");
                                tracing::debug!(%remote, ?limit, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Serves only `routes` (the health service) in plaintext on `listener`
/// until `shutdown`: the probe port for kubelets, which cannot speak TLS.
pub async fn serve_probe(listener: TcpListener, routes: tonic::service::Routes, mut shutdown: Shutdown) {
    let addr = listener.local_addr().ok();
    let result = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(5))
        .max_concurrent_streams(16)
        .add_routes(routes)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
            shutdown.wait().await
        })
        .await;
    if let Err(error) = result {
        tracing::warn!(?addr, %error, "health probe listener failed");
    }
}

/// Tracks requests per connection (for the idle timeout) and exposes the
/// connection's addresses the way tonic's `Request::remote_addr` expects.
#[derive(Clone, Debug, Default)]
pub struct ConnTrackLayer;

impl<S> Layer<S> for ConnTrackLayer {
    type Service = ConnTrack<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnTrack { inner }
    }
}

/// Service produced by [`ConnTrackLayer`].
#[derive(Clone, Debug)]
pub struct ConnTrack<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ConnTrack<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let guard = match request.extensions().get::<ConnInfo>().cloned() {
            Some(info) => {
                request.extensions_mut().insert(TcpConnectInfo {
                    local_addr: info.local_addr,
                    remote_addr: info.remote_addr,
                });
                Some(info.activity.begin())
            }
            None => None,
        };
        TrackedFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

pin_project! {
    /// Response future of [`ConnTrack`].
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<ActivityGuard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(result.map(|response| {
            response.map(|body| TrackedBody {
                inner: body,
                _guard: guard,
            })
        }))
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until
    /// it has been sent (or dropped): a WatchPosts stream is activity.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<ActivityGuard>,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
