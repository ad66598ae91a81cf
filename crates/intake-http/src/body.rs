//! Reading a request body: bounded in size, and every way it can be wrong
//! (too large, not JSON, wrong types, bad UTF-8, unknown fields) answered as
//! a problem naming the field, never a panic or a 500.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::{Problem, Violation};

/// Largest body of `POST /v1/complaints` and of an Open311 request.
pub const MAX_SINGLE_BYTES: usize = 256 * 1024;
/// Largest body of `POST /v1/complaints:batch` (the gRPC door's message limit).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The whole body, or 413 past `limit` bytes.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) if is_length_limit(&e) => Err(too_large()),
        Err(e) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// Whether reading stopped at the size limit (http-body-util's
/// `LengthLimitError`, somewhere in the chain).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        if err.to_string().contains("length limit exceeded") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// 415 unless the body is declared JSON (or not declared at all).
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send the body as application/json, not {essence:?}"),
        ))
    }
}

/// Parses JSON, naming the path of the first value at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(Problem::field("body", "is empty; send a JSON object")),
        // serde would also take a struct as an array of its fields.
        Some(b) if *b != b'{' => return Err(Problem::field("body", "must be a JSON object")),
        Some(_) => {}
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_string() } else { path };
        let inner = e.into_inner();
        Problem::invalid(
            format!("the body is not a valid request: {inner}"),
            vec![Violation {
                field,
                description: inner.to_string(),
            }],
        )
    })?;
    de.end()
        .map_err(|e| Problem::field("body", format!("has trailing data: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::ComplaintIn;

    #[test]
    fn wrong_types_name_their_field() {
        let p = parse::<ComplaintIn>(br#"{"text": 5}"#).unwrap_err();
        assert_eq!(p.status, 400);
        assert_eq!(p.violations[0].field, "text");
        let p = parse::<crate::json::BatchIn>(br#"{"complaints":[{},{"location":{"lat":"x","lon":1}}]}"#)
            .unwrap_err();
        assert_eq!(p.violations[0].field, "complaints[1].location.lat");
    }

    #[test]
    fn garbage_is_a_400() {
        for bad in [
            &b""[..],
            b"   ",
            b"{",
            b"\xff\xfe",
            b"[]",
            b"{\"text\":\"\xff\"}",
            b"{} {}",
            b"null",
        ] {
            let p = parse::<ComplaintIn>(bad).unwrap_err();
            assert_eq!(p.status, 400, "{bad:?}");
        }
    }
}
