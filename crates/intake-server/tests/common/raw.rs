//! gRPC calls as raw bytes over HTTP/2 (h2, no tonic client), as an outside
//! client would send them: any framing, any body, any payload.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tonic::{Code, Status};

/// How a raw call ended.
#[derive(Debug)]
pub enum Answer {
    /// An explicit gRPC status (from the headers of a trailers-only answer,
    /// or from the trailers).
    Status(Status),
    /// Anything else: a reset stream, a dropped connection, no answer.
    // Read through `Debug`, in the failure messages.
    Broken(#[allow(dead_code)] String),
}

impl Answer {
    pub fn code(&self) -> Option<Code> {
        match self {
            Answer::Status(s) => Some(s.code()),
            Answer::Broken(_) => None,
        }
    }
}

/// What goes in the request body.
#[derive(Clone, Debug)]
pub enum Body {
    /// No bytes at all: the stream ends with the headers.
    Nothing,
    /// Exactly these bytes, framing included (or not).
    Raw(Bytes),
}

/// One gRPC message frame: flag 0 (not compressed), 4-byte big-endian length,
/// the payload.
pub fn frame(payload: &[u8]) -> Body {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_slice(payload);
    Body::Raw(b.freeze())
}

/// Calls `path` on `addr` over a fresh HTTP/2 connection, with an optional
/// `grpc-timeout` header value. Bounded: no answer within 15 s is `Broken`.
pub async fn call(addr: &str, path: &str, body: Body, timeout: Option<&str>) -> Answer {
    call_with_body(addr, path, body, timeout).await.0
}

/// As [`call`], with the answer's message bytes (frames included).
pub async fn call_with_body(addr: &str, path: &str, body: Body, timeout: Option<&str>) -> (Answer, Vec<u8>) {
    match tokio::time::timeout(Duration::from_secs(15), call_inner(addr, path, body, timeout)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => (Answer::Broken(e), Vec::new()),
        Err(_) => (Answer::Broken("no answer within 15 s".into()), Vec::new()),
    }
}

async fn call_inner(
    addr: &str,
    path: &str,
    body: Body,
    timeout: Option<&str>,
) -> Result<(Answer, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (h2, conn) = h2::client::handshake(tcp).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2.ready().await.map_err(|e| e.to_string())?;
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    let req = req.body(()).map_err(|e| e.to_string())?;
    let (response, mut send) = match &body {
        Body::Nothing => h2.send_request(req, true),
        Body::Raw(_) => h2.send_request(req, false),
    }
    .map_err(|e| format!("send: {e}"))?;
    if let Body::Raw(bytes) = body {
        send.send_data(bytes, true)
            .map_err(|e| format!("send body: {e}"))?;
    }
    let response = response.await.map_err(|e| format!("response: {e}"))?;
    let (parts, mut recv) = response.into_parts();
    let mut received = Vec::new();
    let answer = if let Some(s) = Status::from_header_map(&parts.headers) {
        Answer::Status(s)
    } else {
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| format!("body: {e}"))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            received.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.map_err(|e| format!("trailers: {e}"))?;
        match trailers.as_ref().and_then(Status::from_header_map) {
            Some(s) => Answer::Status(s),
            None => Answer::Broken("answer without a grpc-status".into()),
        }
    };
    driver.abort();
    Ok((answer, received))
}
