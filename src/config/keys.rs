//! API key resolution, shared by `serve` and `token create` so a token minted on the
//! command line is signed with a key the server accepts.

use std::collections::BTreeMap;

use super::error::{ConfigError, Origin};
use super::parse;
use super::sources::{Raw, Sources, ENV_API_KEY, ENV_API_SECRET, ENV_KEYS};

/// The key and secret `--dev` falls back to, the same as LiveKit's dev mode so existing
/// client examples work unchanged.
pub const DEV_KEY: &str = "devkey";
pub const DEV_SECRET: &str = "secret";
/// Minimum secret length outside development mode: HS256 keys shorter than the hash output
/// (32 bytes) weaken the signature, and short secrets can be brute-forced offline from any
/// token.
pub const MIN_SECRET_CHARS: usize = 32;

/// Key -> (secret, where it was configured).
pub(super) type KeySet = BTreeMap<String, (String, Origin)>;

const FLAG_API_KEY: &str = "--api-key";
const FLAG_API_SECRET: &str = "--api-secret";

/// Checks that a key and its secret are given together: a key from one source paired with
/// a secret from another would be hard to reason about.
fn pair(
    key: Option<Raw>,
    secret: Option<Raw>,
    names: (&'static str, &'static str),
) -> Result<Option<(Raw, Raw)>, ConfigError> {
    match (key, secret) {
        (Some(key), Some(secret)) => Ok(Some((key, secret))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Unpaired {
            given: names.0,
            missing: names.1,
        }),
        (None, Some(_)) => Err(ConfigError::Unpaired {
            given: names.1,
            missing: names.0,
        }),
    }
}

/// Adds a key, rejecting the same key name with two different secrets within one source.
fn insert(
    keys: &mut KeySet,
    key: String,
    secret: String,
    origin: Origin,
) -> Result<(), ConfigError> {
    match keys.get(&key) {
        Some((existing, first)) if *existing != secret => Err(ConfigError::ConflictingKey {
            key,
            first: first.clone(),
            second: origin,
        }),
        Some(_) => Ok(()),
        None => {
            keys.insert(key, (secret, origin));
            Ok(())
        }
    }
}

fn flag_raw(value: Option<&str>, flag: &'static str) -> Option<Raw> {
    value.map(|value| Raw {
        value: value.trim().to_owned(),
        shown: format!("{:?}", value.trim()),
        origin: Origin::Flag(flag),
    })
}

/// Validates a key given as a separate key and secret value (flags, env pair).
fn checked_pair(key: &Raw, secret: &Raw) -> Result<(String, String), ConfigError> {
    parse::api_key(&key.value).map_err(|reason| key.invalid(reason))?;
    parse::api_secret(&key.value, &secret.value).map_err(|reason| ConfigError::Invalid {
        origin: secret.origin.clone(),
        // Never echo the secret, even an invalid one.
        shown: "…".to_owned(),
        reason,
    })?;
    Ok((key.value.clone(), secret.value.clone()))
}

/// The configured keys, from the highest-precedence source that defines any: keys are a
/// set, and `--api-key` on the command line means "exactly this key", not "this one too".
/// Returns an empty set if no source defines keys.
pub(super) fn configured(
    sources: &Sources<'_>,
    flag_key: Option<&str>,
    flag_secret: Option<&str>,
) -> Result<KeySet, ConfigError> {
    let mut keys = KeySet::new();

    let flags = pair(
        flag_raw(flag_key, FLAG_API_KEY),
        flag_raw(flag_secret, FLAG_API_SECRET),
        (FLAG_API_KEY, FLAG_API_SECRET),
    )?;
    if let Some((key, secret)) = flags {
        let (key_name, secret) = checked_pair(&key, &secret)?;
        insert(&mut keys, key_name, secret, key.origin)?;
        return Ok(keys);
    }

    let env_pair = pair(
        sources.env(ENV_API_KEY),
        sources.env(ENV_API_SECRET),
        (ENV_API_KEY, ENV_API_SECRET),
    )?;
    if let Some(list) = sources.env(ENV_KEYS) {
        let entries = parse::key_list(&list.value).map_err(|reason| ConfigError::Invalid {
            origin: list.origin.clone(),
            shown: "…".to_owned(),
            reason,
        })?;
        for (key, secret) in entries {
            insert(&mut keys, key, secret, list.origin.clone())?;
        }
    }
    if let Some((key, secret)) = env_pair {
        let (key_name, secret) = checked_pair(&key, &secret)?;
        insert(&mut keys, key_name, secret, key.origin)?;
    }
    if !keys.is_empty() {
        return Ok(keys);
    }

    if let Some(file) = &sources.file {
        for (key, secret) in &file.keys {
            let origin = Origin::File {
                path: file.path.clone(),
                key: format!("keys.{key}"),
            };
            insert(&mut keys, key.clone(), secret.clone(), origin)?;
        }
    }
    Ok(keys)
}

/// The keys to run with: the configured ones, or the development key in `--dev` mode.
/// Outside development mode every secret must be strong, so nothing starts with a
/// well-known or guessable secret.
pub(super) fn resolve(
    sources: &Sources<'_>,
    dev: bool,
    flag_key: Option<&str>,
    flag_secret: Option<&str>,
) -> Result<KeySet, ConfigError> {
    let mut keys = configured(sources, flag_key, flag_secret)?;
    if dev {
        if keys.is_empty() {
            keys.insert(
                DEV_KEY.to_owned(),
                (DEV_SECRET.to_owned(), Origin::Flag("--dev")),
            );
        }
        return Ok(keys);
    }
    if keys.is_empty() {
        return Err(ConfigError::NoKeys);
    }
    for (key, (secret, origin)) in &keys {
        let chars = secret.chars().count();
        let reason = if secret == DEV_SECRET {
            format!(
                "uses the well-known development secret \"{DEV_SECRET}\"; outside --dev use a \
                 random secret of at least {MIN_SECRET_CHARS} characters \
                 (e.g. `openssl rand -hex 32`)"
            )
        } else if chars < MIN_SECRET_CHARS {
            format!(
                "secret is {chars} characters long; outside --dev it must be at least \
                 {MIN_SECRET_CHARS} (e.g. `openssl rand -hex 32`)"
            )
        } else {
            continue;
        };
        return Err(ConfigError::WeakSecret {
            key: key.clone(),
            origin: origin.clone(),
            reason,
        });
    }
    Ok(keys)
}

/// Picks the key `token create` signs with: `--api-key` if given (its secret from the
/// resolved set), else the first key in sorted order so the choice is deterministic.
pub(super) fn select(keys: &KeySet, wanted: Option<&str>) -> Result<(String, String), ConfigError> {
    let found = match wanted {
        Some(wanted) => keys.get_key_value(wanted.trim()),
        None => keys.iter().next(),
    };
    match (found, wanted) {
        (Some((key, (secret, _))), _) => Ok((key.clone(), secret.clone())),
        (None, Some(wanted)) => Err(ConfigError::UnknownKey {
            key: wanted.trim().to_owned(),
            known: keys.keys().cloned().collect::<Vec<_>>().join(", "),
        }),
        // `resolve` never returns an empty set, but report it properly rather than panic.
        (None, None) => Err(ConfigError::NoKeys),
    }
}
