//! Who may subscribe to a participant's tracks (LiveKit's `SubscriptionPermission`): by
//! default everyone in the room; a publisher may narrow it to some participants, for all or
//! some of its tracks. A subscriber that wants a track it may not have is told so, is
//! remembered, and gets the track as soon as the publisher allows it.

use crate::api::PeerEvent;
use crate::ids::TrackId;
use crate::participant::Slot;
use crate::worker::Worker;

/// Whom a publisher lets subscribe to its tracks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribePermission {
    /// Everyone may; `allowed` is then not read.
    pub all_participants: bool,
    pub allowed: Vec<AllowedSubscriber>,
}

/// One participant a publisher allows, named by sid or identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowedSubscriber {
    pub sid: String,
    pub identity: String,
    /// The track sids it may receive; `None` for all of them.
    pub track_sids: Option<Vec<String>>,
}

impl SubscribePermission {
    /// Whether the participant `sid`/`identity` may receive track `track_sid`.
    pub fn allows(&self, sid: &str, identity: &str, track_sid: &str) -> bool {
        self.all_participants
            || self.allowed.iter().any(|a| {
                let named = (!a.sid.is_empty() && a.sid == sid)
                    || (!a.identity.is_empty() && a.identity == identity);
                named
                    && a.track_sids
                        .as_ref()
                        .is_none_or(|tracks| tracks.iter().any(|t| t == track_sid))
            })
    }
}

impl Worker {
    /// Whether `sub` may receive track `source`, under its publisher's permission.
    pub(crate) fn may_subscribe(&self, sub: Slot, source: TrackId) -> bool {
        let (Some(publisher), Some(subscriber)) = (
            self.parts[source.publisher].as_ref(),
            self.parts[sub].as_ref(),
        ) else {
            return false;
        };
        let Some(permission) = publisher.permission.as_ref() else {
            return true;
        };
        let Some(track) = publisher.tracks.get(source.index).and_then(Option::as_ref) else {
            return false;
        };
        permission.allows(&subscriber.key, &subscriber.identity, &track.sid)
    }

    /// `sub` wanted track `source` and may not have it: remember it, and tell it once.
    pub(crate) fn deny(&mut self, sub: Slot, source: TrackId) {
        let Some(key) = self.parts[sub].as_ref().map(|p| p.key.clone()) else {
            return;
        };
        let Some(publisher_key) = self.parts[source.publisher].as_ref().map(|p| p.key.clone())
        else {
            return;
        };
        let Some(track) = self.published_mut(source) else {
            return;
        };
        if track.denied.contains(&key) {
            return;
        }
        track.denied.push(key);
        let track_sid = track.sid.clone();
        if let Some(part) = self.parts[sub].as_ref() {
            part.emit(PeerEvent::SubscriptionPermission {
                publisher: publisher_key,
                track_sid,
                allowed: false,
            });
        }
    }

    /// `sub` no longer wants track `source` (it unsubscribed).
    pub(crate) fn forget_denied(&mut self, sub: Slot, source: TrackId) {
        let Some(key) = self.parts[sub].as_ref().map(|p| p.key.clone()) else {
            return;
        };
        if let Some(track) = self.published_mut(source) {
            track.denied.retain(|k| *k != key);
        }
    }

    /// The participant `key` changed whom it lets subscribe (`None`: everyone): those no
    /// longer allowed lose its tracks, those waiting and now allowed get them.
    pub(crate) fn set_subscribe_permission(
        &mut self,
        key: &str,
        permission: Option<SubscribePermission>,
    ) {
        let Some(&slot) = self.by_key.get(key) else {
            return;
        };
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        part.permission = permission;
        let count = part.tracks.len();
        for index in 0..count {
            let source = TrackId {
                publisher: slot,
                index,
            };
            let Some(track) = self.published_mut(source) else {
                continue;
            };
            let receiving: Vec<Slot> = track.down_tracks.iter().map(|d| d.subscriber).collect();
            let waiting = std::mem::take(&mut track.denied);
            for sub in receiving {
                if !self.may_subscribe(sub, source) {
                    self.unsubscribe(sub, source);
                    self.deny(sub, source);
                    self.renegotiate_later(sub);
                }
            }
            for sub_key in waiting {
                let Some(&sub) = self.by_key.get(&sub_key) else {
                    continue; // it left meanwhile
                };
                self.subscribe(sub, source);
                if self.may_subscribe(sub, source) {
                    self.renegotiate_later(sub);
                    let allowed = self.published_mut(source).map(|t| t.sid.clone());
                    if let (Some(track_sid), Some(part)) = (allowed, self.parts[sub].as_ref()) {
                        part.emit(PeerEvent::SubscriptionPermission {
                            publisher: key.to_owned(),
                            track_sid,
                            allowed: true,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(sid: &str, identity: &str, tracks: Option<&[&str]>) -> AllowedSubscriber {
        AllowedSubscriber {
            sid: sid.into(),
            identity: identity.into(),
            track_sids: tracks.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn everyone_or_only_those_named_for_the_tracks_named() {
        let everyone = SubscribePermission {
            all_participants: true,
            allowed: Vec::new(),
        };
        assert!(everyone.allows("PA_x", "x", "TR_1"));
        let nobody = SubscribePermission::default();
        assert!(!nobody.allows("PA_x", "x", "TR_1"));
        let some = SubscribePermission {
            all_participants: false,
            allowed: vec![
                allowed("", "bob", None),
                allowed("PA_carol", "", Some(&["TR_audio"])),
            ],
        };
        assert!(some.allows("PA_bob", "bob", "TR_video"));
        assert!(some.allows("PA_carol", "carol", "TR_audio"));
        assert!(!some.allows("PA_carol", "carol", "TR_video"));
        assert!(!some.allows("PA_dave", "dave", "TR_audio"));
        // An empty name never matches an empty field.
        assert!(!some.allows("", "", "TR_audio"));
    }
}
