//! The gateway's HTTP server, hardened for a public endpoint: a cap on open
//! connections, a time limit on reading a request's head (which also closes
//! idle keep-alive connections), on writing to a client that stops reading,
//! on reading a body, and on a whole request; and admission control that
//! refuses work past capacity at once instead of queueing it.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use ticketmesh_runtime::metrics;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

use crate::error::AppError;

/// The server's bounds, each a flag with its variable.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Time a client has to send a request's head; an idle keep-alive
    /// connection is closed after the same time.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = ticketmesh_runtime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    #[arg(long, env = "BODY_READ_TIMEOUT", default_value = "10s", value_parser = ticketmesh_runtime::parse_duration)]
    pub body_read_timeout: Duration,
    /// Time a write to a client may wait for it to read (a stalled reader,
    /// an SSE client that stopped reading); past it, the connection is closed.
    #[arg(long, env = "WRITE_TIMEOUT", default_value = "30s", value_parser = ticketmesh_runtime::parse_duration)]
    pub write_timeout: Duration,
    /// Deadline of a whole request on every route but GET /events: past it, 504.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = ticketmesh_runtime::parse_duration)]
    pub request_timeout: Duration,
    /// Connections open at once; past it, new ones are closed at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Webhooks (POST /webhook, POST /sns) in flight at once; past it, 503 at once.
    /// About 1.5× what keeps one gateway's path busy on two cores (about 30
    /// in flight reach its capacity): more only queues, and slows the refusals.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 48)]
    pub webhook_concurrency: usize,
    /// Reads (GET /api/…) in flight at once; past it, 503 at once.
    #[arg(long, env = "READ_CONCURRENCY", default_value_t = 32)]
    pub read_concurrency: usize,
    /// Clients of GET /events at once; past it, 503.
    #[arg(long, env = "MAX_SSE_CLIENTS", default_value_t = 100)]
    pub max_sse_clients: usize,
    /// Events buffered for one GET /events client; a client further behind is cut off.
    #[arg(long, env = "SSE_BUFFER", default_value_t = 256)]
    pub sse_buffer: usize,
    /// Bytes of payload buffered for one GET /events client, whatever the
    /// number of events; a client further behind is cut off.
    #[arg(long, env = "SSE_BUFFER_BYTES", default_value_t = 1024 * 1024)]
    pub sse_buffer_bytes: usize,
}

impl Default for Limits {
    /// The flags' defaults (or their variables, when set), for tests and embedders.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            limits: Limits,
        }
        <Only as clap::Parser>::parse_from(["limits"]).limits
    }
}

static CONNECTIONS: LazyLock<IntGauge> =
    LazyLock::new(|| metrics::gauge("http_connections_open", "HTTP connections open now"));
static REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    metrics::counter(
        "http_connections_refused_total",
        "HTTP connections closed at once: MAX_CONNECTIONS reached",
    )
});
static SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "http_requests_shed_total",
        "Requests refused with 503 because their route group was at its concurrency limit",
        &["group"],
    )
});
static TIMED_OUT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "http_timeouts_total",
        "Requests or connections ended by a server time limit, by which one (request, body_read, write)",
        &["limit"],
    )
});

/// Serves `router` on `listener` under `limits` until `shutdown`; then lets
/// the connections finish their requests, for at most the request deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of fds, or a connection reset before it was taken: pause, go on.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            REFUSED.inc();
            drop(tcp);
            continue;
        };
        // TCP_NODELAY: small responses go out at once.
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(WriteTimeout::new(tcp, limits.write_timeout));
        let connection = graceful.watch(builder.serve_connection(io, service.clone()).into_owned());
        tokio::spawn(async move {
            let _open = (permit, metrics::Held::new(&CONNECTIONS));
            if let Err(error) = connection.await {
                tracing::debug!(error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = limits.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "connections still open after the drain; closing them");
    }
    Ok(())
}

/// A socket whose writes fail with `TimedOut` once one has waited `limit`
/// for the peer to read: hyper then drops the connection. Without it, a
/// client that stops reading holds its connection (and its task, and an SSE
/// stream's subscription) for ever.
struct WriteTimeout<T> {
    inner: T,
    limit: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeout<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Self { inner, limit, waiting: None }
    }

    /// After the inner write answered: a pending write starts (or keeps) the
    /// clock, anything else stops it.
    fn timed<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.waiting = None;
            return polled;
        }
        let limit = self.limit;
        let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if waiting.as_mut().poll(cx).is_ready() {
            TIMED_OUT.with_label_values(&["write"]).inc();
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A route group's admission: at most `permits` requests in flight; the
/// next one is refused at once with 503 and `Retry-After: 1`, so past
/// capacity the excess costs almost nothing and what is admitted stays fast.
#[derive(Clone)]
pub struct Gate {
    group: &'static str,
    permits: Arc<Semaphore>,
}

impl Gate {
    pub fn new(group: &'static str, permits: usize) -> Self {
        Self { group, permits: Arc::new(Semaphore::new(permits.max(1))) }
    }

    /// A slot, or the 503 that refuses the request.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, AppError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            SHED.with_label_values(&[self.group]).inc();
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("too many {} in flight; retry in a second", self.group),
            )
            .retry_after(1)
        })
    }
}

/// Middleware: the request holds a slot of its gate while it runs.
pub async fn admit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    match gate.enter() {
        Ok(_slot) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Middleware: the whole request within `limit`, or 504.
/// Not tower-http's `TimeoutLayer`: its answer has an empty body, not the JSON error.
pub async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            TIMED_OUT.with_label_values(&["request"]).inc();
            AppError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                format!("the request took longer than {limit:?}"),
            )
            .into_response()
        }
    }
}

/// Counts a body whose client was too slow to send it.
pub fn body_timed_out() {
    TIMED_OUT.with_label_values(&["body_read"]).inc();
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client that reads now and then keeps its connection however long
    /// it takes in all; one that stops reading loses it once a single write
    /// has waited the limit.
    #[tokio::test]
    async fn a_write_fails_once_it_has_waited_the_limit_for_the_client_to_read() {
        let limit = Duration::from_secs(1);
        let (ours, mut client) = tokio::io::duplex(64);
        let mut socket = WriteTimeout::new(ours, limit);
        socket.write_all(&[0; 64]).await.unwrap(); // the pipe is full
        let started = Instant::now();
        let reader = async {
            let mut chunk = [0; 64];
            for _ in 0..3 {
                tokio::time::sleep(limit * 2 / 5).await;
                client.read_exact(&mut chunk).await.unwrap();
            }
            client
        };
        // Three waits of 0.4 s each, 1.2 s in all: each write goes through.
        let (written, mut client) = tokio::join!(
            async {
                for _ in 0..3 {
                    socket.write_all(&[1; 64]).await?;
                }
                Ok::<_, io::Error>(())
            },
            reader
        );
        written.expect("a client that reads within the limit keeps its connection");
        assert!(started.elapsed() > limit, "the writes did not wait: {:?}", started.elapsed());

        // The pipe is full again and the client stops reading.
        let stalled = Instant::now();
        let error = tokio::time::timeout(limit * 5, socket.write_all(&[2; 64]))
            .await
            .expect("the write to a stalled client waited on")
            .expect_err("a write to a stalled client fails");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(stalled.elapsed() >= limit, "failed after {:?}", stalled.elapsed());
        let mut chunk = [0; 64];
        client.read_exact(&mut chunk).await.unwrap();
        assert_eq!(chunk, [1; 64], "what the client did not read is still what it was sent");
    }
}
