//! The HTTP connection loop. `axum::serve` keeps a connection for as long
//! as the client holds it: a client that opens a connection and sends
//! nothing, or half a request head, or goes away without a FIN, holds a
//! socket and a task for good. This loop serves HTTP/1.1 with hyper and
//! closes such connections:
//!
//! - **header timeout**: once a client has sent the first byte of a request,
//!   its whole head must arrive within `header`; then the connection is
//!   dropped.
//! - **idle timeout**: a connection with no request in flight and no byte
//!   read or written for `idle` is closed (gracefully: a request that
//!   arrives meanwhile is still answered).
//!
//! Why not hyper's own `header_read_timeout`: in hyper 1.12 its timer starts
//! whenever the connection waits for a request head, which includes an
//! idle kept-alive connection between requests (`proto/h1/conn.rs`,
//! `poll_read_head`), so it would close idle connections after the header
//! timeout and the two limits could not differ. It is switched off and both
//! limits are kept here, from what the connection's socket sees.
//!
//! On shutdown the listener is closed at once, every connection finishes
//! the request it is serving and closes, and the loop returns when all have,
//! or after `drain` with the rest closed.

use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service as _;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a request head may take from its first byte.
    pub header: Duration,
    /// How long a connection may sit with nothing in flight.
    pub idle: Duration,
    /// At shutdown, how long the requests in flight may take to finish.
    pub drain: Duration,
}

impl Limits {
    pub fn from_settings(api: &vsfleet_contract::settings::ApiSettings) -> Self {
        Self {
            header: Duration::from_secs(api.http_header_timeout_secs),
            idle: Duration::from_secs(api.http_idle_timeout_secs),
            drain: Duration::from_secs(api.drain_timeout_secs),
        }
    }

    /// How often a connection looks at its clock: a quarter of the shorter
    /// limit, so a limit is enforced within a quarter of itself.
    fn tick(&self) -> Duration {
        (self.header.min(self.idle) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        // Reap what has finished so the set holds live connections only.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, router.clone(), limits, shutdown.clone()));
            }
            // Out of file descriptors, a connection reset before accept:
            // wait a moment rather than spin, and go on.
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        // Cut as a crash would cut them: a request not answered yet was
        // either committed (its job is published by the outbox) or not.
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight after api.drain_timeout_secs; closing their connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// What one connection has been doing, as its socket and service see it.
struct Clock {
    state: Mutex<ClockState>,
}

struct ClockState {
    /// Requests handed to the router and not yet answered.
    in_flight: u32,
    /// When the first byte of a request head arrived, while it is still
    /// coming in (no request in flight).
    head_since: Option<Instant>,
    /// The last byte read or written, or the last answer.
    last: Instant,
}

impl Clock {
    fn new() -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(ClockState { in_flight: 0, head_since: None, last: Instant::now() }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().expect("not poisoned")
    }

    fn read(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        state.last = now;
        if state.in_flight == 0 && state.head_since.is_none() {
            state.head_since = Some(now);
        }
    }

    fn wrote(&self) {
        self.lock().last = Instant::now();
    }

    /// A request's head is complete and handed to the router.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.head_since = None;
        InFlight(self.clone())
    }

    fn verdict(&self, limits: &Limits) -> Verdict {
        let state = self.lock();
        if state.in_flight > 0 {
            Verdict::Fine
        } else if state.head_since.is_some_and(|since| since.elapsed() >= limits.header) {
            Verdict::SlowHead
        } else if state.head_since.is_none() && state.last.elapsed() >= limits.idle {
            Verdict::Idle
        } else {
            Verdict::Fine
        }
    }
}

enum Verdict {
    Fine,
    SlowHead,
    Idle,
}

/// Held while the router answers one request.
struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight -= 1;
        state.last = Instant::now();
    }
}

async fn connection(stream: TcpStream, router: Router, limits: Limits, shutdown: CancellationToken) {
    let clock = Clock::new();
    let io = TokioIo::new(Watched { inner: stream, clock: clock.clone() });
    let service = hyper::service::service_fn({
        let clock = clock.clone();
        move |request: Request<Incoming>| {
            let in_flight = clock.begin();
            let answer = router.clone().call(request);
            async move {
                let response = answer.await;
                drop(in_flight);
                response
            }
        }
    });
    let mut builder = http1::Builder::new();
    // Off: see the module's notes. The timer is there for hyper's other timeouts.
    builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut tick = tokio::time::interval(limits.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set once the connection was asked to close: it may take until then
    // to finish what it is writing, then it is dropped.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = format!("{error:#}"), "http connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + limits.idle.max(Duration::from_secs(30)));
            }
            _ = tick.tick() => {
                if closing.is_some_and(|until| tokio::time::Instant::now() >= until) {
                    tracing::debug!("http connection did not finish closing in time; dropped");
                    return;
                }
                match clock.verdict(&limits) {
                    Verdict::Fine => {}
                    Verdict::SlowHead => {
                        tracing::debug!("request head not received within the header timeout; connection dropped");
                        return;
                    }
                    Verdict::Idle if closing.is_none() => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now() + limits.header);
                    }
                    Verdict::Idle => {}
                }
            }
        }
    }
}

/// The socket, telling `clock` when bytes pass.
struct Watched {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
