//! The caller's token travels with a forwarded request, so that without
//! mutual TLS the next node checks it again instead of trusting the hop
//! header (which any client can send). The gate sets it for the duration
//! of the call; the router copies it onto the requests it forwards,
//! which it makes in the handler's own task.

use tonic::metadata::{Ascii, MetadataValue};

tokio::task_local! {
    static CALLER_TOKEN: Option<MetadataValue<Ascii>>;
}

/// Runs `f` with `token` as the caller's `authorization` value.
pub(super) async fn with_caller_token<F: Future>(token: Option<MetadataValue<Ascii>>, f: F) -> F::Output {
    CALLER_TOKEN.scope(token, f).await
}

/// The caller's `authorization`, for a request forwarded from another task.
pub fn caller_token() -> Option<MetadataValue<Ascii>> {
    CALLER_TOKEN.try_with(|t| t.clone()).ok().flatten()
}

/// Adds the caller's `authorization` to a request this node forwards on its
/// behalf; nothing when the caller had none (open node, or a peer).
pub fn attach_caller_token<T>(req: &mut tonic::Request<T>) {
    if let Some(t) = caller_token() {
        req.metadata_mut().insert("authorization", t);
    }
}
