//! The gate in front of every service: decides who is calling (a peer, a
//! token's holder, or anyone on an open node), refuses what that caller may
//! not call, and answers each refusal as a gRPC status. Every
//! authentication, authorisation and rate-limit answer of the node is made
//! here, except the per-complaint channel check, which needs the decoded
//! body ([`super::Guarded`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Status};

use super::forward::with_caller_token;
use super::table::{AuthTable, Principal, Role};
use crate::HOPS_HEADER;
use crate::admission::{Reason, Refusal};
use crate::error::RequestError;
use crate::tls::ConnInfo;

/// Who is calling, for the handlers behind the gate.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The node runs without `--auth`.
    Open,
    /// Another node, proven by its cluster certificate.
    Peer,
    /// The holder of a token from the `--auth` file.
    Token(Arc<Principal>),
}

/// The layer, for `Server::builder().layer(...)`.
#[derive(Clone, Debug, Default)]
pub struct GateLayer {
    table: Option<Arc<AuthTable>>,
    /// Peers prove themselves with certificates: only they may reach the
    /// Raft transport, and only their hop header counts.
    mutual: bool,
}

impl GateLayer {
    pub fn new(table: Option<Arc<AuthTable>>, mutual: bool) -> Self {
        Self { table, mutual }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

const INTERNAL_PREFIX: &str = "/intake_internal.";
const PUBLIC_PREFIX: &str = "/intake.v1.";

pub(super) const SUBMIT: &str = "/intake.v1.IntakeService/Submit";
pub(super) const SUBMIT_BATCH: &str = "/intake.v1.IntakeService/SubmitBatch";
pub(super) const GET_TICKET: &str = "/intake.v1.IntakeService/GetTicket";
pub(super) const UPDATE_STATUS: &str = "/intake.v1.IntakeService/UpdateStatus";

/// The roles that may call a public method.
fn allowed(path: &str) -> &'static [Role] {
    const ALL: &[Role] = &[Role::Adapter, Role::Downstream, Role::Ops];
    match path {
        SUBMIT | SUBMIT_BATCH => &[Role::Adapter],
        UPDATE_STATUS => &[Role::Downstream],
        // Adapters only for their channels' tickets (checked on the answer).
        GET_TICKET => ALL,
        // The cluster map: clients route by it; it holds no complaint data.
        "/intake.v1.AdminService/ClusterStatus" => ALL,
        _ => &[Role::Ops],
    }
}

impl GateLayer {
    /// The caller of a request, or the status that refuses it.
    fn decide(&self, req: &http::Request<impl Sized>) -> Result<Caller, Status> {
        let path = req.uri().path();
        let conn = req.extensions().get::<ConnInfo>();
        if conn.is_some_and(|c| c.plaintext) {
            return Err(Status::failed_precondition(
                "this node serves TLS only: connect with TLS (intake: --ca FILE, the CA that signed the node's certificate)",
            ));
        }
        let peer = conn.is_some_and(|c| c.peer);
        if path.starts_with(INTERNAL_PREFIX) {
            if self.mutual && !peer {
                return Err(Status::unauthenticated(
                    "internal service: only cluster peers (a certificate the cluster CA signed) may call it",
                ));
            }
            return Ok(Caller::Peer);
        }
        if !path.starts_with(PUBLIC_PREFIX) {
            // Health and reflection: open, as etcd's /health is.
            return Ok(Caller::Open);
        }
        if peer {
            return Ok(Caller::Peer);
        }
        // A forwarded call was counted by the node it entered.
        let forwarded = req.headers().contains_key(HOPS_HEADER);
        self.authorize(path, req.headers(), forwarded)
    }

    /// The token part of the decision, for a public method (`path`, e.g.
    /// `/intake.v1.IntakeService/Submit`) called with `headers`: who the
    /// caller is, or the status refusing it (unauthenticated, permission
    /// denied, or over the token's rate unless `forwarded`). The gRPC gate
    /// and the in-process doors ([`super::InProcess`]) both decide here.
    pub(super) fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        forwarded: bool,
    ) -> Result<Caller, Status> {
        let Some(table) = &self.table else {
            return Ok(Caller::Open);
        };
        let principal = match table.public() {
            // No token at all, and the file lets such callers in: to
            // submit only (a ticket's answer holds the contact).
            Some(public) if !headers.contains_key(http::header::AUTHORIZATION) => {
                if path != SUBMIT && path != SUBMIT_BATCH {
                    return Err(Status::unauthenticated(
                        "missing `authorization: Bearer <token>` metadata (callers without a token may only submit)",
                    ));
                }
                public
            }
            _ => {
                let token = bearer(headers)?;
                table
                    .find(token)
                    .ok_or_else(|| Status::unauthenticated("unknown token"))?
            }
        };
        let method = path.rsplit('/').next().unwrap_or(path);
        if !allowed(path).contains(&principal.role) {
            return Err(Status::permission_denied(format!(
                "token {:?} has role {}, which may not call {method}",
                principal.name,
                principal.role.as_str()
            )));
        }
        if let (Some(limit), false) = (&principal.limit, forwarded)
            && let Err(wait) = limit.take(Instant::now())
        {
            let refused = Refusal::new(Reason::RateLimited(principal.name.clone()), wait);
            return Err(RequestError::Refused(refused).to_status());
        }
        Ok(Caller::Token(principal))
    }
}

/// The caller's `authorization` value, kept for the forwards a handler
/// makes on a token holder's behalf (`super::forward`).
pub(super) fn caller_token(caller: &Caller, headers: &http::HeaderMap) -> Option<MetadataValue<Ascii>> {
    match caller {
        Caller::Token(_) => headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| MetadataValue::try_from(v).ok()),
        _ => None,
    }
}

/// Counts a refusal the gate answers, by code, and hands it back.
pub(super) fn refused(status: Status) -> Status {
    metrics::counter!("intake_auth_refused_total", "code" => code_label(status.code())).increment(1);
    status
}

/// The token of `authorization: Bearer <token>`.
fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("authorization metadata is not `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Status::unauthenticated(
            "authorization metadata is not `Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Gate<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let peer = req.extensions().get::<ConnInfo>().is_some_and(|c| c.peer);
        if self.layer.mutual && !peer {
            // Only peers forward; a client's hop header would put its calls
            // in the forwarded pool and past its rate limit.
            req.headers_mut().remove(HOPS_HEADER);
        }
        match self.layer.decide(&req) {
            Ok(caller) => {
                let token = caller_token(&caller, req.headers());
                req.extensions_mut().insert(caller);
                Box::pin(with_caller_token(token, self.inner.call(req)))
            }
            Err(status) => Box::pin(std::future::ready(Ok(refused(status).into_http()))),
        }
    }
}

fn code_label(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "plaintext",
        _ => "other",
    }
}
