//! When a call reached this node, stamped at the front of the server's stack.
//!
//! A unary handler runs only once its whole request body is in, and in a
//! surge that body can wait long behind HTTP/2 flow control and a busy
//! runtime. The caller's `grpc-timeout` counts from when it sent the call,
//! so a deadline counted from the handler's start would let answers arrive
//! after the caller gave up. The stamp is taken when the call's headers are
//! accepted, the earliest moment this node knows of the call.

use tokio::time::Instant;
use tonic::{Request, Status};

/// The instant this node accepted a call (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct Arrival(pub Instant);

/// The interceptor that stamps every call.
pub fn stamp(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.extensions_mut().insert(Arrival(Instant::now()));
    Ok(req)
}

/// When the call arrived; now, for a request that was never stamped (one
/// built in-process, as in tests).
pub fn arrived<T>(req: &Request<T>) -> Instant {
    req.extensions()
        .get::<Arrival>()
        .map_or_else(Instant::now, |a| a.0)
}
