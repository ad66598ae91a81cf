//! The district table: which district codes exist, with the population that
//! weights synthetic load and shard placement. Beijing's 16 districts (2020
//! census) ship as the default; other cities load their own CSV.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Beijing's districts, GB/T 2260 codes, 2020 census population.
pub const BEIJING_CSV: &str = include_str!("../data/beijing-districts.csv");

/// Approximate centre of each Beijing district (`code,lat,lon`), for placing
/// a reported point in a district (Open311's `lat`/`long`).
pub const BEIJING_CENTROIDS_CSV: &str = include_str!("../data/beijing-district-centroids.csv");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct District {
    pub code: String,
    pub name_zh: String,
    pub name_en: String,
    pub population: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistrictError {
    #[error("district table line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("district table has no districts")]
    Empty,
}

/// Districts by code, in code order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistrictTable {
    districts: BTreeMap<String, District>,
}

impl DistrictTable {
    /// Beijing's 16 districts.
    pub fn beijing() -> Self {
        // The embedded table is checked by a unit test, so this cannot fail.
        Self::from_csv(BEIJING_CSV).unwrap_or_else(|_| Self {
            districts: BTreeMap::new(),
        })
    }

    /// Parses `code,name_zh,name_en,population` with a header line.
    pub fn from_csv(text: &str) -> Result<Self, DistrictError> {
        let mut districts = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') || (line == 1 && raw.starts_with("code")) {
                continue;
            }
            let cols: Vec<&str> = raw.split(',').map(str::trim).collect();
            let err = |reason: String| DistrictError::Line { line, reason };
            if cols.len() != 4 {
                return Err(err(format!(
                    "expected 4 columns (code,name_zh,name_en,population), found {}",
                    cols.len()
                )));
            }
            let code = cols[0];
            if code.is_empty() || code.len() > 16 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(err(format!("code {code:?} must be 1-16 letters or digits")));
            }
            let population = cols[3]
                .parse::<u64>()
                .map_err(|_| err(format!("population {:?} is not a whole number", cols[3])))?;
            let d = District {
                code: code.to_string(),
                name_zh: cols[1].to_string(),
                name_en: cols[2].to_string(),
                population,
            };
            if districts.insert(d.code.clone(), d).is_some() {
                return Err(err(format!("code {code} appears twice")));
            }
        }
        if districts.is_empty() {
            return Err(DistrictError::Empty);
        }
        Ok(Self { districts })
    }

    pub fn get(&self, code: &str) -> Option<&District> {
        self.districts.get(code)
    }

    pub fn contains(&self, code: &str) -> bool {
        self.districts.contains_key(code)
    }

    pub fn iter(&self) -> impl Iterator<Item = &District> {
        self.districts.values()
    }

    pub fn len(&self) -> usize {
        self.districts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.districts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_has_16() {
        let t = DistrictTable::from_csv(BEIJING_CSV).unwrap();
        assert_eq!(t.len(), 16);
        assert_eq!(t.get("110109").unwrap().name_en, "Mentougou");
        assert_eq!(DistrictTable::beijing(), t);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = DistrictTable::from_csv("code,a,b,c\n1,x,y,2\n2,x,y\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "district table line 3: expected 4 columns (code,name_zh,name_en,population), found 3"
        );
        let e = DistrictTable::from_csv("1,x,y,many\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(DistrictTable::from_csv("1,x,y,2\n1,x,y,3").is_err());
        assert_eq!(DistrictTable::from_csv("code,a,b,c\n"), Err(DistrictError::Empty));
    }
}
