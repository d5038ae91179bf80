//! Ends the gRPC response streams still open when the drain period after the shutdown signal
//! is over. A graceful shutdown waits for every open call, and `grpc.health.v1.Health/Watch`
//! is public and never ends by itself: without this, one client holding a Watch stream keeps
//! a stopping service alive until it is killed (docs/contract.md, "Bounds"). Each response
//! body ends, at the end of the drain, with the trailers of an UNAVAILABLE status, so the
//! client sees a clean end it can act on (reconnect elsewhere) rather than a reset.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What a stream ended by the drain is told.
pub const DRAIN_MESSAGE: &str = "the service is shutting down; reconnect";

/// The layer: ends every response body once `drained` is cancelled.
#[derive(Debug, Clone)]
pub struct DrainLayer {
    drained: CancellationToken,
}

impl DrainLayer {
    /// Response bodies still open when `drained` is cancelled end there.
    pub fn new(drained: CancellationToken) -> Self {
        Self { drained }
    }
}

impl<S> tower::Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drain {
            inner,
            drained: self.drained.clone(),
        }
    }
}

/// The service of [`DrainLayer`].
#[derive(Debug, Clone)]
pub struct Drain<S> {
    inner: S,
    drained: CancellationToken,
}

impl<S, B> tower::Service<http::Request<B>> for Drain<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let drained = self.drained.clone();
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                if body.is_end_stream() {
                    body
                } else {
                    tonic::body::Body::new(DrainBody::new(body, drained))
                }
            }))
        })
    }
}

/// A response body that ends with UNAVAILABLE trailers once the drain is over.
struct DrainBody {
    inner: tonic::body::Body,
    drained: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl DrainBody {
    fn new(inner: tonic::body::Body, drained: CancellationToken) -> Self {
        Self {
            inner,
            drained: Box::pin(drained.cancelled_owned()),
            ended: false,
        }
    }
}

impl http_body::Body for DrainBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // What the call has to send goes first; the drain only ends a body that waits.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.drained.as_mut().poll(cx).is_ready() {
            this.ended = true;
            let status = tonic::Status::unavailable(DRAIN_MESSAGE);
            let mut trailers = http::HeaderMap::new();
            if let Err(e) = status.add_header(&mut trailers) {
                return Poll::Ready(Some(Err(e)));
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// A body that never ends, like a Watch stream nobody changes.
    fn endless() -> tonic::body::Body {
        let frames = futures::stream::pending::<Result<Frame<Bytes>, tonic::Status>>();
        tonic::body::Body::new(http_body_util::StreamBody::new(frames))
    }

    #[tokio::test]
    async fn an_open_stream_ends_with_unavailable_once_drained() {
        let drained = CancellationToken::new();
        let mut body = DrainBody::new(endless(), drained.clone());
        assert!(
            futures::FutureExt::now_or_never(body.frame()).is_none(),
            "the stream stays open before the drain"
        );
        drained.cancel();
        let frame = body.frame().await.expect("a frame").expect("not an error");
        let trailers = frame.into_trailers().expect("trailers");
        assert_eq!(trailers.get("grpc-status").unwrap(), "14");
        assert!(body.frame().await.is_none(), "and then the body ends");
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn data_waiting_to_be_sent_goes_before_the_end() {
        let drained = CancellationToken::new();
        drained.cancel();
        let inner = tonic::body::Body::new(http_body_util::Full::new(Bytes::from_static(b"x")));
        let mut body = DrainBody::new(inner, drained);
        let first = body.frame().await.expect("a frame").expect("not an error");
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"x"));
    }
}
