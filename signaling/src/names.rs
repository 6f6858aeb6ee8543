//! The one rule for room names and participant identities, wherever they come from: a join
//! token (`/rtc`, WHIP/WHEP), the `/v1` API's paths and bodies, Twirp, the token-minting
//! endpoints and `switchboard token create`.
//!
//! A **room name** is 1 to `max_room_name_bytes` ASCII letters, digits, `_` or `-`. Room names
//! become URL path segments (`/v1/rooms/{room_id}`), parts of egress file and directory names
//! (`{room_name}` in a Twirp `filepath`), log fields and metric labels; this set needs no
//! escaping in any of them and cannot spell `/`, `..`, a quote or a control character. It is
//! also the rule `/v1` always had, so every room a token can open is one the API can address.
//!
//! An **identity** is freer, as LiveKit's are (emails, `user:42`, display names): 1 to
//! `max_identity_bytes` bytes of UTF-8 without control characters, without whitespace other
//! than the plain space (no tab, newline, NBSP, line separator), without invisible format
//! characters (zero-width, bidirectional overrides, which could make a log line or an
//! admin's list read differently from what it is), and not starting or ending with a
//! space. Identities only travel inside JSON/protobuf, percent-encoded path segments and
//! parameterized SQL; with control characters gone a log line cannot be forged through them
//! (they are still logged with `?`, which escapes quotes).

use std::fmt;

/// Room names as long as the API always allowed: a ULID-based `ro_…` id is 29 bytes.
pub const DEFAULT_MAX_ROOM_NAME_BYTES: usize = 64;
/// LiveKit sets no bound; 256 bytes fits an email address or a UUID-based id several times.
pub const DEFAULT_MAX_IDENTITY_BYTES: usize = 256;

/// How much of a refused name an error message repeats.
const SHOWN_CHARS: usize = 48;

/// The limits the rule is applied with (`max_room_name_bytes`, `max_identity_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRules {
    pub max_room_name_bytes: usize,
    pub max_identity_bytes: usize,
}

impl Default for NameRules {
    fn default() -> Self {
        NameRules {
            max_room_name_bytes: DEFAULT_MAX_ROOM_NAME_BYTES,
            max_identity_bytes: DEFAULT_MAX_IDENTITY_BYTES,
        }
    }
}

/// Why a name was refused. The message quotes the name escaped (and shortened), so it is
/// safe to log and to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("room name {shown} is not valid: use 1 to {max} letters, digits, '_' or '-'")]
    Room { shown: Shown, max: usize },
    #[error("identity {shown} is not valid: {reason}")]
    Identity { shown: Shown, reason: String },
}

/// A name as an error message shows it: Rust-escaped (so `\n`, `\u{202e}` and quotes are
/// visible), at most [`SHOWN_CHARS`] characters, with the byte length when shortened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    fn of(name: &str) -> Shown {
        let count = name.chars().count();
        if count <= SHOWN_CHARS {
            Shown(format!("{name:?}"))
        } else {
            let head: String = name.chars().take(SHOWN_CHARS).collect();
            Shown(format!("{head:?}… ({} bytes)", name.len()))
        }
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that print as nothing yet change how text reads: zero-width ones, the
/// bidirectional embeddings, overrides and isolates, the word joiner family, the soft hyphen
/// and the byte order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

impl NameRules {
    pub fn check_room(&self, name: &str) -> Result<(), NameError> {
        let ok = !name.is_empty()
            && name.len() <= self.max_room_name_bytes
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(NameError::Room {
                shown: Shown::of(name),
                max: self.max_room_name_bytes,
            })
        }
    }

    pub fn check_identity(&self, identity: &str) -> Result<(), NameError> {
        let refuse = |reason: String| {
            Err(NameError::Identity {
                shown: Shown::of(identity),
                reason,
            })
        };
        if identity.is_empty() {
            return refuse("it is empty".into());
        }
        if identity.len() > self.max_identity_bytes {
            return refuse(format!(
                "it is {} bytes long; at most {} are allowed",
                identity.len(),
                self.max_identity_bytes
            ));
        }
        if let Some(c) = identity
            .chars()
            .find(|&c| c.is_control() || (c.is_whitespace() && c != ' ') || is_invisible_format(c))
        {
            return refuse(format!(
                "it contains {c:?} (U+{:04X}); control characters, whitespace other than a \
                 space and invisible formatting characters are not allowed",
                u32::from(c)
            ));
        }
        if identity.starts_with(' ') || identity.ends_with(' ') {
            return refuse("it starts or ends with a space".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_url_path_log_and_file_safe() {
        let rules = NameRules::default();
        for good in ["standup-42_A", "x", &"x".repeat(64), "ro_01jd8z"] {
            assert_eq!(rules.check_room(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "../x'\";--",
            "a/b",
            "..",
            "has space",
            "bad.room",
            "ü",
            "line\nbreak",
            &"x".repeat(65),
        ] {
            assert!(rules.check_room(bad).is_err(), "{bad:?}");
        }
        let message = rules.check_room("a\nb").unwrap_err().to_string();
        assert!(message.contains(r#""a\nb""#), "escaped: {message}");
        let tight = NameRules {
            max_room_name_bytes: 4,
            ..rules
        };
        assert!(tight.check_room("abcde").is_err());
    }

    #[test]
    fn identities_are_free_but_printable_and_bounded() {
        let rules = NameRules::default();
        for good in [
            "alice",
            "Alice Smith",
            "alice@example.com",
            "user:42",
            "Zoë 李",
            "a/b",
        ] {
            assert_eq!(rules.check_identity(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            " alice",
            "alice ",
            "a\nb",
            "a\tb",
            "a\u{7f}",
            "a\u{202e}b",
            "a\u{200b}b",
            "a\u{a0}b",
            "a\u{2028}b",
        ] {
            assert!(rules.check_identity(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(20 * 1024);
        let message = rules.check_identity(&long).unwrap_err().to_string();
        assert!(message.contains("20480 bytes"), "{message}");
        assert!(
            message.len() < 300,
            "the refusal does not echo 20 KB: {message}"
        );
        assert_eq!(rules.check_identity(&"x".repeat(256)), Ok(()));
    }
}
