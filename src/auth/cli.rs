//! `lqo keys create|list|revoke` against the configured database. The key is printed once on
//! stdout (so `KEY=$(lqo keys create --name ci)` works); everything else goes to stderr.

use chrono::{DateTime, Utc};

use super::config::AuthConfig;
use super::keys::{self, KeyAdminError};
use crate::store::config::DatabaseConfig;
use crate::store::{KeyStore, Store, StoreError};
use crate::timespec::{parse_time, Toward};

/// Who the audit log names for actions taken from the command line.
pub const CLI_ACTOR: &str = "cli";

#[derive(Debug, Clone)]
pub enum KeysAction {
    Create {
        name: String,
        scopes: String,
        expires: Option<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

/// What the command prints.
#[derive(Debug, Default)]
pub struct KeysOutput {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysCliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Admin(#[from] KeyAdminError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

pub async fn run(
    database: &DatabaseConfig,
    auth: &AuthConfig,
    action: KeysAction,
) -> Result<KeysOutput, KeysCliError> {
    let store = Store::connect(&database.url, 2).await?;
    store.migrate().await?;
    let result = act(auth, store.keys.as_ref(), action).await;
    store.close().await;
    result
}

async fn act(
    auth: &AuthConfig,
    store: &dyn KeyStore,
    action: KeysAction,
) -> Result<KeysOutput, KeysCliError> {
    let mut out = KeysOutput::default();
    match action {
        KeysAction::Create {
            name,
            scopes,
            expires,
        } => {
            let scopes = keys::parse_scopes(&scopes).map_err(KeysCliError::Usage)?;
            let expires_at = expires
                .as_deref()
                .map(|s| parse_time(s, Utc::now(), Toward::Future))
                .transpose()
                .map_err(|e| KeysCliError::Usage(format!("--expires {e}")))?;
            let config_names: Vec<String> = auth.keys.iter().map(|k| k.name.clone()).collect();
            let created =
                keys::create_key(store, &config_names, &name, &scopes, expires_at, CLI_ACTOR)
                    .await?;
            out.stdout = format!("{}\n", created.key);
            out.stderr = format!(
                "created key {:?} (prefix {}, scopes {}, expires {}); store it now: it is not shown again\n",
                created.name,
                created.prefix,
                created.scopes.join(","),
                when(created.expires_at)
            );
            if !auth.required {
                out.stderr.push_str(
                    "note: authentication is off; set auth.required: true or LQO_AUTH=required for keys to be checked\n",
                );
            }
        }
        KeysAction::List => {
            let now = Utc::now();
            let mut table = format!(
                "{:<24} {:<13} {:<32} {:<8} {:<16} {:<16} {:<8} {}\n",
                "NAME", "PREFIX", "SCOPES", "SOURCE", "CREATED", "EXPIRES", "STATUS", "LAST USED"
            );
            for k in store.list_api_keys().await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|t| t <= now) {
                    "expired"
                } else {
                    "live"
                };
                table.push_str(&format!(
                    "{:<24} {:<13} {:<32} {:<8} {:<16} {:<16} {:<8} {}\n",
                    k.name,
                    k.prefix,
                    k.scopes.join(","),
                    "database",
                    when(Some(k.created_at)),
                    when(k.expires_at),
                    status,
                    when(k.last_used_at)
                ));
            }
            for k in &auth.keys {
                let status = if k.expires_at.is_some_and(|t| t <= now) {
                    "expired"
                } else {
                    "live"
                };
                table.push_str(&format!(
                    "{:<24} {:<13} {:<32} {:<8} {:<16} {:<16} {:<8} {}\n",
                    k.name,
                    "-",
                    k.scopes.join(","),
                    "config",
                    "-",
                    when(k.expires_at),
                    status,
                    "-"
                ));
            }
            out.stdout = table;
        }
        KeysAction::Revoke { name } => {
            if auth.keys.iter().any(|k| k.name == name) {
                return Err(KeysCliError::Usage(format!(
                    "{name:?} is declared in the config file (auth.keys); remove it there"
                )));
            }
            let k = keys::revoke_key(store, &name, CLI_ACTOR).await?;
            let when = if store.announces_key_changes() {
                format!(
                    "within a second (PostgreSQL NOTIFY), at most auth.cache_ttl_secs ({} s) where a gateway's listener is down",
                    auth.cache_ttl_secs
                )
            } else {
                format!("within auth.cache_ttl_secs ({} s)", auth.cache_ttl_secs)
            };
            out.stderr = format!(
                "revoked key {:?} (prefix {}); running gateways stop accepting it {when}\n",
                k.name, k.prefix
            );
        }
    }
    Ok(out)
}
