//! Client API keys: generation from the OS CSPRNG, SHA-256 hashing, constant-time comparison, and
//! the management operations (create, list, revoke) shared by `lqo keys` and the admin routes.
//! Every create and revoke leaves an `audit_log` row.

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::{valid_key_name, SCOPE_NAMES};
use crate::store::keys::{AuditEntry, CreateKeyError, NewKey, StoredKey};
use crate::store::{KeyStore, StoreError};

/// Every generated key starts with this, so scanners and humans recognise it.
pub const KEY_PREFIX: &str = "lqo_";
/// Random characters after `lqo_`: 43 base62 characters ≈ 256 bits.
pub const KEY_RANDOM_CHARS: usize = 43;
/// Characters of the key kept in clear (`lqo_` + 8) to find its row and show it in listings.
pub const STORED_PREFIX_LEN: usize = 12;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new random key, `lqo_` + 43 base62 characters drawn uniformly from the OS CSPRNG.
pub fn generate_key() -> String {
    let mut rng = OsRng;
    let mut key = String::with_capacity(KEY_PREFIX.len() + KEY_RANDOM_CHARS);
    key.push_str(KEY_PREFIX);
    for _ in 0..KEY_RANDOM_CHARS {
        // gen_range is unbiased (rejection sampling), so every character carries log2(62) bits.
        key.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    key
}

/// SHA-256 of the key's bytes.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn hash_key_hex(key: &str) -> String {
    hex::encode(hash_key(key))
}

/// Constant-time equality of two hashes (`subtle`): the time taken does not depend on where
/// they first differ.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Parses a stored or configured hex hash; `None` if it is not 64 hex digits.
pub fn parse_hash_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

/// The part of a presented key used to find its row; `None` if the key is too short to be ours.
pub fn lookup_prefix(key: &str) -> Option<&str> {
    if key.len() < STORED_PREFIX_LEN || !key.is_char_boundary(STORED_PREFIX_LEN) {
        return None;
    }
    Some(&key[..STORED_PREFIX_LEN])
}

/// Parses a comma-separated scope list; every entry must be a known scope.
pub fn parse_scopes(s: &str) -> Result<Vec<String>, String> {
    let scopes: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    check_scopes(&scopes)?;
    Ok(scopes)
}

pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    if scopes.is_empty() {
        return Err(format!(
            "at least one scope is needed; known: {}",
            SCOPE_NAMES.join(", ")
        ));
    }
    if let Some(bad) = scopes.iter().find(|s| !SCOPE_NAMES.contains(&s.as_str())) {
        return Err(format!(
            "unknown scope {bad:?}; known: {}",
            SCOPE_NAMES.join(", ")
        ));
    }
    Ok(())
}

/// A key just created: the only moment its clear text exists outside the client.
#[derive(Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub name: String,
    /// The key itself. Shown once; only its SHA-256 is stored.
    pub key: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("name", &self.name)
            .field("key", &"***")
            .field("prefix", &self.prefix)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    #[error("invalid key name {0:?}: use letters, digits and . _ - (max 64), not \"anonymous\"")]
    InvalidName(String),
    #[error("{0}")]
    InvalidScopes(String),
    #[error("the expiry {0} is in the past")]
    ExpiryInPast(DateTime<Utc>),
    #[error("a key named {0:?} is declared in the config file (auth.keys); pick another name")]
    DeclaredInConfig(String),
    #[error("a live key named {0:?} already exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error("no live key named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a key, stores its hash and prefix, and audits the creation under `actor`.
