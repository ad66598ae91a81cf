//! Open311's two formats. Every answer is built once as JSON values and
//! rendered as JSON or as the spec's XML (`<services><service>…`), so the two
//! cannot drift apart.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The format a path asks for: `requests.json`, `requests.xml`, or XML by
/// default (`requests`), as the spec says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// Splits `name.ext` into the name and its format; `None` for an unknown
/// extension.
pub fn split(file: &str) -> Option<(&str, Format)> {
    match file.rsplit_once('.') {
        None => Some((file, Format::Xml)),
        Some((name, "json")) => Some((name, Format::Json)),
        Some((name, "xml")) => Some((name, Format::Xml)),
        Some(_) => None,
    }
}

/// The document's root element and each list item's, for XML.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub root: &'static str,
    /// `Some(item)`: the value is a list of `<item>`s; `None`: one object.
    pub item: Option<&'static str>,
}

pub const SERVICES: Shape = Shape {
    root: "services",
    item: Some("service"),
};
pub const SERVICE_DEFINITION: Shape = Shape {
    root: "service_definition",
    item: None,
};
pub const REQUESTS: Shape = Shape {
    root: "service_requests",
    item: Some("request"),
};
pub const ERRORS: Shape = Shape {
    root: "errors",
    item: Some("error"),
};

/// `value` in `format`, with `status`.
pub fn render(format: Format, shape: Shape, status: StatusCode, value: &Value) -> Response {
    match format {
        Format::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            value.to_string(),
        )
            .into_response(),
        Format::Xml => (
            status,
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            to_xml(shape, value),
        )
            .into_response(),
    }
}

/// Open311's error list, `[{code, description}]`, with the HTTP status.
pub fn error(format: Format, status: StatusCode, description: impl Into<String>) -> Response {
    let body = serde_json::json!([{ "code": status.as_u16(), "description": description.into() }]);
    render(format, ERRORS, status, &body)
}

fn to_xml(shape: Shape, value: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    open(&mut out, shape.root);
    match (shape.item, value) {
        (Some(item), Value::Array(items)) => {
            for v in items {
                element(&mut out, item, v);
            }
        }
        (_, v) => children(&mut out, v),
    }
    close(&mut out, shape.root);
    out
}

/// `<tag>value</tag>`; a list becomes repeated singular children
/// (`attributes` → `<attributes><attribute>…</attribute></attributes>`).
fn element(out: &mut String, tag: &str, v: &Value) {
    open(out, tag);
    match v {
        Value::Array(items) => {
            let item = tag.strip_suffix('s').unwrap_or(tag);
            for i in items {
                element(out, item, i);
            }
        }
        other => children(out, other),
    }
    close(out, tag);
}

fn children(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => escape(out, s),
        Value::Object(map) => {
            for (k, v) in map {
                element(out, k, v);
            }
        }
        Value::Array(items) => {
            for i in items {
                children(out, i);
            }
        }
    }
}

fn open(out: &mut String, tag: &str) {
    out.push('<');
    out.push_str(tag);
    out.push('>');
}

fn close(out: &mut String, tag: &str) {
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

/// Text content, escaped; characters XML 1.0 cannot carry at all (most C0
/// controls) are dropped rather than making the document unparseable.
fn escape(out: &mut String, s: &str) {
    let allowed: String = s
        .chars()
        .filter(|c| {
            matches!(c, '\t' | '\n' | '\r') || !((*c as u32) < 0x20 || *c == '\u{FFFE}' || *c == '\u{FFFF}')
        })
        .collect();
    out.push_str(&crate::web::esc(&allowed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_come_from_the_extension_xml_by_default() {
        assert_eq!(split("services.json"), Some(("services", Format::Json)));
        assert_eq!(split("services.xml"), Some(("services", Format::Xml)));
        assert_eq!(split("services"), Some(("services", Format::Xml)));
        assert_eq!(split("services.yaml"), None);
    }

    #[test]
    fn xml_nests_lists_and_escapes_text() {
        let v = json!([{ "service_code": "a<b", "attributes": [{ "code": "district" }], "x": null }]);
        let xml = to_xml(SERVICES, &v);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><services><service><attributes><attribute><code>district</code></attribute></attributes><service_code>a&lt;b</service_code><x></x></service></services>"
        );
        let xml = to_xml(ERRORS, &json!([{ "code": 400, "description": "bad\u{1}" }]));
        assert!(xml.contains("<error><code>400</code><description>bad</description></error>"));
    }
}
