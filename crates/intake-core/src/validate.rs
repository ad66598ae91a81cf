//! Validation of complaints at the door, before anything is proposed. Every
//! problem is reported as a field violation (gRPC's `BadRequest`), all at once,
//! so an adapter can fix its mapping in one go.

use crate::{Complaint, DistrictTable};

/// One problem with one field, named by its protobuf path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Size limits. The whole-complaint bound keeps a Raft entry well below
/// sled's blob threshold (segment_size / 4), above which pages go to unsynced
/// files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_text_bytes: usize,
    pub max_key_bytes: usize,
    pub max_short_field_bytes: usize,
    pub max_address_bytes: usize,
    pub max_contact_bytes: usize,
    pub max_attachments: usize,
    pub max_url_bytes: usize,
    pub max_complaint_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_bytes: 8 * 1024,
            max_key_bytes: 128,
            max_short_field_bytes: 64,
            max_address_bytes: 512,
            max_contact_bytes: 256,
            max_attachments: 10,
            max_url_bytes: 2048,
            max_complaint_bytes: 16 * 1024,
        }
    }
}

fn check_len(v: &mut Vec<FieldViolation>, field: &str, value: &str, max: usize) {
    if value.len() > max {
        v.push(FieldViolation {
            field: field.to_string(),
            description: format!("is {} bytes, more than the limit of {max}", value.len()),
        });
    }
}

fn check_required(v: &mut Vec<FieldViolation>, field: &str, value: &str) {
    if value.trim().is_empty() {
        v.push(FieldViolation {
            field: field.to_string(),
            description: "must not be empty".to_string(),
        });
    }
}

fn check_token(v: &mut Vec<FieldViolation>, field: &str, value: &str) {
    if value.chars().any(|c| c.is_control()) {
        v.push(FieldViolation {
            field: field.to_string(),
            description: "must not contain control characters".to_string(),
        });
    }
}

/// Returns every violation in `c`, or `Ok` if there is none.
pub fn validate_complaint(
    c: &Complaint,
    districts: &DistrictTable,
    limits: &Limits,
) -> Result<(), Vec<FieldViolation>> {
    let mut v = Vec::new();

    check_required(&mut v, "idempotency_key", &c.idempotency_key);
    check_len(
        &mut v,
        "idempotency_key",
        &c.idempotency_key,
        limits.max_key_bytes,
    );
    check_token(&mut v, "idempotency_key", &c.idempotency_key);

    check_required(&mut v, "channel", &c.channel);
    check_len(&mut v, "channel", &c.channel, limits.max_short_field_bytes);
    check_token(&mut v, "channel", &c.channel);

    check_required(&mut v, "category", &c.category);
    check_len(&mut v, "category", &c.category, limits.max_short_field_bytes);
    check_token(&mut v, "category", &c.category);

    if c.district.trim().is_empty() {
        check_required(&mut v, "district_code", &c.district);
    } else if !districts.contains(&c.district) {
        let shown: String = c.district.chars().take(32).collect();
        v.push(FieldViolation {
            field: "district_code".to_string(),
            description: format!("unknown district {shown:?}: not in this cluster's district table"),
        });
    }

    check_required(&mut v, "text", &c.text);
    check_len(&mut v, "text", &c.text, limits.max_text_bytes);

    if let Some(loc) = &c.location {
        if !loc.lat.is_finite() || !(-90.0..=90.0).contains(&loc.lat) {
            v.push(FieldViolation {
                field: "location.lat".to_string(),
                description: format!("{} is not a latitude in [-90, 90]", loc.lat),
            });
        }
        if !loc.lon.is_finite() || !(-180.0..=180.0).contains(&loc.lon) {
            v.push(FieldViolation {
                field: "location.lon".to_string(),
                description: format!("{} is not a longitude in [-180, 180]", loc.lon),
            });
        }
        check_len(&mut v, "location.address", &loc.address, limits.max_address_bytes);
    }

    check_len(&mut v, "contact", &c.contact, limits.max_contact_bytes);

    if c.attachments.len() > limits.max_attachments {
        v.push(FieldViolation {
            field: "attachment_urls".to_string(),
            description: format!(
                "has {} URLs, more than the limit of {}",
                c.attachments.len(),
                limits.max_attachments
            ),
        });
    }
    for (i, url) in c.attachments.iter().enumerate() {
        let field = format!("attachment_urls[{i}]");
        check_len(&mut v, &field, url, limits.max_url_bytes);
        let lower = url.to_ascii_lowercase();
        let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://");
        if !scheme_ok || url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            v.push(FieldViolation {
                field,
                description: "must be an http or https URL".to_string(),
            });
        }
    }

    let size = c.approx_bytes();
    if size > limits.max_complaint_bytes {
        v.push(FieldViolation {
            field: "complaint".to_string(),
            description: format!(
                "is about {size} bytes, more than the limit of {}",
                limits.max_complaint_bytes
            ),
        });
    }

    if v.is_empty() { Ok(()) } else { Err(v) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Location;

    fn good() -> Complaint {
        Complaint {
            idempotency_key: "k-1".into(),
            channel: "phone".into(),
            district: "110105".into(),
            category: "noise".into(),
            text: "Loud construction at night".into(),
            location: Some(Location {
                lat: 39.92,
                lon: 116.44,
                address: "Chaoyang Rd 1".into(),
            }),
            contact: String::new(),
            reported_at: Some(1_700_000_000_000),
            attachments: vec!["https://example.org/a.jpg".into()],
        }
    }

    fn fields(c: &Complaint) -> Vec<String> {
        match validate_complaint(c, &DistrictTable::beijing(), &Limits::default()) {
            Ok(()) => vec![],
            Err(v) => v.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn good_passes() {
        assert!(fields(&good()).is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut Complaint)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("idempotency_key", Box::new(|c| c.idempotency_key.clear())),
            (
                "idempotency_key",
                Box::new(|c| c.idempotency_key = "x".repeat(200)),
            ),
            ("channel", Box::new(|c| c.channel = " ".into())),
            ("category", Box::new(|c| c.category.clear())),
            ("district_code", Box::new(|c| c.district = "999999".into())),
            ("district_code", Box::new(|c| c.district.clear())),
            ("text", Box::new(|c| c.text.clear())),
            ("text", Box::new(|c| c.text = "a".repeat(9000))),
            (
                "location.lat",
                Box::new(|c| c.location.as_mut().unwrap().lat = 91.0),
            ),
            (
                "location.lat",
                Box::new(|c| c.location.as_mut().unwrap().lat = f64::NAN),
            ),
            (
                "location.lon",
                Box::new(|c| c.location.as_mut().unwrap().lon = -181.0),
            ),
            (
                "attachment_urls[0]",
                Box::new(|c| c.attachments[0] = "ftp://x".into()),
            ),
            (
                "attachment_urls",
                Box::new(|c| c.attachments = vec!["https://a".into(); 11]),
            ),
            (
                "complaint",
                Box::new(|c| c.attachments = vec!["https://".to_string() + &"a".repeat(2000); 9]),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = good();
            mutate(&mut c);
            let got = fields(&c);
            assert!(got.iter().any(|f| f == field), "expected {field}, got {got:?}");
        }
    }

    #[test]
    fn reports_all_problems_at_once() {
        let mut c = good();
        c.text.clear();
        c.district = "nowhere".into();
        assert_eq!(fields(&c), vec!["district_code".to_string(), "text".to_string()]);
    }
}
