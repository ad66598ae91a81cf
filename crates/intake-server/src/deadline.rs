//! DEADLINE_EXCEEDED, never CANCELLED, when a caller's deadline runs out.
//!
//! tonic starts a timer from each call's `grpc-timeout`, on the server (at
//! the front of its stack) and on a client channel alike, and when it fires
//! before the answer it ends the call with `CANCELLED "Timeout expired"`.
//! Callers read CANCELLED as "someone gave up", not as "the deadline passed
//! and the complaint may have committed", and an independent client saw it
//! for a third to three quarters of 2 ms-deadline calls sent through a
//! follower. The handlers answer a margin before the deadline on their own;
//! this layer is the server's backstop for what they cannot cover (a body
//! that arrives late, a runtime short of CPU, deadlines of a few ms, below
//! the timer's 1 ms resolution), and [`forward_expired`] is the client
//! side's, for calls forwarded to another node.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::codegen::{Service, http};
use tonic::{Code, Status};

/// How much earlier than tonic's own timer this layer answers. Both timers
/// start within microseconds of each other (tonic's calls this layer
/// directly) and tokio rounds both up to its 1 ms tick, so an earlier or
/// equal deadline always fires first or in the same tick; and in the same
/// tick tonic polls this layer's answer before looking at its own timer.
const AHEAD: Duration = Duration::from_millis(1);

/// The answer to a submission whose deadline passed before it was
/// acknowledged.
pub fn submit_expired() -> Status {
    Status::deadline_exceeded(
        "not acknowledged before the deadline; it may have committed: retry with the same idempotency key",
    )
}

/// The answer to a status update whose deadline passed before it was
/// committed.
pub fn status_expired() -> Status {
    Status::deadline_exceeded("status update not committed before the deadline; it may have been: retry")
}

/// What a call's deadline running out means, by method.
fn expired(path: &str) -> Status {
    if path.ends_with("/Submit") || path.ends_with("/SubmitBatch") {
        submit_expired()
    } else if path.ends_with("/UpdateStatus") {
        status_expired()
    } else {
        Status::deadline_exceeded("not answered before the deadline")
    }
}

/// A forwarded call's failure as this node's caller should see it: tonic's
/// client timer (CANCELLED "Timeout expired"), or any cancellation once
/// `deadline` has passed, is the deadline running out on a call whose
/// outcome is unknown. Other failures pass unchanged.
pub fn forward_expired(status: Status, deadline: Instant, expired: fn() -> Status) -> Status {
    let timed_out = status.code() == Code::Cancelled
        && (status.message() == tonic::TimeoutExpired(()).to_string() || Instant::now() >= deadline);
    if timed_out { expired() } else { status }
}

/// Layer that answers DEADLINE_EXCEEDED when a call's `grpc-timeout` runs
/// out (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower_layer::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let Some(timeout) = timeout else {
            return Box::pin(self.inner.call(req));
        };
        let at = Instant::now() + timeout.saturating_sub(AHEAD);
        let status = expired(req.uri().path());
        let answer = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout_at(at, answer).await {
                Ok(answered) => answered,
                Err(_) => Ok(status.into_http()),
            }
        })
    }
}

/// `grpc-timeout` is an integer of at most 8 digits and a unit letter.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("10q"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[test]
    fn a_forward_that_ran_out_of_time_is_a_deadline_not_a_cancellation() {
        let later = Instant::now() + Duration::from_secs(60);
        let s = forward_expired(Status::cancelled("Timeout expired"), later, submit_expired);
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert!(s.message().contains("may have committed"), "{}", s.message());
        let s = forward_expired(Status::cancelled("h2 reset"), Instant::now(), submit_expired);
        assert_eq!(s.code(), Code::DeadlineExceeded);
        // Before the deadline, another cancellation is what it says.
        let s = forward_expired(Status::cancelled("h2 reset"), later, submit_expired);
        assert_eq!(s.code(), Code::Cancelled);
        let s = forward_expired(Status::unavailable("down"), Instant::now(), submit_expired);
        assert_eq!(s.code(), Code::Unavailable);
    }
}
