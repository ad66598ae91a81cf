//! An Open311 `POST requests` form as an Intake complaint. The mapping table
//! is in README.md ("Open311 GeoReport v2").

use intake_core::CategoryTable;
use intake_proto::pb;
use sha2::{Digest, Sha256};

use crate::locate::Locator;

/// Channel recorded for complaints that came through Open311.
pub const CHANNEL: &str = "open311";

/// Why a form is not a complaint: Open311's error `description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormError(pub String);

/// The form's fields, in order; later duplicates of a key win.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The `api_key` field: the caller's token, on a node with `--auth`.
    pub fn api_key(&self) -> Option<&str> {
        self.get("api_key")
    }

    /// `service_code`: the category.
    pub fn service_code(&self) -> Option<&str> {
        self.get("service_code")
    }

    /// `attribute[name]`.
    fn attribute(&self, name: &str) -> Option<&str> {
        self.get(&format!("attribute[{name}]"))
    }

    /// The complaint this form describes; `key` is the client's
    /// `Idempotency-Key` header, if any.
    pub fn complaint(
        &self,
        key: Option<&str>,
        categories: &CategoryTable,
        locator: &Locator,
    ) -> Result<pb::Complaint, FormError> {
        let service_code = self
            .service_code()
            .ok_or_else(|| FormError("service_code is required (see services.json)".into()))?;
        if !known_service(categories, service_code) {
            return Err(FormError(format!(
                "service_code {service_code:?} is not one of this server's services (see services.json)"
            )));
        }
        let lat = self.number("lat")?;
        let lon = self.number("long")?;
        let point = match (lat, lon) {
            (Some(lat), Some(lon)) => Some((lat, lon)),
            (None, None) => None,
            _ => return Err(FormError("lat and long must be given together".into())),
        };
        let address = self.get("address_string").unwrap_or("");
        let district = self
            .attribute("district")
            .map(str::to_string)
            .or_else(|| point.and_then(|(lat, lon)| locator.by_point(lat, lon)).map(str::to_string))
            .or_else(|| locator.by_address(address).map(str::to_string))
            .ok_or_else(|| {
                FormError(
                    "cannot tell the district: send attribute[district] (a code from services/{service_code}.json), a lat/long inside the city, or an address_string naming the district"
                        .into(),
                )
            })?;
        let location = (point.is_some() || !address.is_empty()).then(|| {
            let (lat, lon) = point.unwrap_or((0.0, 0.0));
            pb::Location {
                lat,
                lon,
                address: address.to_string(),
            }
        });
        Ok(pb::Complaint {
            idempotency_key: self.key(key),
            channel: CHANNEL.to_string(),
            district_code: district,
            category: service_code.to_string(),
            text: self.get("description").unwrap_or("").to_string(),
            location,
            contact: self.contact(),
            reported_at: None,
            attachment_urls: self
                .get("media_url")
                .map(|u| vec![u.to_string()])
                .unwrap_or_default(),
        })
    }

    fn number(&self, key: &str) -> Result<Option<f64>, FormError> {
        self.get(key)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| FormError(format!("{key} {v:?} is not a number of degrees")))
            })
            .transpose()
    }

    /// `first last <email> phone`, whichever parts were given.
    fn contact(&self) -> String {
        let name = [self.get("first_name"), self.get("last_name")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let mut parts = Vec::new();
        if !name.is_empty() {
            parts.push(name);
        }
        if let Some(email) = self.get("email") {
            parts.push(format!("<{email}>"));
        }
        if let Some(phone) = self.get("phone") {
            parts.push(phone.to_string());
        }
        parts.join(" ")
    }

    /// Open311 has no idempotency key, yet its clients retry a POST whose
    /// answer was lost. The key is, in order: the `Idempotency-Key` header;
    /// FixMyStreet's own report id (`attribute[fixmystreet_id]`); else a
    /// digest of the whole form but `api_key`, so the same report sent
    /// again finds its ticket, and two identical reports (same text, place
    /// and contact) are taken for one.
    fn key(&self, header: Option<&str>) -> String {
        if let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) {
            return h.to_string();
        }
        if let Some(id) = self.attribute("fixmystreet_id") {
            return format!("open311-fms-{id}");
        }
        let mut fields: Vec<&(String, String)> = self.0.iter().filter(|(k, _)| k != "api_key").collect();
        fields.sort();
        let mut h = Sha256::new();
        for (k, v) in fields {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.trim().as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("open311-{hex}")
    }
}

/// Whether the category table lists `code` (as emergency or ordinary).
pub fn known_service(categories: &CategoryTable, code: &str) -> bool {
    categories
        .emergencies()
        .chain(categories.ordinary())
        .any(|c| c == code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::DistrictTable;

    fn complaint(body: &str) -> Result<pb::Complaint, FormError> {
        let locator = Locator::for_table(&DistrictTable::beijing());
        Form::parse(body.as_bytes()).complaint(None, &CategoryTable::default(), &locator)
    }

    #[test]
    fn fixmystreet_shaped_form_maps_to_a_complaint() {
        let c = complaint(
            "api_key=k&service_code=noise&lat=39.909&long=116.461&address_string=Guomao&description=Drilling+at+night&email=li%40example.cn&first_name=Li&last_name=Wei&phone=138&attribute%5Bfixmystreet_id%5D=42",
        )
        .unwrap();
        assert_eq!(c.category, "noise");
        assert_eq!(c.district_code, "110105");
        assert_eq!(c.text, "Drilling at night");
        assert_eq!(c.contact, "Li Wei <li@example.cn> 138");
        assert_eq!(c.idempotency_key, "open311-fms-42");
        assert_eq!(c.channel, "open311");
    }

    #[test]
    fn the_same_form_makes_the_same_key_whatever_the_api_key() {
        let a = complaint("api_key=1&service_code=noise&attribute[district]=110101&description=x").unwrap();
        let b = complaint("service_code=noise&description=x&attribute[district]=110101&api_key=2").unwrap();
        let c = complaint("service_code=noise&description=y&attribute[district]=110101").unwrap();
        assert_eq!(a.idempotency_key, b.idempotency_key);
        assert_ne!(a.idempotency_key, c.idempotency_key);
    }

    #[test]
    fn missing_or_bad_fields_are_errors() {
        assert!(complaint("description=x").is_err());
        assert!(complaint("service_code=nosuch&attribute[district]=110101").is_err());
        assert!(complaint("service_code=noise&lat=abc&long=1").is_err());
        assert!(complaint("service_code=noise&lat=39.9").is_err());
        assert!(
            complaint("service_code=noise&lat=31.2&long=121.5").is_err(),
            "Shanghai"
        );
        assert!(complaint("service_code=noise&lat=inf&long=1").is_err());
    }
}
