//! The `--auth` file: tokens (as SHA-256 hashes, so the file does not hold
//! them), each with a name, a role, the channels an adapter may submit for,
//! and an optional rate limit.
//!
//! ```toml
//! [[token]]
//! name = "call-centre"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! role = "adapter"
//! channels = ["phone"]
//! rate_per_second = 200   # optional: calls per second, burst of one second
//!
//! # Optional: callers without any token may submit for these channels, at
//! # this rate (shared by all of them, per node): a city's public web form.
//! [public]
//! channels = ["web"]
//! rate_per_second = 20
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::limit::Bucket;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Adapter,
    Downstream,
    Ops,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Adapter => "adapter",
            Role::Downstream => "downstream",
            Role::Ops => "ops",
        }
    }
}

/// One token's holder. Never holds the token.
#[derive(Debug)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub channels: BTreeSet<String>,
    pub(super) limit: Option<Bucket>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
    public: Option<Public>,
}

/// What callers without a token may do: submit for `channels`, all of them
/// together at `rate_per_second` (required: an open door needs a bound).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Public {
    channels: Vec<String>,
    rate_per_second: f64,
}

/// The name the `[public]` entry's callers go by in refusals and logs.
pub const PUBLIC_NAME: &str = "public";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: String,
    role: Role,
    #[serde(default)]
    channels: Vec<String>,
    rate_per_second: Option<f64>,
}

/// The tokens a node accepts, by hash.
#[derive(Debug, Default)]
pub struct AuthTable {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
    /// Callers without a token, if the file has a `[public]` entry: an
    /// adapter of its channels, under one shared rate limit.
    public: Option<Arc<Principal>>,
}

fn bucket(at: &str, rate: Option<f64>) -> Result<Option<Bucket>, String> {
    match rate {
        None => Ok(None),
        Some(r) if r.is_finite() && r > 0.0 => Ok(Some(Bucket::new(r))),
        Some(r) => Err(format!(
            "{at}: rate_per_second must be a positive number, not {r}"
        )),
    }
}

/// The hex SHA-256 of a token, as the `--auth` file holds it
/// (`intake auth hash-token`).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl AuthTable {
    pub fn load(path: &Path) -> Result<AuthTable, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| AuthError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses the file's text; the error names the entry at fault.
    pub fn parse(text: &str) -> Result<AuthTable, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for (i, e) in file.token.into_iter().enumerate() {
            let at = format!("token #{} ({:?})", i + 1, e.name);
            if e.name.trim().is_empty() {
                return Err(format!("token #{}: name is empty", i + 1));
            }
            let hash = parse_hash(&e.sha256)
                .ok_or_else(|| format!("{at}: sha256 must be 64 hex digits (intake auth hash-token)"))?;
            if e.role == Role::Adapter && e.channels.is_empty() {
                return Err(format!(
                    "{at}: an adapter token needs the channels it may submit for"
                ));
            }
            if e.role != Role::Adapter && !e.channels.is_empty() {
                return Err(format!("{at}: channels apply to adapter tokens only"));
            }
            let limit = bucket(&at, e.rate_per_second)?;
            let principal = Principal {
                name: e.name,
                role: e.role,
                channels: e.channels.into_iter().collect(),
                limit,
            };
            if by_hash.insert(hash, Arc::new(principal)).is_some() {
                return Err(format!("{at}: the same token hash appears twice"));
            }
        }
        let public = match file.public {
            None => None,
            Some(p) if p.channels.is_empty() => {
                return Err(
                    "[public]: channels must name the channels callers without a token may submit for".into(),
                );
            }
            Some(p) => Some(Arc::new(Principal {
                name: PUBLIC_NAME.to_string(),
                role: Role::Adapter,
                channels: p.channels.into_iter().collect(),
                limit: bucket("[public]", Some(p.rate_per_second))?,
            })),
        };
        Ok(AuthTable { by_hash, public })
    }

    /// Who a caller without a token is, if the file lets such callers in.
    pub fn public(&self) -> Option<Arc<Principal>> {
        self.public.clone()
    }

    /// The holder of `token`, if it is one of ours.
    pub fn find(&self, token: &str) -> Option<Arc<Principal>> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(extra: &str) -> String {
        format!(
            "[[token]]\nname = \"a\"\nsha256 = \"{}\"\n{extra}\n",
            hash_token("secret")
        )
    }

    #[test]
    fn tokens_are_found_by_hash_only() {
        let t = AuthTable::parse(&entry("role = \"adapter\"\nchannels = [\"phone\"]")).unwrap();
        let p = t.find("secret").unwrap();
        assert_eq!(p.role, Role::Adapter);
        assert!(p.channels.contains("phone"));
        assert!(t.find("Secret").is_none());
        assert!(t.find("").is_none());
    }

    #[test]
    fn bad_files_name_the_fault() {
        for (text, says) in [
            (entry("role = \"adapter\""), "needs the channels"),
            (entry("role = \"ops\"\nchannels = [\"x\"]"), "adapter tokens only"),
            (entry("role = \"root\""), "unknown variant"),
            (entry("role = \"ops\"\nrate_per_second = 0"), "positive"),
            (entry("role = \"ops\"\nrate_per_second = nan"), "positive"),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"xyz\"\nrole = \"ops\"".to_string(),
                "64 hex",
            ),
            (
                format!("{}{}", entry("role = \"ops\""), entry("role = \"ops\"")),
                "twice",
            ),
            (entry("role = \"ops\"\ntoken = \"plain\""), "unknown field"),
        ] {
            let err = AuthTable::parse(&text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_public_entry_is_an_adapter_of_its_channels_with_a_rate() {
        let t = AuthTable::parse("[public]\nchannels = [\"web\"]\nrate_per_second = 5").unwrap();
        let p = t.public().unwrap();
        assert_eq!((p.name.as_str(), p.role), (PUBLIC_NAME, Role::Adapter));
        assert!(p.channels.contains("web") && p.limit.is_some());
        assert!(AuthTable::parse("").unwrap().public().is_none());
        for (text, says) in [
            (
                "[public]\nchannels = [\"web\"]",
                "missing field `rate_per_second`",
            ),
            (
                "[public]\nchannels = []\nrate_per_second = 5",
                "channels must name",
            ),
            ("[public]\nchannels = [\"web\"]\nrate_per_second = 0", "positive"),
        ] {
            let err = AuthTable::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
