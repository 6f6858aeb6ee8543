//! Choosing the codec a publisher sends. str0m lists codecs in an answer in its own
//! configured order, and a browser sends the first codec of the answer. LiveKit clients do
//! not reorder their offers: they name the codec they want in AddTrackRequest and expect
//! the server's answer to put it first. We reorder each answered m-line's formats: the
//! codec asked for first, then the offer's order.

/// One `m=` section of an SDP: its line index and the attributes we read.
struct Section<'a> {
    mid: Option<&'a str>,
    msid_track: Option<&'a str>,
    /// payload type → codec name (e.g. "96" → "VP8")
    rtpmap: Vec<(&'a str, &'a str)>,
    formats: Vec<&'a str>,
}

fn sections(sdp: &str) -> Vec<Section<'_>> {
    let mut out: Vec<Section<'_>> = Vec::new();
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            out.push(Section {
                mid: None,
                msid_track: None,
                rtpmap: Vec::new(),
                formats: m.split_whitespace().skip(3).collect(),
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            section.msid_track = msid.split_whitespace().nth(1);
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, codec)) = map.split_once(' ') {
                let name = codec.split('/').next().unwrap_or(codec);
                section.rtpmap.push((pt, name));
            }
        }
    }
    out
}

/// The mid of each m-line of an offer, in order.
pub(crate) fn mids(offer: &str) -> Vec<String> {
    sections(offer)
        .into_iter()
        .filter_map(|s| Some(s.mid?.to_owned()))
        .collect()
}

/// The msid track id of each m-line of an offer, by mid.
pub(crate) fn msid_tracks(offer: &str) -> Vec<(String, String)> {
    sections(offer)
        .into_iter()
        .filter_map(|s| Some((s.mid?.to_owned(), s.msid_track?.to_owned())))
        .collect()
}

/// Returns `answer` with each m-line's payload types reordered: those of the codec
/// `preferred(mid)` names first (case-insensitive), then by position in the offer's
/// matching m-line; unknown formats keep their relative order at the end.
pub(crate) fn order_answer(
    offer: &str,
    answer: &str,
    preferred: impl Fn(&str) -> Option<String>,
) -> String {
    let offered = sections(offer);
    let answered = sections(answer);
    let mut index = 0;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if !body.starts_with("m=") {
            out.push_str(line);
            continue;
        }
        let parts: Vec<&str> = body.split_whitespace().collect();
        let (Some(ours), true) = (answered.get(index), parts.len() > 3) else {
            out.push_str(line);
            index += 1;
            continue;
        };
        let order = offered
            .get(index)
            .map(|s| s.formats.as_slice())
            .unwrap_or(&[]);
        let wanted = ours.mid.and_then(&preferred);
        let is_wanted = |pt: &str| {
            wanted.as_deref().is_some_and(|w| {
                ours.rtpmap
                    .iter()
                    .any(|(p, name)| *p == pt && name.eq_ignore_ascii_case(w))
            })
        };
        let mut formats: Vec<&str> = parts[3..].to_vec();
        formats.sort_by_key(|pt| {
            (
                !is_wanted(pt),
                order.iter().position(|o| o == pt).unwrap_or(usize::MAX),
            )
        });
        out.push_str(&format!(
            "{} {}{ending}",
            parts[..3].join(" "),
            formats.join(" ")
        ));
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\nm=audio 9 X 111 63\r\na=mid:0\r\na=msid:s mic\r\n\
        m=video 9 X 96 97 102 103\r\na=mid:1\r\na=msid:s cam\r\n";
    const ANSWER: &str = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 X 102 103 96 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n\
        a=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\n";

    #[test]
    fn answer_follows_offer_order_without_preference() {
        let fixed = order_answer(OFFER, ANSWER, |_| None);
        assert!(fixed.contains("m=video 9 X 96 97 102 103\r\n"), "{fixed}");
        assert!(fixed.contains("m=audio 9 X 111\r\n"));
    }

    #[test]
    fn requested_codec_goes_first() {
        let fixed = order_answer(OFFER, ANSWER, |mid| (mid == "1").then(|| "h264".to_owned()));
        assert!(fixed.contains("m=video 9 X 102 96 97 103\r\n"), "{fixed}");
    }

    #[test]
    fn data_sections_and_unknown_formats_survive() {
        let offer = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nm=video 9 X 98 96\n";
        let answer = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nm=video 9 X 96 45 98\n";
        assert_eq!(
            order_answer(offer, answer, |_| None),
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nm=video 9 X 98 96 45\n"
        );
    }

    #[test]
    fn msid_tracks_by_mid() {
        assert_eq!(
            msid_tracks(OFFER),
            vec![("0".into(), "mic".into()), ("1".into(), "cam".into())]
        );
    }
}
