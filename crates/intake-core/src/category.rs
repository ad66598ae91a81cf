//! The category table: which complaint categories are emergencies.
//!
//! Under overload a node admits emergencies ahead of everything else and sheds
//! ordinary complaints first, so a flood report is not crowded out by the
//! noise complaints of a busy evening. Categories missing from the table are
//! ordinary: an adapter with a new category is served, never refused for it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The default table: the emergencies of the brief, and common ordinary ones.
pub const DEFAULT_CSV: &str = include_str!("../data/categories.csv");

/// Admission class of a complaint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    Emergency,
    Ordinary,
}

impl Priority {
    /// The class as metric labels and reports spell it.
    pub fn label(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::Ordinary => "ordinary",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CategoryError {
    #[error("category table line {line}: {reason}")]
    Line { line: usize, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryTable {
    emergency: BTreeMap<String, bool>,
}

impl Default for CategoryTable {
    fn default() -> Self {
        // The embedded table is checked by a unit test, so this cannot fail.
        Self::from_csv(DEFAULT_CSV).unwrap_or_else(|_| Self {
            emergency: BTreeMap::new(),
        })
    }
}

impl CategoryTable {
    /// Parses `name,emergency` lines (`true`/`false`); `#` starts a comment
    /// line and a first line starting with `name` is a header.
    pub fn from_csv(text: &str) -> Result<Self, CategoryError> {
        let mut emergency = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') || raw.starts_with("name,") {
                continue;
            }
            let err = |reason: String| CategoryError::Line { line, reason };
            let cols: Vec<&str> = raw.split(',').map(str::trim).collect();
            let [name, flag] = cols[..] else {
                return Err(err(format!(
                    "expected 2 columns (name,emergency), found {}",
                    cols.len()
                )));
            };
            if name.is_empty() {
                return Err(err("empty category name".into()));
            }
            let flag = match flag {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                other => return Err(err(format!("emergency must be true or false, not {other:?}"))),
            };
            if emergency.insert(name.to_string(), flag).is_some() {
                return Err(err(format!("category {name:?} listed twice")));
            }
        }
        Ok(Self { emergency })
    }

    pub fn priority(&self, category: &str) -> Priority {
        if self.emergency.get(category).copied().unwrap_or(false) {
            Priority::Emergency
        } else {
            Priority::Ordinary
        }
    }

    /// Emergency categories, in name order.
    pub fn emergencies(&self) -> impl Iterator<Item = &str> {
        self.emergency
            .iter()
            .filter(|(_, e)| **e)
            .map(|(n, _)| n.as_str())
    }

    /// Ordinary categories listed in the table, in name order.
    pub fn ordinary(&self) -> impl Iterator<Item = &str> {
        self.emergency
            .iter()
            .filter(|(_, e)| !**e)
            .map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_parses_with_the_brief_emergencies() {
        let t = CategoryTable::from_csv(DEFAULT_CSV).unwrap();
        let e: Vec<&str> = t.emergencies().collect();
        assert_eq!(
            e,
            [
                "building_collapse",
                "epidemic",
                "fire",
                "flood",
                "gas_leak",
                "power_outage",
                "water_outage",
                "waterlogging"
            ]
        );
        assert_eq!(t.priority("flood"), Priority::Emergency);
        assert_eq!(t.priority("noise"), Priority::Ordinary);
        assert_eq!(t.priority("never-heard-of"), Priority::Ordinary);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = CategoryTable::from_csv("name,emergency\nflood,maybe\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "category table line 2: emergency must be true or false, not \"maybe\""
        );
        let e = CategoryTable::from_csv("fire\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = CategoryTable::from_csv("fire,true\nfire,false\n").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }
}
