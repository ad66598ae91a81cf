//! The citizen web page: `/` (the form, which posts to `/v1/complaints` from
//! the browser with its own idempotency key) and `/t/{id}` (a ticket and its
//! status history, rendered here so it reads without JavaScript).
//! Everything is embedded in the binary; no build step, no external assets.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use intake_proto::pb;

use crate::Door;
use crate::json::{rfc3339, status_name};

const INDEX: &str = include_str!("../assets/index.html");
const TICKET: &str = include_str!("../assets/ticket.html");
const STYLE: &str = include_str!("../assets/style.css");

/// `GET /`.
pub async fn index(State(door): State<Arc<Door>>) -> Response {
    let districts: String = door
        .districts()
        .iter()
        .map(|d| {
            format!(
                "    <option value=\"{}\">{} {}</option>\n",
                esc(&d.code),
                esc(&d.name_zh),
                esc(&d.name_en)
            )
        })
        .collect();
    let cats = door.categories();
    let categories: String = cats
        .emergencies()
        .chain(cats.ordinary())
        .map(|c| {
            let (zh, en) = crate::labels::category(c);
            format!(
                "    <option value=\"{}\">{} {}</option>\n",
                esc(c),
                esc(zh),
                esc(en)
            )
        })
        .collect();
    let page = INDEX
        .replace("{{STYLE}}", STYLE)
        .replace("{{DISTRICT_OPTIONS}}", &districts)
        .replace("{{CATEGORY_OPTIONS}}", &categories);
    html(StatusCode::OK, page)
}

/// `GET /t?id=…` (the look-up form) → `/t/{id}`.
pub async fn lookup_redirect(RawQuery(query): RawQuery) -> Response {
    let id = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let target = format!(
        "/t/{}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    (StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response()
}

/// `GET /t/{id}`.
pub async fn ticket_page(State(door): State<Arc<Door>>, id: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return page(
            StatusCode::BAD_REQUEST,
            "",
            "<p class=\"error\">这不是工单号。<span lang=\"en\">That is not a ticket number.</span></p>"
                .into(),
        );
    };
    match door.public_ticket(id.clone()).await {
        Ok(t) => page(StatusCode::OK, &id, ticket_body(&door, &t)),
        Err(p) if p.status == 404 || p.status == 400 => page(
            p.http_status(),
            &id,
            "<p class=\"error\" role=\"alert\">找不到这个工单，请核对工单号。<span lang=\"en\">No such ticket; please check the number.</span></p>".into(),
        ),
        Err(p) => page(
            p.http_status(),
            &id,
            format!(
                "<p class=\"error\" role=\"alert\">暂时无法查询，请稍后再试。<span lang=\"en\">Cannot look it up right now; please try again shortly.</span> ({})</p>",
                esc(&p.detail)
            ),
        ),
    }
}

fn ticket_body(door: &Door, t: &pb::Ticket) -> String {
    let c = t.complaint.clone().unwrap_or_default();
    let district = door
        .districts()
        .get(&c.district_code)
        .map(|d| format!("{} {}", d.name_zh, d.name_en))
        .unwrap_or_else(|| c.district_code.clone());
    let (zh, en) = crate::labels::category(&c.category);
    let mut rows = format!(
        "<tr><td>{}</td><td>{}</td><td></td></tr>\n",
        esc(&rfc3339(t.accepted_at.as_ref())),
        status_label(pb::TicketStatus::Received as i32)
    );
    for e in &t.history {
        let mut note = String::new();
        if !e.department.is_empty() {
            note.push_str(&esc(&e.department));
        }
        if !e.note.is_empty() {
            if !note.is_empty() {
                note.push_str(": ");
            }
            note.push_str(&esc(&e.note));
        }
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&rfc3339(e.recorded_at.as_ref())),
            status_label(e.status),
            note
        ));
    }
    format!(
        "<dl>\n<dt>状态 <span lang=\"en\">Status</span></dt><dd id=\"status\">{}</dd>\n\
         <dt>区 <span lang=\"en\">District</span></dt><dd>{}</dd>\n\
         <dt>类别 <span lang=\"en\">Category</span></dt><dd>{} {}</dd>\n\
         <dt>描述 <span lang=\"en\">Description</span></dt><dd id=\"text\">{}</dd>\n</dl>\n\
         <h2>进度 <span lang=\"en\">History</span></h2>\n\
         <table id=\"history\"><thead><tr><th>时间 <span lang=\"en\">Time (UTC)</span></th><th>状态 <span lang=\"en\">Status</span></th><th>说明 <span lang=\"en\">Note</span></th></tr></thead>\n<tbody>\n{}</tbody></table>",
        status_label(t.status),
        esc(&district),
        esc(zh),
        esc(en),
        esc(&c.text),
        rows
    )
}

/// `已受理 received`, ... for a status value.
fn status_label(v: i32) -> String {
    let name = status_name(v);
    let zh = match name {
        "received" => "已受理",
        "dispatched" => "已转办",
        "assigned" => "已派单",
        "resolved" => "已办结",
        "rejected" => "不予受理",
        _ => "未知",
    };
    format!("{zh} <span lang=\"en\">{name}</span>")
}

fn page(status: StatusCode, id: &str, body: String) -> Response {
    let page = TICKET
        .replace("{{STYLE}}", STYLE)
        .replace("{{TICKET_ID}}", &esc(id))
        .replace("{{BODY}}", &body);
    html(status, page)
}

fn html(status: StatusCode, page: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing on these pages comes from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; img-src 'self'",
            ),
        ],
        page,
    )
        .into_response()
}

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn pages_reference_nothing_outside() {
        for page in [INDEX, TICKET, STYLE] {
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "external reference"
            );
        }
    }
}
