//! How every str0m peer of the media plane is configured.

use std::time::{Duration, Instant};

use str0m::Rtc;

/// Installs the crypto backend chosen at compile time (aws-lc-rs) as the process default.
/// Calling it again is harmless.
pub(crate) fn install_crypto() {
    str0m::crypto::from_feature_flags().install_process_default();
}

/// A peer in RTP mode (packets forwarded as packets), ICE-lite (the server is never the
/// controlling agent), with the codecs browsers offer. RED is left off so that audio is
/// forwarded as plain Opus to every subscriber.
pub(crate) fn new_rtc(now: Instant) -> Rtc {
    Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .enable_vp9(true)
        .enable_av1(true)
        .set_stats_interval(Some(Duration::from_secs(5)))
        // The video send buffer is also the retransmission history. str0m's default of 1000
        // packets is ~4 s of 2.5 Mbit/s video per subscriber stream (the largest part of a
        // participant's memory); 500 (~1.8 s) still covers many round trips of NACKs.
        .set_send_buffer_video(500)
        .build(now)
}
