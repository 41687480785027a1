//! What a client sees when a call runs into a limit, made to match what
//! clients in every language expect of a gRPC server (grpc-go, grpc-java and
//! gRPC core behave so), where tonic on its own differs:
//!
//! - A request message over the size limit is `RESOURCE_EXHAUSTED`; tonic's
//!   decoder says `OUT_OF_RANGE`. tonic decodes the request of unary and
//!   server-streaming calls before the handler runs and answers trailers-only,
//!   so the status is in the response headers, where this layer rewrites it.
//!   (A client-streaming call would report it in the trailers; postmesh has none.)
//! - The client's deadline (`grpc-timeout`) ends the call on the server,
//!   streams included: at the deadline the handler (or the response stream) is
//!   dropped, which cancels its work, and the call ends with
//!   `DEADLINE_EXCEEDED`. tonic applies the deadline only until the response
//!   headers, so a server stream (WatchPosts) outlived its deadline, and a late
//!   unary handler was answered `CANCELLED`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, HeaderValue};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// What tonic's decoder says when a message is over the limit (tonic 0.14:
/// "Error, decoded message length too large: found N bytes, the limit is: M bytes").
const TONIC_TOO_LARGE: &str = "message length too large";

/// The deadline is enforced this much early, so that this layer, not tonic's
/// own timer for the same deadline (which answers `CANCELLED`), ends the call.
const AHEAD_OF_TONIC: Duration = Duration::from_millis(1);

/// Message of the `DEADLINE_EXCEEDED` this layer answers.
const DEADLINE_MESSAGE: &str = "the call's deadline (grpc-timeout) passed on the server";

/// Applies the client's deadline to the whole call and reports an oversized
/// request as `RESOURCE_EXHAUSTED`; see the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct LimitsStatusLayer;

impl<S> Layer<S> for LimitsStatusLayer {
    type Service = LimitsStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitsStatus { inner }
    }
}

/// Service produced by [`LimitsStatusLayer`].
#[derive(Clone, Debug)]
pub struct LimitsStatus<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LimitsStatus<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<DeadlineBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let deadline = grpc_timeout(request.headers()).map(|timeout| {
            // Far-future deadlines (hours) still fit: Instant + Duration only
            // overflows beyond ~30 years, and grpc-timeout stops at 10^8 hours.
            Instant::now() + timeout.saturating_sub(AHEAD_OF_TONIC)
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match deadline {
                None => response.await?,
                Some(at) => match tokio::time::timeout_at(at, response).await {
                    Ok(result) => result?,
                    // Dropping the handler's future here cancels its work.
                    Err(_elapsed) => return Ok(Status::deadline_exceeded(DEADLINE_MESSAGE).into_http()),
                },
            };
            let (mut parts, body) = response.into_parts();
            rewrite_oversize(&mut parts.headers);
            Ok(http::Response::from_parts(parts, DeadlineBody::new(body, deadline)))
        })
    }
}

pin_project! {
    /// A response body that ends with `DEADLINE_EXCEEDED` trailers at the
    /// call's deadline, if it has not ended by then; the stream it wraps is
    /// dropped with it, which ends the server's work on the call.
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        deadline: Option<Pin<Box<Sleep>>>,
        done: bool,
    }
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, deadline: Option<Instant>) -> Self {
        Self {
            inner,
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            done: false,
        }
    }
}

impl<B: Default> Default for DeadlineBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B: http_body::Body> http_body::Body for DeadlineBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // What the stream has ready is sent first, even at the deadline.
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                *this.done = true;
            }
            return Poll::Ready(frame);
        }
        let Some(sleep) = this.deadline.as_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(sleep.as_mut().poll(cx));
        *this.done = true;
        let mut trailers = HeaderMap::new();
        trailers.insert(Status::GRPC_STATUS, HeaderValue::from(Code::DeadlineExceeded as i32));
        trailers.insert(Status::GRPC_MESSAGE, HeaderValue::from_static(DEADLINE_MESSAGE_ENCODED));
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// [`DEADLINE_MESSAGE`] percent-encoded for the grpc-message trailer.
const DEADLINE_MESSAGE_ENCODED: &str = "the%20call's%20deadline%20(grpc-timeout)%20passed%20on%20the%20server";

