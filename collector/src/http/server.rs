//! The HTTP/1.1 server loop: hyper under the axum router, with the limits that keep the dashboard from
//! starving the rest of the collector (file descriptors above all, which the MQTT gate needs too).
//!
//! - At most [`Limits::max_connections`] connections are served at once; one more is answered `503` and
//!   closed at once, without waiting, so a flood costs one descriptor per attacker connection for a moment.
//! - A client has [`Limits::header_timeout`] to send a request's headers, counted from the connection's
//!   start or the end of the previous response (hyper's header read timeout), so a half-sent header or an
//!   idle keep-alive connection is closed after that long.
//! - A handler, body reading included, has [`Limits::request_timeout`] ([`super::guard::deadline`]); a
//!   response the client leaves unread for that long is dropped with its connection.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

/// Timeouts and the connection cap (`[http] header_timeout`, `request_timeout`, `max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), request_timeout: Duration::from_secs(60), max_connections: 256 }
    }
}

/// What a connection over the cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 70\r\nConnection: close\r\nRetry-After: 5\r\n\r\ntoo many connections to the dashboard ([http] max_connections); retry\n";

/// Serves `router` on `bind` with the default [`Limits`]; returns the bound address once listening.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(bind: &str, router: Router) -> io::Result<SocketAddr> {
    serve_with(bind, router, Limits::default()).await
}

/// Serves `router` on `bind` until the process ends; returns the bound address once listening.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_with(bind: &str, router: Router, limits: Limits) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(accept(listener, router, limits));
    Ok(addr)
}

async fn accept(listener: TcpListener, router: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (mut refused, mut failed): (u64, u64) = (0, 0);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: wait a little, never spin, and
                // log at 1, 2, 4, 8, ... failures so that a long shortage does not flood the log.
                failed += 1;
                if failed.is_power_of_two() {
                    tracing::warn!(error = %e, failed, "HTTP accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "HTTP connection refused: too many connections"
                );
            }
            let _ = stream.try_write(BUSY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let io = TokioIo::new(WriteDeadline::new(stream, limits.request_timeout));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(io, service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// A TCP stream whose writes fail once one has waited `limit` for the client to read.
struct WriteDeadline {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(inner: TcpStream, limit: Duration) -> Self {
        Self { inner, limit, stalled: None }
    }

    /// Pending writes start (or keep) the clock; it fails them once `limit` has passed.
    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client did not read the response")));
        }
        Poll::Pending
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
