//! Broken gRPC framing on the public services is the caller's fault.
//!
//! Before any codec runs, tonic answers a few malformed request bodies with
//! INTERNAL: a body with no message at all ("Missing request message."), a
//! message cut short ("Unexpected EOF decoding stream."), and a frame flag
//! that is neither 0 nor 1 ("protocol error: ..."). INTERNAL says the server
//! broke and tempts clients to retry the same bytes; for `intake.v1` these are
//! INVALID_ARGUMENT, like a body that does not decode (`intake_proto::codec`).
//!
//! This layer rewrites exactly those answers, recognised by tonic's messages,
//! on `/intake.v1.` paths only; every other INTERNAL, and every other service
//! (the Raft transport, health, reflection), passes untouched. tonic is
//! pinned (0.14); `tests/bad_input.rs` sends each of these bodies, so a
//! change of wording fails there.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::{Code, Status};

/// The public API's path prefix.
const PUBLIC_PREFIX: &str = "/intake.v1.";

/// tonic's INTERNAL messages for request framing it could not read.
const FRAMING_ERRORS: [&str; 3] = [
    "Missing request message.",
    "Unexpected EOF decoding stream.",
    "protocol error: received message with",
];

/// The layer, for `Server::builder().layer(...)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BadFramesLayer;

impl<S> tower::Layer<S> for BadFramesLayer {
    type Service = BadFrames<S>;

    fn layer(&self, inner: S) -> BadFrames<S> {
        BadFrames { inner }
    }
}

#[derive(Clone, Debug)]
pub struct BadFrames<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for BadFrames<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let public = req.uri().path().starts_with(PUBLIC_PREFIX);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut response = answer.await?;
            if public {
                rewrite(response.headers_mut());
            }
            Ok(response)
        })
    }
}

/// Turns a framing INTERNAL in a trailers-only answer into INVALID_ARGUMENT.
fn rewrite(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != Code::Internal || !FRAMING_ERRORS.iter().any(|m| status.message().starts_with(m)) {
        return;
    }
    let fixed = Status::invalid_argument(format!(
        "request body is not a valid gRPC message: {}",
        status.message()
    ));
    // Only fails for a message that cannot be a header; ours is ASCII made
    // from tonic's own, which was one a moment ago.
    let _ = fixed.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Status) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        status.add_header(&mut h).expect("ascii status");
        rewrite(&mut h);
        h
    }

    #[test]
    fn only_framing_errors_become_invalid_argument() {
        let h = answer(Status::internal("Missing request message."));
        let s = Status::from_header_map(&h).expect("a status");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().contains("Missing request message."),
            "{}",
            s.message()
        );

        let h = answer(Status::internal("storage failed"));
        assert_eq!(
            Status::from_header_map(&h).map(|s| s.code()),
            Some(Code::Internal)
        );
        let h = answer(Status::unavailable("Missing request message."));
        assert_eq!(
            Status::from_header_map(&h).map(|s| s.code()),
            Some(Code::Unavailable)
        );
    }
}
