//! What the media plane tells a LiveKit session (`PeerEvent`s), turned into what the client
//! is told, if anything.

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use switchboard_sfu::PeerEvent;
use tracing::{debug, info};

use crate::ending::{Ending, MEDIA_CLOSE_GRACE};
use crate::events::LeaveReason;
use crate::session::{join_latency, Session};
use crate::{data, publish, requests, room_signals, subscribe};

impl Session {
    /// Handles an event of the media plane; returns what to tell the client, if anything.
    /// Nothing here needs the socket, so a session waiting for a resume runs it too.
    pub(crate) fn peer_event(&mut self, event: PeerEvent) -> Result<Option<Resp>, Ending> {
        let response = match event {
            PeerEvent::SubscriberOffer { sdp, mid_to_track } => {
                self.next_offer_id += 1;
                Resp::Offer(proto::SessionDescription {
                    r#type: "offer".into(),
                    sdp,
                    id: self.next_offer_id,
                    mid_to_track_id: mid_to_track.into_iter().collect(),
                })
            }
            PeerEvent::MediaSectionsRequirement { audios, videos } => {
                Resp::MediaSectionsRequirement(proto::MediaSectionsRequirement {
                    num_audios: audios,
                    num_videos: videos,
                })
            }
            PeerEvent::TrackUnpublished { sid } => {
                publish::track_unpublished(self, &sid);
                return Ok(None);
            }
            PeerEvent::ConnectionQuality { updates } => room_signals::connection_quality(updates),
            PeerEvent::SpeakersChanged { speakers } => room_signals::speakers_changed(speakers),
            PeerEvent::SubscribedQuality {
                track_sid,
                max_quality,
            } => publish::subscribed_quality(self, track_sid, max_quality),
            PeerEvent::StreamState {
                publisher,
                track_sid,
                paused,
            } => subscribe::stream_state(publisher, track_sid, paused),
            PeerEvent::FirstMediaSent => {
                join_latency("first_media_received", self.verified_at);
                return Ok(None);
            }
            PeerEvent::TrackMediaStarted { sid } => {
                debug!(participant = %self.sid, track = %sid, "first media packet");
                if !self.published_media {
                    self.published_media = true;
                    join_latency("first_media_published", self.verified_at);
                }
                // A mute that came before the media plane bound the track (published muted,
                // or muted by an admin right away) did not reach it: apply it now.
                let muted = self
                    .sig
                    .rooms
                    .participant(&self.room, &self.identity)
                    .is_some_and(|p| p.tracks.iter().any(|t| t.sid == sid && t.muted));
                if muted {
                    let _ = self.media.set_track_muted(sid, true);
                }
                return Ok(None);
            }
            PeerEvent::SubscriptionPermission {
                publisher,
                track_sid,
                allowed,
            } => requests::permission_update(publisher, track_sid, allowed),
            PeerEvent::Data { reliable, payload } => {
                data::relay(self, reliable, &payload);
                return Ok(None);
            }
            PeerEvent::MediaDisconnected { role, reason } => {
                // The media plane dropped this participant's peer (a closed or failed
                // DTLS/ICE connection, or a fault isolated to it): without media the session
                // is hollow. It ends after MEDIA_CLOSE_GRACE unless the client's Leave or
                // socket close says it is leaving.
                info!(participant = %self.sid, ?role, "media connection lost: {reason}");
                if self.media_lost_until.is_none() {
                    self.media_lost_until = Some(tokio::time::Instant::now() + MEDIA_CLOSE_GRACE);
                }
                return Ok(None);
            }
            PeerEvent::MediaTimedOut { cause } => {
                // Its media never connected, or has been gone for the departure timeout
                // (sfu/src/liveness.rs): a signaling-only ghost; told CONNECTION_TIMEOUT.
                info!(participant = %self.sid, "media timed out: {}", cause.describe());
                return Err(Ending {
                    reason: LeaveReason::from(cause),
                    notify: true,
                    close: None,
                });
            }
        };
        Ok(Some(response))
    }
}
