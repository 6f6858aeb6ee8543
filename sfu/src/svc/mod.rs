//! Where a packet sits in a scalable (SVC) stream. An SVC publisher (livekit-client's
//! `videoCodec: 'vp9'` or `'av1'`, L3T3_KEY) sends all spatial layers of a picture on one
//! SSRC, one layer frame after the other; a subscriber that should get less is sent the
//! lower layers only, with the marker bit moved to the end of the last layer it gets
//! (`down_track.rs`). VP9 says where a packet sits in its payload descriptor ([`vp9`]); AV1
//! in the dependency descriptor header extension ([`dependency_descriptor`]).

pub(crate) mod dependency_descriptor;
pub(crate) mod vp9;

/// The layer fields of one packet of an SVC stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SvcLayer {
    /// Spatial layer id: 0 is the smallest picture.
    pub spatial: u8,
    /// Temporal layer id.
    pub temporal: u8,
    /// The first packet of a layer frame.
    pub starts_frame: bool,
    /// The last packet of a layer frame.
    pub ends_frame: bool,
    /// Predicted from an earlier picture (clear on a keyframe's layers).
    pub inter_picture: bool,
}

impl SvcLayer {
    /// The first packet of a new picture (its lowest layer's first packet): where a
    /// down-track may drop or add layers.
    pub fn starts_picture(&self) -> bool {
        self.starts_frame && self.spatial == 0
    }

    /// The first packet of a keyframe: every layer above it may start here.
    pub fn starts_keyframe(&self) -> bool {
        self.starts_picture() && !self.inter_picture
    }
}
