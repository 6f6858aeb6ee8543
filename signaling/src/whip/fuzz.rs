//! The WHIP/WHEP request bodies for the fuzz targets (feature `fuzz`, see `crate::fuzzing`):
//! an offer checked and answered as `POST /whip` and `/whep` do, or a `PATCH` sdpfrag applied
//! as trickle or ICE restart, against a media worker in memory.

use switchboard_sfu::fuzzing::{Input, SdpRig, PUBLISHER, VIEWER};

use super::resource::Kind;
use super::{check_offer, negotiation_problem, sdp, Problem};

/// First byte: what the body is (offer to WHIP, offer to WHEP, sdpfrag after a WHIP offer)
/// and whether the peer takes RSA certificates; the rest is the body, as text.
pub(crate) fn request(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let body = String::from_utf8_lossy(input.rest());
    let mut rig = SdpRig::new(mode & 0x80 != 0);
    match mode % 3 {
        0 => {
            let _ = offer(&mut rig, Kind::Publish, &body);
        }
        1 => {
            let _ = offer(&mut rig, Kind::Play, &body);
        }
        _ => {
            // A PATCH needs a session: the body's first part is its offer, the rest the frag.
            let (first, frag) = body.split_once("\n\n").unwrap_or((&body, ""));
            if offer(&mut rig, Kind::Publish, first).is_ok() {
                patch(&mut rig, frag);
            }
        }
    }
}

/// `POST`: the offer's check, the tracks it announces, and the answer, as `start` and
/// `resource::open` do them. A refusal is a problem a person can read.
fn offer(rig: &mut SdpRig, kind: Kind, sdp_text: &str) -> Result<String, Problem> {
    let result = check_offer(sdp_text, kind).and_then(|offer| {
        assert!(!offer.media.is_empty());
        match kind {
            Kind::Publish => {
                for m in offer.media.iter().filter(|m| m.sends()) {
                    let Some(codec) = m.supported_codec() else {
                        continue;
                    };
                    rig.expect_track(&m.mid, "TR_fuzz", is_video(m.kind), Some(codec));
                }
                rig.publisher_offer(sdp_text).map_err(negotiation_problem)
            }
            Kind::Play => rig.viewer_offer(sdp_text).map_err(negotiation_problem),
        }
    });
    match &result {
        Ok(answer) => assert!(answer.starts_with("v=0"), "an answer is SDP"),
        Err(problem) => {
            assert!(problem.status.is_client_error() || problem.status.as_u16() == 503);
            assert!(!problem.detail.is_empty());
        }
    }
    result
}

fn is_video(kind: switchboard_sfu::TrackKind) -> bool {
    kind == switchboard_sfu::TrackKind::Video
}

/// `PATCH`: trickled candidates, or an ICE restart when the frag carries new credentials.
fn patch(rig: &mut SdpRig, body: &str) {
    let Ok(frag) = sdp::parse_sdpfrag(body) else {
        return;
    };
    if let (Some(ufrag), Some(pwd)) = (&frag.ice_ufrag, &frag.ice_pwd) {
        if let Some(Ok((local_ufrag, local_pwd))) = rig.ice_restart(PUBLISHER, true, ufrag, pwd) {
            assert!(!local_ufrag.is_empty() && !local_pwd.is_empty());
        }
    }
    for candidate in &frag.candidates {
        rig.remote_candidate(PUBLISHER, true, candidate);
        rig.remote_candidate(VIEWER, false, candidate);
    }
    rig.turn();
}
