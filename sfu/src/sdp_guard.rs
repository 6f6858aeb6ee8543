//! What every SDP a client sends goes through before str0m parses it, and how str0m's
//! complaints about it are told to the client.
//!
//! Parsing cost grows with the number of m-lines, and so does the state a negotiated
//! m-line keeps, so their number is bounded (`max_media_sections`) before anything is
//! parsed. str0m's parse errors carry the parser's position as a memory address
//! (`PointerOffset(0x7f…)`): the client gets the line number instead, and never the address.

use crate::api::SfuError;

/// The m-lines of an SDP: lines starting with `m=`, as str0m reads them.
pub(crate) fn media_sections(sdp: &str) -> usize {
    sdp.lines()
        .filter(|line| line.trim_start().starts_with("m="))
        .count()
}

/// Refuses an SDP with more than `limit` m-lines.
pub(crate) fn check_sections(sdp: &str, limit: usize) -> Result<(), SfuError> {
    let sent = media_sections(sdp);
    if sent > limit {
        return Err(SfuError::TooManyMediaSections { sent, limit });
    }
    Ok(())
}

/// The `a=candidate` lines of an SDP.
pub(crate) fn candidates(sdp: &str) -> usize {
    sdp.lines()
        .filter(|line| line.trim_start().starts_with("a=candidate"))
        .count()
}

/// What every client SDP is checked for before str0m parses it: at most `max_sections`
/// m-lines and `max_candidates` ICE candidates. Each remote candidate costs the ICE agent a
/// pass over the ones it has (10,000 in one offer kept a worker busy for 3 s).
pub(crate) fn check(sdp: &str, max_sections: usize, max_candidates: usize) -> Result<(), SfuError> {
    check_sections(sdp, max_sections)?;
    let sent = candidates(sdp);
    if sent > max_candidates {
        return Err(SfuError::TooManyCandidates {
            sent,
            limit: max_candidates,
        });
    }
    Ok(())
}

/// Longest excerpt of the offending line quoted back.
const EXCERPT: usize = 40;

/// A parse error of `sdp` as the client should read it: where (line number and the line's
/// start) and what the parser expected, without the address it points at.
pub(crate) fn parse_error(sdp: &str, error: &dyn std::fmt::Display) -> SfuError {
    SfuError::BadSdp(describe(sdp, &error.to_string()))
}

/// A negotiation error (str0m refused an SDP it could parse) without internal addresses.
pub(crate) fn negotiation_error(sdp: &str, error: &dyn std::fmt::Display) -> SfuError {
    SfuError::Negotiation(describe(sdp, &error.to_string()))
}

fn describe(sdp: &str, message: &str) -> String {
    let mut line = None;
    let mut parts = Vec::new();
    for piece in message.lines().map(str::trim).filter(|p| !p.is_empty()) {
        match pointer_offset(piece) {
            Some((before, address)) => {
                line = line.or_else(|| line_at(sdp, address));
                let before = before.trim().trim_end_matches("Parse error at").trim();
                if !before.is_empty() && before != "SDP parse:" {
                    parts.push(before.to_owned());
                }
            }
            // combine's label of the rule that failed: says nothing to a person.
            None if piece == "sdp line" => {}
            None => parts.push(piece.to_owned()),
        }
    }
    let what = if parts.is_empty() {
        "unreadable SDP".to_owned()
    } else {
        parts.join("; ")
    };
    match line {
        Some((number, text)) => format!("line {number} ({text:?}): {what}"),
        None => what,
    }
}

/// Splits `…PointerOffset(0x…)…` into the text before it and the address.
fn pointer_offset(piece: &str) -> Option<(&str, usize)> {
    let start = piece.find("PointerOffset(")?;
    let rest = &piece[start + "PointerOffset(".len()..];
    let end = rest.find(')')?;
    let hex = rest[..end].trim_start_matches("0x");
    let address = usize::from_str_radix(hex, 16).ok()?;
    Some((&piece[..start], address))
}

