//! Open311 GeoReport v2 under `/open311/v2/`: services from the category
//! table, `POST requests` into the node's `Submit`, look-ups through its
//! `GetTicket`. Both formats (`.json`, `.xml`; XML when none is named), and
//! errors as the spec's `[{code, description}]`.

pub mod format;
pub mod request;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use intake_proto::pb;
use serde_json::{Value, json};

use self::format::{Format, REQUESTS, SERVICE_DEFINITION, SERVICES, error, render, split};
use self::request::{Form, known_service};
use crate::json::{rfc3339, status_name};
use crate::problem::Problem;
use crate::{Call, Door};

/// Most ids one `GET requests?service_request_id=` answers.
const MAX_IDS: usize = 100;

/// `GET /open311/v2/services.{fmt}` and `GET /open311/v2/requests.{fmt}`.
pub async fn get_root(
    State(door): State<Arc<Door>>,
    file: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let (name, fmt) = match resource(file) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match name.as_str() {
        "services" => render(fmt, SERVICES, StatusCode::OK, &services(&door)),
        "requests" => requests_by_id(&door, fmt, query.as_deref().unwrap_or_default()).await,
        _ => error(fmt, StatusCode::NOT_FOUND, format!("no resource {name:?} here")),
    }
}

/// `POST /open311/v2/requests.{fmt}` (form-encoded).
pub async fn post_root(
    State(door): State<Arc<Door>>,
    file: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (name, fmt) = match resource(file) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if name != "requests" {
        return error(
            fmt,
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{name} cannot be posted to"),
        );
    }
    let call = Call::from_headers(&headers);
    let bytes = match crate::body::read(&headers, body, crate::body::MAX_SINGLE_BYTES).await {
        Ok(b) => b,
        Err(p) => return problem(fmt, &p),
    };
    let key = headers
        .get(crate::api::IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok());
    let form = Form::parse(&bytes);
    // Admitted by its service code (the category) before the district is
    // looked up and the complaint built.
    let class = door.class_of(form.service_code().into_iter());
    let call = match door.admit(call, class) {
        Ok(call) => call,
        Err(p) => return problem(fmt, &p),
    };
    let complaint = match form.complaint(key, door.categories(), door.locator()) {
        Ok(c) => c,
        Err(e) => return error(fmt, StatusCode::BAD_REQUEST, e.0),
    };
    // Open311's credential is the form's api_key; a Bearer header wins.
    let call = call.or_token(form.api_key());
    match door.submit(&call, complaint).await {
        Ok(accepted) => {
            let notice = if accepted.duplicate {
                "this request was already received; the same service_request_id is returned"
            } else {
                ""
            };
            let body = json!([{
                "service_request_id": accepted.ticket_id,
                "service_notice": notice,
                "account_id": Value::Null,
            }]);
            render(fmt, REQUESTS, StatusCode::CREATED, &body)
        }
        Err(p) => problem(fmt, &p),
    }
}

/// `GET /open311/v2/services/{code}.{fmt}`: the definition (the district
/// attribute, with the table's codes as its values).
pub async fn get_service(
    State(door): State<Arc<Door>>,
    file: Result<Path<String>, PathRejection>,
) -> Response {
    let (code, fmt) = match resource(file) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !known_service(door.categories(), &code) {
        return error(fmt, StatusCode::NOT_FOUND, format!("no service {code:?}"));
    }
    let values: Vec<Value> = door
        .districts()
        .iter()
        .map(|d| json!({ "key": d.code, "name": format!("{} {}", d.name_zh, d.name_en) }))
        .collect();
    let body = json!({
        "service_code": code,
        "attributes": [{
            "variable": true,
            "code": "district",
            "datatype": "singlevaluelist",
            "required": false,
            "datatype_description": "The district's code. Optional when lat/long (inside the city) or an address_string naming the district is given.",
            "order": 1,
            "description": "District 区",
            "values": values,
        }],
    });
    render(fmt, SERVICE_DEFINITION, StatusCode::OK, &body)
}

/// `GET /open311/v2/requests/{id}.{fmt}`.
pub async fn get_request(
    State(door): State<Arc<Door>>,
    file: Result<Path<String>, PathRejection>,
) -> Response {
    let (id, fmt) = match resource(file) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match door.public_ticket(id).await {
        Ok(t) => render(fmt, REQUESTS, StatusCode::OK, &json!([request_json(&door, t)])),
        Err(p) if p.status == 400 => error(fmt, StatusCode::NOT_FOUND, p.detail),
        Err(p) => problem(fmt, &p),
    }
}

