//! Where a request carries its join token. LiveKit's SDKs disagree: livekit-client puts it
//! in the `access_token` query parameter, LiveKit's Rust core (and so its Python, Node,
//! Unity and native SDKs) sends `Authorization: Bearer`, and WHIP/WHEP tools use the
//! header. Every endpoint that takes a join token accepts both; the header wins when a
//! request carries two.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};

/// The join token a request carries, if any.
pub(crate) fn join_token<'a>(
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
) -> Option<&'a str> {
    bearer(headers).or_else(|| {
        query
            .get("access_token")
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
    })
}

/// What a person is told when a request carries no token at all.
pub(crate) const MISSING: &str = "no join token: send one minted for this room as \
    `Authorization: Bearer <JWT>` or as the `access_token` query parameter";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn query(token: &str) -> HashMap<String, String> {
        HashMap::from([("access_token".to_owned(), token.to_owned())])
    }

    #[test]
    fn header_and_query_are_both_read_and_the_header_wins() {
        let none = HashMap::new();
        assert_eq!(join_token(&headers("Bearer abc"), &none), Some("abc"));
        assert_eq!(join_token(&headers("bearer  abc "), &none), Some("abc"));
        assert_eq!(join_token(&HeaderMap::new(), &query("q")), Some("q"));
        assert_eq!(join_token(&headers("Bearer h"), &query("q")), Some("h"));
    }

    #[test]
    fn other_schemes_and_empty_values_are_no_token() {
        let none = HashMap::new();
        assert_eq!(join_token(&headers("Basic abc"), &none), None);
        assert_eq!(join_token(&headers("Bearer "), &none), None);
        assert_eq!(join_token(&HeaderMap::new(), &query(" ")), None);
        assert_eq!(join_token(&headers("Basic abc"), &query("q")), Some("q"));
    }
}
