//! Pagination of list endpoints: `?limit=N&page_token=T`, answered with the page and a
//! `next_page_token` (null on the last page). Tokens are opaque to clients: base64url of the
//! position after which the next page starts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::problem::Problem;

/// A page holds this many items unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most a page may hold.
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub page_token: Option<String>,
}

impl PageQuery {
    /// The page size asked for, within 1..=MAX_LIMIT.
    pub fn limit(&self) -> Result<u32, Problem> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(Problem::bad_request(format!(
                "limit {n} is out of range: a page holds 1 to {MAX_LIMIT} items"
            ))),
        }
    }

    /// The position the token carries, if one was given.
    pub fn position(&self) -> Result<Option<String>, Problem> {
        let Some(token) = self.page_token.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(|| {
                Problem::bad_request(
                    "page_token is not one this server gave out: pass next_page_token from \
                     the previous page unchanged",
                )
            })
    }
}

/// The token for a page that starts after `position`.
pub fn token(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

/// One page of a list read whole, in its order, whose items each have a unique `key`: the
/// items after the one the token names, and the token for the next page (`None` on the last).
pub fn page_of<'a, T>(
    items: &'a [T],
    page: &PageQuery,
    key: impl Fn(&T) -> &str,
) -> Result<(&'a [T], Option<String>), Problem> {
    let limit = page.limit()? as usize;
    let start = match page.position()? {
        Some(after) => items
            .iter()
            .position(|item| key(item) == after)
            .map(|at| at + 1)
            .ok_or_else(|| {
                Problem::bad_request(
                    "page_token is not one this server gave out for this list: pass \
                     next_page_token from the previous page unchanged",
                )
            })?,
        None => 0,
    };
    let end = items.len().min(start + limit);
    let next = (end < items.len())
        .then(|| items[..end].last().map(|last| token(key(last))))
        .flatten();
    Ok((&items[start..end], next))
}

/// A room's position in the room list: `<created_at ms>.<room_id>`.
pub fn room_position(created_at_ms: i64, room_id: &str) -> String {
    format!("{created_at_ms}.{room_id}")
}

/// The inverse of [`room_position`].
pub fn parse_room_position(position: &str) -> Result<(i64, String), Problem> {
    position
        .split_once('.')
        .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_owned())))
        .ok_or_else(|| {
            Problem::bad_request(
                "page_token is not one this server gave out: pass next_page_token from the \
                 previous page unchanged",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_limits_are_checked() {
        let query = PageQuery {
            limit: Some(10),
            page_token: Some(token(&room_position(1_700_000_000_123, "ro_a-b"))),
        };
        assert_eq!(query.limit().unwrap(), 10);
        let position = query.position().unwrap().unwrap();
        assert_eq!(
            parse_room_position(&position).unwrap(),
            (1_700_000_000_123, "ro_a-b".to_owned())
        );
        assert!(PageQuery {
            limit: Some(0),
            ..PageQuery::default()
        }
        .limit()
        .is_err());
        assert!(PageQuery {
            limit: Some(MAX_LIMIT + 1),
            ..PageQuery::default()
        }
        .limit()
        .is_err());
        let junk = PageQuery {
            page_token: Some("%%%".into()),
            ..PageQuery::default()
        };
        assert!(junk.position().is_err());
        assert!(parse_room_position("nodot").is_err());
    }

    #[test]
    fn a_list_read_whole_is_walked_without_dupes_or_gaps() {
        let items: Vec<String> = (0..7).map(|i| format!("i{i}")).collect();
        let mut seen = Vec::new();
        let mut query = PageQuery {
            limit: Some(3),
            page_token: None,
        };
        loop {
            let (page, next) = page_of(&items, &query, String::as_str).unwrap();
            seen.extend(page.iter().cloned());
            match next {
                Some(t) => query.page_token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, items);
        query.page_token = Some(token("gone"));
        assert!(page_of(&items, &query, String::as_str).is_err());
    }
}