/// The `grpc-timeout` header: at most 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Rewrites a trailers-only "message too large" `OUT_OF_RANGE` in `headers`
/// to `RESOURCE_EXHAUSTED`, keeping tonic's message (it names both sizes).
fn rewrite_oversize(headers: &mut HeaderMap) {
    // The cheap test first: almost every response has no status in its headers.
    let out_of_range = (Code::OutOfRange as i32).to_string();
    if headers.get(Status::GRPC_STATUS).map(HeaderValue::as_bytes) != Some(out_of_range.as_bytes()) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if !status.message().contains(TONIC_TOO_LARGE) {
        return;
    }
    let message = format!("request message too large for this server: {}", status.message());
    let replacement = Status::new(Code::ResourceExhausted, message);
    headers.remove(Status::GRPC_MESSAGE);
    if replacement.add_header(headers).is_err() {
        // Cannot happen (the message is percent-encoded); keep the code change at least.
        headers.insert(Status::GRPC_STATUS, HeaderValue::from(Code::ResourceExhausted as i32));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;

    use http_body::Body as _;
    use tonic::codegen::Bytes;
    use tower::ServiceExt as _;

    use super::*;

    fn headers_of(status: &Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn tonics_oversize_answer_becomes_resource_exhausted() {
        let mut headers = headers_of(&Status::out_of_range(
            "Error, decoded message length too large: found 5242885 bytes, the limit is: 4194304 bytes",
        ));
        rewrite_oversize(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("found 5242885 bytes"), "{}", status.message());
        assert!(status.message().contains("4194304"), "{}", status.message());
    }

    #[test]
    fn other_statuses_pass_untouched() {
        for status in [
            Status::out_of_range("page_size must be at most 100"),
            Status::invalid_argument("message length too large"),
            Status::ok(""),
        ] {
            let mut headers = headers_of(&status);
            let before = headers.clone();
            rewrite_oversize(&mut headers);
            assert_eq!(headers, before);
        }
        let mut empty = HeaderMap::new();
        rewrite_oversize(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn grpc_timeout_units() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_str(value).unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(parse("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5M"), Some(Duration::from_secs(300)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn the_encoded_message_matches() {
        let mut headers = HeaderMap::new();
        Status::deadline_exceeded(DEADLINE_MESSAGE)
            .add_header(&mut headers)
            .unwrap();
        assert_eq!(headers[Status::GRPC_MESSAGE], DEADLINE_MESSAGE_ENCODED);
    }

    /// A body that never ends, like a quiet WatchPosts stream; counts its drops.
    #[derive(Default)]
    struct Endless {
        _alive: Option<std::sync::Arc<()>>,
    }

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    fn request(timeout: Option<&'static str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        if let Some(timeout) = timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", HeaderValue::from_static(timeout));
        }
        request
    }

    async fn next_frame<B: http_body::Body + Unpin>(body: &mut B) -> Option<http_body::Frame<B::Data>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|frame| frame.ok().unwrap())
    }

    #[tokio::test]
    async fn a_stream_past_the_deadline_ends_with_deadline_exceeded_and_is_dropped() {
        let alive = std::sync::Arc::new(());
        let handle = alive.clone();
        let service = tower::service_fn(move |_request: http::Request<()>| {
            let body = Endless {
                _alive: Some(handle.clone()),
            };
            async move { Ok::<_, Infallible>(http::Response::new(body)) }
        });
        let started = Instant::now();
        let response = LimitsStatusLayer
            .layer(service)
            .oneshot(request(Some("300m")))
            .await
            .unwrap();
        let mut body = response.into_body();
        let trailers = next_frame(&mut body).await.unwrap().into_trailers().unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(next_frame(&mut body).await.is_none());
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(std::sync::Arc::strong_count(&alive), 1, "the stream was dropped");
    }

    #[tokio::test]
    async fn a_handler_past_the_deadline_is_dropped_and_answered_deadline_exceeded() {
        let service = tower::service_fn(|_request: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(http::Response::new(Endless::default()))
        });
        let started = Instant::now();
        let response = LimitsStatusLayer
            .layer(service)
            .oneshot(request(Some("200m")))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn without_a_deadline_nothing_is_cut() {
        let service = tower::service_fn(|_request: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Endless::default()))
        });
        let response = LimitsStatusLayer.layer(service).oneshot(request(None)).await.unwrap();
        let mut body = response.into_body();
        let waited = tokio::time::timeout(Duration::from_millis(300), next_frame(&mut body)).await;
        assert!(waited.is_err(), "a stream without a deadline runs on");
    }
}
