//! What WHIP/WHEP need to read from SDP before the media plane sees it: the m-lines (kind,
//! direction, mid, codecs) and the ICE credentials of an offer, and the trickle-ICE
//! fragments of PATCH requests (RFC 8840).

use switchboard_sfu::TrackKind;

/// Codecs the media plane forwards, as SDP names them (lower case).
pub(crate) const AUDIO_CODECS: &[&str] = &["opus"];
pub(crate) const VIDEO_CODECS: &[&str] = &["vp8", "h264", "vp9", "av1"];

/// The list a refusal names.
pub(crate) fn accepted_codecs() -> String {
    "audio: Opus; video: VP8, H.264, VP9, AV1".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One audio or video m-line of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfferMedia {
    pub mid: String,
    pub kind: TrackKind,
    pub direction: Direction,
    /// Codec names in the offer's order, lower case.
    pub codecs: Vec<String>,
}

impl OfferMedia {
    /// The first codec of this m-line the media plane can forward.
    pub fn supported_codec(&self) -> Option<&str> {
        let known = match self.kind {
            TrackKind::Audio => AUDIO_CODECS,
            TrackKind::Video => VIDEO_CODECS,
        };
        self.codecs
            .iter()
            .map(String::as_str)
            .find(|c| known.contains(c))
    }

    pub fn sends(&self) -> bool {
        matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(&self) -> bool {
        matches!(self.direction, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// The m-lines of an SDP, counted without reading anything else (bounded before parsing:
/// `max_media_sections`).
pub(crate) fn media_sections(sdp: &str) -> usize {
    sdp.lines()
        .filter(|line| line.trim_start().starts_with("m="))
        .count()
}

/// The `a=candidate` lines of an SDP (bounded before parsing: `max_remote_candidates`).
pub(crate) fn candidates(sdp: &str) -> usize {
    sdp.lines()
        .filter(|line| line.trim_start().starts_with("a=candidate"))
        .count()
}

/// What an offer says that WHIP/WHEP check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Offer {
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    pub media: Vec<OfferMedia>,
}

/// Reads an offer's m-lines; refuses text that is not an SDP offer with a reason a person
/// can act on.
pub(crate) fn inspect(sdp: &str) -> Result<Offer, String> {
    let mut lines = sdp.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err("the body is not an SDP document: it must start with \"v=0\"".into());
    }
    let mut offer = Offer::default();
    // Session-level direction applies to m-lines without their own.
    let mut session_direction = Direction::SendRecv;
    let mut current: Option<OfferMedia> = None;
    let finish = |current: &mut Option<OfferMedia>, offer: &mut Offer| {
        if let Some(media) = current.take() {
            offer.media.push(media);
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            finish(&mut current, &mut offer);
            let kind = match m.split_whitespace().next() {
                Some("audio") => Some(TrackKind::Audio),
                Some("video") => Some(TrackKind::Video),
                _ => None,
            };
            current = kind.map(|kind| OfferMedia {
                mid: String::new(),
                kind,
                direction: session_direction,
                codecs: Vec::new(),
            });
            // An application (data channel) m-line leaves `current` empty: nothing to check.
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
        let direction = match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        };
        match (&mut current, name) {
            (None, "ice-ufrag") => offer.ice_ufrag = Some(value.trim().to_owned()),
            (None, "ice-pwd") => offer.ice_pwd = Some(value.trim().to_owned()),
            (None, _) => {
                if let Some(d) = direction {
                    session_direction = d;
                }
            }
            (Some(_), "ice-ufrag") if offer.ice_ufrag.is_none() => {
                offer.ice_ufrag = Some(value.trim().to_owned());
            }
            (Some(_), "ice-pwd") if offer.ice_pwd.is_none() => {
                offer.ice_pwd = Some(value.trim().to_owned());
            }
            (Some(media), "mid") => media.mid = value.trim().to_owned(),
            (Some(media), "rtpmap") => {
                if let Some(codec) = value.split_whitespace().nth(1) {
                    let name = codec
                        .split('/')
                        .next()
                        .unwrap_or(codec)
                        .to_ascii_lowercase();
                    media.codecs.push(name);
                }
            }
            (Some(media), _) => {
                if let Some(d) = direction {
                    media.direction = d;
                }
            }
        }
    }
    finish(&mut current, &mut offer);
    if offer.media.is_empty() {
        return Err("the offer has no audio or video m-line".into());
    }
    if let Some(m) = offer.media.iter().find(|m| m.mid.is_empty()) {
        let kind = if m.kind == TrackKind::Audio {
            "audio"
        } else {
            "video"
        };
        return Err(format!(
            "an {kind} m-line has no a=mid (BUNDLE needs one on every m-line)"
        ));
    }
    if offer.ice_ufrag.is_none() || offer.ice_pwd.is_none() {
        return Err("the offer has no a=ice-ufrag/a=ice-pwd".into());
    }
    Ok(offer)
}

/// A trickle-ICE fragment (PATCH body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SdpFrag {
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    /// `candidate:…` lines (without `a=`).
    pub candidates: Vec<String>,
}

/// Reads a fragment; only the ICE lines matter (RFC 8840 §4.4).
pub(crate) fn parse_sdpfrag(body: &str) -> Result<SdpFrag, String> {
    let mut frag = SdpFrag::default();
    let mut any = false;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        any = true;
        let Some(attr) = line.strip_prefix("a=") else {
            if line.starts_with("m=") || line.len() > 1 && line.as_bytes()[1] == b'=' {
                continue;
            }
            // Quoted back short: the body can be as long as the request body limit.
            let start: String = line.chars().take(40).collect();
            return Err(format!("not an SDP line: {start:?}"));
        };
        if let Some(ufrag) = attr.strip_prefix("ice-ufrag:") {
            frag.ice_ufrag = Some(ufrag.trim().to_owned());
        } else if let Some(pwd) = attr.strip_prefix("ice-pwd:") {
            frag.ice_pwd = Some(pwd.trim().to_owned());
        } else if attr.starts_with("candidate:") {
            frag.candidates.push(attr.to_owned());
        }
    }
    if !any {
        return Err("the fragment is empty".into());
    }
    if frag.ice_ufrag.is_some() != frag.ice_pwd.is_some() {
        return Err("an ICE restart needs both a=ice-ufrag and a=ice-pwd".into());
    }
    Ok(frag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=msid:s v1\r\n\
a=rtpmap:96 H264/90000\r\na=rtpmap:97 rtx/90000\r\n";

    #[test]
    fn reads_media_lines_directions_and_codecs() {
        let offer = inspect(OBS_LIKE).unwrap();
        assert_eq!(offer.ice_ufrag.as_deref(), Some("abcd"));
        assert_eq!(offer.media.len(), 2);
        assert_eq!(offer.media[0].kind, TrackKind::Audio);
        assert_eq!(offer.media[0].supported_codec(), Some("opus"));
        assert!(offer.media[0].sends() && !offer.media[0].receives());
        assert_eq!(offer.media[1].mid, "1");
        assert_eq!(offer.media[1].supported_codec(), Some("h264"));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(inspect("hello").unwrap_err().contains("v=0"));
        assert!(inspect("v=0\r\ns=-\r\n")
            .unwrap_err()
            .contains("no audio or video"));
        let no_mid = OBS_LIKE.replace("a=mid:1\r\n", "");
        assert!(inspect(&no_mid).unwrap_err().contains("a=mid"));
    }

    #[test]
    fn unsupported_codecs_are_not_offered_as_supported() {
        let g711 = OBS_LIKE.replace("opus/48000/2", "PCMU/8000");
        let offer = inspect(&g711).unwrap();
        assert_eq!(offer.media[0].supported_codec(), None);
    }

    #[test]
    fn sdpfrag_carries_candidates_and_restarts() {
        let frag = parse_sdpfrag(
            "a=ice-ufrag:new1\r\na=ice-pwd:newpassword123\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(frag.ice_ufrag.as_deref(), Some("new1"));
        assert_eq!(frag.candidates.len(), 1);
        assert!(parse_sdpfrag("").is_err());
        assert!(parse_sdpfrag("a=ice-ufrag:x\r\n").is_err());
    }
}
