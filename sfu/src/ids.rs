//! Names for the links between the media plane's objects, so that a link says what it
//! points at. Slots and indices are reused only after every link to their old occupant is
//! gone (see `participant::Slot`).

use crate::participant::Slot;

/// A published track: its publisher's slot and its place among that participant's tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TrackId {
    pub publisher: Slot,
    pub index: usize,
}

/// One subscriber's copy of a published track: the subscriber's slot and the down-track's
/// place among that participant's down-tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DownTrackId {
    pub subscriber: Slot,
    pub index: usize,
}