/// The 1-based line number of the byte at `address` (the parser points into the very string
/// it was given, which is `sdp`), and the start of that line; `None` if it is elsewhere.
fn line_at(sdp: &str, address: usize) -> Option<(usize, String)> {
    let offset = address.checked_sub(sdp.as_ptr() as usize)?;
    if offset > sdp.len() {
        return None;
    }
    let before = sdp.get(..offset)?;
    let number = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let text: String = sdp[line_start..]
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(EXCERPT)
        .collect();
    Some((number, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sdp: &str) -> SfuError {
        match str0m::change::SdpOffer::from_sdp_string(sdp) {
            Ok(_) => panic!("parsed: {sdp}"),
            Err(e) => parse_error(sdp, &e),
        }
    }

    #[test]
    fn parse_errors_name_the_line_not_an_address() {
        let sdp = "v=0\r\nno equals sign here\r\n";
        let message = parse(sdp).to_string();
        assert!(!message.contains("0x"), "{message}");
        assert!(!message.contains("PointerOffset"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("no equals sign"), "{message}");
        let garbage = parse("garbage").to_string();
        assert!(garbage.contains("line 1"), "{garbage}");
        assert!(!garbage.contains("0x"), "{garbage}");
    }

    #[test]
    fn an_address_outside_the_text_is_dropped_not_shown() {
        let message = describe("v=0", "Parse error at PointerOffset(0x10)\nUnexpected `x`");
        assert_eq!(message, "Unexpected `x`");
    }

    #[test]
    fn media_sections_are_counted_before_parsing() {
        let many = format!(
            "v=0\r\n{}",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(1000)
        );
        assert_eq!(media_sections(&many), 1000);
        assert_eq!(
            check_sections(&many, 32),
            Err(SfuError::TooManyMediaSections {
                sent: 1000,
                limit: 32
            })
        );
        assert_eq!(check_sections("v=0\r\nm=audio 9 X 0\r\n", 1), Ok(()));
        let stuffed = format!(
            "v=0\r\n{}",
            "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n".repeat(65)
        );
        assert_eq!(
            check(&stuffed, 32, 64),
            Err(SfuError::TooManyCandidates {
                sent: 65,
                limit: 64
            })
        );
        assert_eq!(check(&stuffed, 32, 65), Ok(()));
    }
}

/// The bound as a worker applies it to each kind of client SDP.
#[cfg(test)]
mod worker_tests {
    use super::*;
    use crate::worker::testing;

    fn lines(n: usize) -> String {
        format!("v=0\r\n{}", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(n))
    }

    #[test]
    fn offers_and_answers_over_the_bound_are_refused_before_parsing() {
        let mut worker = testing::worker();
        worker.limits.max_media_sections = 4;
        let _events = testing::join(&mut worker, "PA_a");
        let too_many = SfuError::TooManyMediaSections { sent: 5, limit: 4 };
        assert_eq!(
            worker.publisher_offer("PA_a", &lines(5)),
            Err(too_many.clone())
        );
        assert_eq!(
            worker.viewer_offer("PA_a", &lines(5)),
            Err(too_many.clone())
        );
        assert_eq!(worker.subscriber_answer("PA_a", &lines(5)), Err(too_many));
        // An answer to an offer of 6 m-lines may have 6.
        if let Some(part) = worker.parts[0].as_mut() {
            part.offered_sections = 6;
        }
        let answer = worker.subscriber_answer("PA_a", &lines(6));
        assert!(
            !matches!(answer, Err(SfuError::TooManyMediaSections { .. })),
            "{answer:?}"
        );
        // Under the bound, the parser runs (and says what is wrong with this SDP).
        assert!(matches!(
            worker.publisher_offer("PA_a", &lines(4)),
            Err(SfuError::BadSdp(_))
        ));
    }
}