/// `config_names` are the names declared in the config file, which a stored key may not reuse.
pub async fn create_key(
    store: &dyn KeyStore,
    config_names: &[String],
    name: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
    actor: &str,
) -> Result<CreatedKey, KeyAdminError> {
    if !valid_key_name(name) {
        return Err(KeyAdminError::InvalidName(name.to_string()));
    }
    check_scopes(scopes).map_err(KeyAdminError::InvalidScopes)?;
    let mut unique: Vec<String> = Vec::with_capacity(scopes.len());
    for s in scopes {
        if !unique.contains(s) {
            unique.push(s.clone());
        }
    }
    let scopes = unique.as_slice();
    let now = Utc::now();
    if let Some(t) = expires_at {
        if t <= now {
            return Err(KeyAdminError::ExpiryInPast(t));
        }
    }
    if config_names.iter().any(|n| n == name) {
        return Err(KeyAdminError::DeclaredInConfig(name.to_string()));
    }
    let key = generate_key();
    let key_hash = hash_key_hex(&key);
    let prefix = key[..STORED_PREFIX_LEN].to_string();
    let new = NewKey {
        name,
        prefix: &prefix,
        key_hash: &key_hash,
        scopes,
        created_at: now,
        expires_at,
    };
    store.insert_api_key(&new).await.map_err(|e| match e {
        CreateKeyError::NameTaken(n) => KeyAdminError::NameTaken(n),
        CreateKeyError::Store(s) => KeyAdminError::Store(s),
    })?;
    audit(
        store,
        actor,
        "key.create",
        Some(name),
        serde_json::json!({"prefix": prefix, "scopes": scopes, "expires_at": expires_at}),
    )
    .await?;
    Ok(CreatedKey {
        name: name.to_string(),
        key,
        prefix,
        scopes: scopes.to_vec(),
        created_at: now,
        expires_at,
    })
}

/// Revokes the live key of that name and audits it.
pub async fn revoke_key(
    store: &dyn KeyStore,
    name: &str,
    actor: &str,
) -> Result<StoredKey, KeyAdminError> {
    let revoked = store
        .revoke_api_key(name, Utc::now())
        .await?
        .ok_or_else(|| KeyAdminError::NotFound(name.to_string()))?;
    audit(
        store,
        actor,
        "key.revoke",
        Some(name),
        serde_json::json!({"prefix": revoked.prefix}),
    )
    .await?;
    Ok(revoked)
}

/// Appends an audit row now.
pub async fn audit(
    store: &dyn KeyStore,
    actor: &str,
    action: &str,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    store
        .insert_audit(&AuditEntry {
            created_at: Utc::now(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.map(str::to_string),
            details,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_long_and_distinct() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.starts_with("lqo_"));
        assert_eq!(a.len(), 4 + KEY_RANDOM_CHARS);
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(lookup_prefix(&a), Some(&a[..12]));
        assert_eq!(lookup_prefix("short"), None);
        assert_eq!(
            lookup_prefix("aéééééééé"),
            None,
            "byte 12 is inside a character"
        );
    }

    #[test]
    fn hashing_and_constant_time_comparison() {
        let h = hash_key("lqo_x");
        assert_eq!(hex::encode(h), hash_key_hex("lqo_x"));
        assert_eq!(parse_hash_hex(&hash_key_hex("lqo_x")), Some(h));
        assert_eq!(parse_hash_hex("zz"), None);
        assert!(hashes_equal(&h, &hash_key("lqo_x")));
        assert!(!hashes_equal(&h, &hash_key("lqo_y")));
        // Known vector: sha256("abc").
        assert_eq!(
            hash_key_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn scopes_are_checked() {
        assert_eq!(
            parse_scopes("chat, logs:read").unwrap(),
            vec!["chat", "logs:read"]
        );
        assert!(parse_scopes("chat,root").unwrap_err().contains("root"));
        assert!(parse_scopes("").is_err());
    }

    #[test]
    fn created_key_debug_hides_the_key() {
        let k = CreatedKey {
            name: "n".into(),
            key: "lqo_supersecret".into(),
            prefix: "lqo_supersec".into(),
            scopes: vec![],
            created_at: Utc::now(),
            expires_at: None,
        };
        assert!(!format!("{k:?}").contains("lqo_supersecret"));
    }
}
