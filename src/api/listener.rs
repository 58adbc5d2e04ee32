//! The API's listener. Connections beyond [`MAX_CONNECTIONS`] are still answered, one
//! request each, then closed (`Connection: close`), so idle or greedy clients cannot keep
//! more descriptors than the API's share of [`crate::limits::RESERVED`], and a probe is
//! never left waiting behind them. An accept that fails because the process ran out of
//! descriptors is logged once per outage, with the numbers, instead of being retried in
//! silence.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most connections the API keeps open between requests.
pub const MAX_CONNECTIONS: usize = 256;

/// How long accept waits after failing for want of a resource, before trying again.
const RETRY_AFTER_EXHAUSTION: Duration = Duration::from_millis(100);

pub(crate) struct BoundedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    /// Set while accepts fail for want of descriptors, so the outage is logged once.
    exhausted: bool,
}

impl BoundedListener {
    pub(crate) fn new(inner: TcpListener, max_connections: usize) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max_connections)),
            exhausted: false,
        }
    }
}

/// An accepted connection, holding one of the listener's slots until it closes if one was
/// free.
pub(crate) struct Connection {
    stream: TcpStream,
    slot: Option<OwnedSemaphorePermit>,
}

/// Whether a connection may stay open after its request: the router's connect info.
#[derive(Clone, Copy)]
pub(crate) struct KeepAlive(bool);

impl axum::extract::connect_info::Connected<IncomingStream<'_, BoundedListener>> for KeepAlive {
    fn connect_info(stream: IncomingStream<'_, BoundedListener>) -> Self {
        KeepAlive(stream.io().slot.is_some())
    }
}

/// Middleware: a connection without a slot is closed after its response.
pub(crate) async fn close_unslotted(
    ConnectInfo(KeepAlive(keep)): ConnectInfo<KeepAlive>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if !keep {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

impl axum::serve::Listener for BoundedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if std::mem::take(&mut self.exhausted) {
                        tracing::info!("HTTP API accepting connections again");
                    }
                    let slot = self.slots.clone().try_acquire_owned().ok();
                    return (Connection { stream, slot }, addr);
                }
                // The client gave up before we took it: nothing to report.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    if !self.exhausted {
                        self.exhausted = crate::limits::is_exhaustion(&e);
                        tracing::error!(
                            error = %e,
                            open_files = open_descriptors(),
                            limit = crate::limits::open_files().ok().map(|f| f.soft),
                            "HTTP API cannot accept connections; retrying every {RETRY_AFTER_EXHAUSTION:?}"
                        );
                    }
                    tokio::time::sleep(RETRY_AFTER_EXHAUSTION).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Descriptors the process has open (Linux), for the exhaustion log line.
fn open_descriptors() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::future::IntoFuture;
    use std::io::{Read, Write};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_cap_get_one_answer_and_are_closed() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(close_unslotted))
            .into_make_service_with_connect_info::<KeepAlive>();
        tokio::spawn(axum::serve(BoundedListener::new(inner, 1), router).into_future());
        tokio::task::spawn_blocking(move || {
            let ask = |stream: &mut std::net::TcpStream| {
                stream
                    .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    .unwrap();
                let mut reply = [0u8; 512];
                let n = stream.read(&mut reply).unwrap();
                String::from_utf8_lossy(&reply[..n]).to_lowercase()
            };
            // The first connection takes the only slot and stays open.
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            let reply = ask(&mut first);
            assert!(
                reply.starts_with("http/1.1 200") && !reply.contains("connection: close"),
                "{reply}"
            );
            // The second is answered at once, then closed.
            let mut second = std::net::TcpStream::connect(addr).unwrap();
            let reply = ask(&mut second);
            assert!(
                reply.starts_with("http/1.1 200") && reply.contains("connection: close"),
                "{reply}"
            );
            let mut rest = Vec::new();
            second.read_to_end(&mut rest).unwrap();
            assert!(ask(&mut first).starts_with("http/1.1 200"));
            // The slot is freed when its connection closes.
            drop(first);
            std::thread::sleep(Duration::from_millis(100));
            let mut third = std::net::TcpStream::connect(addr).unwrap();
            assert!(!ask(&mut third).contains("connection: close"));
        })
        .await
        .unwrap();
    }
}
