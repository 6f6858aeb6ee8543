//! Room-wide news the media plane works out about its members (who speaks, how well each
//! is connected): changes gathered over a room's members, then sent to all of them.

use crate::api::PeerEvent;
use crate::participant::Participant;
use crate::worker::Worker;

impl Worker {
    /// For each room, asks `judge` about every member; when some have news, every member
    /// gets `event(news)`.
    pub(crate) fn tell_rooms<T: Clone>(
        &mut self,
        mut judge: impl FnMut(&mut Participant) -> Option<T>,
        event: impl Fn(Vec<T>) -> PeerEvent,
    ) {
        let rooms: Vec<Vec<usize>> = self.rooms.values().cloned().collect();
        for members in rooms {
            let news: Vec<T> = members
                .iter()
                .filter_map(|&slot| self.parts[slot].as_mut().and_then(&mut judge))
                .collect();
            if news.is_empty() {
                continue;
            }
            for &slot in &members {
                if let Some(part) = self.parts[slot].as_ref() {
                    part.emit(event(news.clone()));
                }
            }
        }
    }
}