/// `GET requests?service_request_id=a,b`: the ones found, in the order
/// asked. Listing by date or status is not offered: a node cannot scan every
/// shard's tickets cheaply, and this door must not be a way to read them all.
async fn requests_by_id(door: &Door, fmt: Format, query: &str) -> Response {
    let ids: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "service_request_id")
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return error(
            fmt,
            StatusCode::BAD_REQUEST,
            "give service_request_id (comma-separated ids); listing requests by date or status is not supported here",
        );
    }
    if ids.len() > MAX_IDS {
        return error(
            fmt,
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_IDS} service_request_id at once"),
        );
    }
    let mut found = Vec::new();
    for id in ids {
        match door.public_ticket(id).await {
            Ok(t) => found.push(request_json(door, t)),
            // An unknown or malformed id is simply not in the answer.
            Err(p) if p.status == 404 || p.status == 400 => {}
            Err(p) => return problem(fmt, &p),
        }
    }
    render(fmt, REQUESTS, StatusCode::OK, &Value::Array(found))
}

/// A ticket as an Open311 service request. The contact is left out: the
/// spec's look-ups are public.
fn request_json(door: &Door, t: pb::Ticket) -> Value {
    let c = t.complaint.clone().unwrap_or_default();
    let (status, notes) = open311_status(&t);
    let updated = t
        .history
        .last()
        .map(|e| rfc3339(e.recorded_at.as_ref()))
        .unwrap_or_else(|| rfc3339(t.accepted_at.as_ref()));
    let agency = t
        .history
        .iter()
        .rev()
        .find(|e| !e.department.is_empty())
        .map(|e| e.department.clone())
        .unwrap_or_default();
    let (lat, long) = match &c.location {
        Some(l) if l.lat != 0.0 || l.lon != 0.0 => (json!(l.lat), json!(l.lon)),
        _ => (Value::Null, Value::Null),
    };
    let district = door
        .districts()
        .get(&c.district_code)
        .map(|d| format!("{} {}", d.name_zh, d.name_en))
        .unwrap_or_default();
    let address = match c.location.as_ref().map(|l| l.address.as_str()) {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => district,
    };
    json!({
        "service_request_id": t.ticket_id,
        "status": status,
        "status_notes": notes,
        "service_name": crate::labels::category(&c.category).1,
        "service_code": c.category,
        "description": c.text,
        "agency_responsible": agency,
        "service_notice": "",
        "requested_datetime": rfc3339(t.accepted_at.as_ref()),
        "updated_datetime": updated,
        "expected_datetime": "",
        "address": address,
        "address_id": "",
        "zipcode": "",
        "lat": lat,
        "long": long,
        "media_url": c.attachment_urls.first().cloned().unwrap_or_default(),
    })
}

/// Open311's `open`/`closed`, and notes saying where the ticket is.
fn open311_status(t: &pb::Ticket) -> (&'static str, String) {
    let closed = matches!(
        pb::TicketStatus::try_from(t.status),
        Ok(pb::TicketStatus::Resolved | pb::TicketStatus::Rejected)
    );
    let last = t.history.last();
    let note = last.map(|e| e.note.clone()).filter(|n| !n.is_empty());
    let notes = note.unwrap_or_else(|| match last {
        Some(e) if !e.department.is_empty() => format!("{} ({})", status_name(e.status), e.department),
        Some(e) => status_name(e.status).to_string(),
        None => status_name(t.status).to_string(),
    });
    (if closed { "closed" } else { "open" }, notes)
}

/// `name.json` / `name.xml` / `name` from the path, or a 404 (in XML, the
/// default) for a path that cannot be read or names another format.
// The error is the handler's own answer, returned as it is: boxing it
// would only unbox it again.
#[allow(clippy::result_large_err)]
fn resource(file: Result<Path<String>, PathRejection>) -> Result<(String, Format), Response> {
    file.ok()
        .and_then(|Path(f)| split(&f).map(|(n, f)| (n.to_string(), f)))
        .ok_or_else(|| {
            error(
                Format::Xml,
                StatusCode::NOT_FOUND,
                "no such resource; formats are .json and .xml",
            )
        })
}

/// A node's refusal in Open311's error form, with `Retry-After` kept.
fn problem(fmt: Format, p: &Problem) -> Response {
    let mut resp = error(fmt, p.http_status(), p.detail.clone());
    if let Some(secs) = p.retry_after_secs() {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    resp
}

/// The category table as Open311 services; emergencies first, marked in
/// `keywords`, `group` and `description`.
fn services(door: &Door) -> Value {
    let cats = door.categories();
    let emergency = cats.emergencies().map(|c| (c, true));
    let ordinary = cats.ordinary().map(|c| (c, false));
    let list: Vec<Value> = emergency
        .chain(ordinary)
        .map(|(code, urgent)| {
            let (zh, en) = crate::labels::category(code);
            let description = if urgent {
                format!("{en} {zh}. Emergency: admitted ahead of everything else under overload.")
            } else {
                format!("{en} {zh}.")
            };
            let (keywords, group) = if urgent {
                ("emergency,紧急", "emergency")
            } else {
                ("", "ordinary")
            };
            json!({
                "service_code": code,
                "service_name": en,
                "description": description,
                "metadata": true,
                "type": "realtime",
                "keywords": keywords,
                "group": group,
            })
        })
        .collect();
    Value::Array(list)
}
