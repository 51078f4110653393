//! The tower layer that checks each call of a gRPC server against the rules.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use super::Faults;

/// The tower layer in front of a gRPC server: each call's method is checked
/// against the rules before the handler runs, so an injected error on a write
/// happens before any transaction.
#[derive(Clone)]
pub struct FaultLayer(pub Faults);

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService { inner, faults: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct FaultService<S> {
    inner: S,
    faults: Faults,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for FaultService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FaultFuture<S::Future, BoxFuture<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.faults.active() {
            return FaultFuture::Pass { inner: self.inner.call(request) };
        }
        // The ready service takes the call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let faults = self.faults.clone();
        let inner = Box::pin(async move {
            // "/ticketmesh.v1.StorageService/GetStats" → "StorageService/GetStats"
            let path = request.uri().path();
            let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", path));
            let name = format!("{}/{method}", service.rsplit('.').next().unwrap_or(service));
            match faults.check(&name).await {
                Ok(()) => inner.call(request).await,
                Err(injected) => Ok(tonic::Status::new(injected.code, injected.to_string()).into_http()),
            }
        });
        FaultFuture::Checked { inner }
    }
}

pin_project_lite::pin_project! {
    /// A call's future: the handler's own when no rule is set (no
    /// allocation), else a boxed one that checks the rules first.
    #[project = CallProj]
    pub enum FaultFuture<F, B> {
        Pass { #[pin] inner: F },
        Checked { #[pin] inner: B },
    }
}

impl<F: Future<Output = T>, B: Future<Output = T>, T> Future for FaultFuture<F, B> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            CallProj::Pass { inner } => inner.poll(cx),
            CallProj::Checked { inner } => inner.poll(cx),
        }
    }
}
