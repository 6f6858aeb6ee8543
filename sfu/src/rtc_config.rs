//! How every str0m peer of the media plane is configured.

use std::time::{Duration, Instant};

use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Rtc, RtcConfig};

use crate::api::DtlsPeers;
use crate::svc::dependency_descriptor;

/// Installs the crypto backend chosen at compile time (aws-lc-rs) as the process default,
/// and makes the DTLS certificate and configuration of LiveKit-protocol peers now rather
/// than at the first join. Calling it again is harmless.
pub(crate) fn install_crypto() {
    str0m::crypto::from_feature_flags().install_process_default();
    switchboard_dtls::prepare();
}

/// The publisher PC of a participant: it receives the client's media.
pub(crate) fn new_publisher_rtc(now: Instant, dtls: DtlsPeers) -> Rtc {
    let mut exts = ExtensionMap::standard();
    exts.set(dependency_descriptor::ID, dependency_descriptor_extension());
    new_rtc(exts, dtls).build(now)
}

/// The dependency descriptor, which str0m's own map lacks: AV1 SVC publishers say in it
/// where each packet sits (`svc/dependency_descriptor.rs`), and subscribers get it back.
fn dependency_descriptor_extension() -> Extension {
    Extension::with_serializer(
        dependency_descriptor::URI,
        dependency_descriptor::DescriptorExtension,
    )
}

/// The one PC of a single-PC (v1) participant: it receives like a publisher PC and sends
/// like a subscriber PC. str0m's raw packets, for the RTCP about what we forward, cost a
/// copy of each packet the client publishes; transport-wide sequence numbers stay out of
/// the lines we send on (`single_pc.rs`).
pub(crate) fn new_single_rtc(now: Instant, dtls: DtlsPeers) -> Rtc {
    let mut exts = ExtensionMap::standard();
    exts.set(dependency_descriptor::ID, dependency_descriptor_extension());
    new_rtc(exts, dtls).enable_raw_packets(true).build(now)
}

/// The subscriber PC of a participant (or a WHEP viewer): it only sends media.
///
/// It negotiates no transport-wide congestion control extension. That extension only feeds
/// a sender's bandwidth estimator, and these peers run none (no `enable_bwe`), yet str0m
/// keeps a 1000-entry send record for it per peer (~90 KB once full, a sixth of what a
/// video subscriber cost) and the client sends feedback every ~100 ms that we decrypt and
/// throw away. Publisher PCs keep it: the client's own estimator needs our feedback.
///
/// Nor abs-send-time, for the same reason and one more: a receiver without transport-wide
/// feedback estimates from it (REMB, `remb.rs`), our send path stamps it from its own
/// origin, and str0m's packets stamped from str0m's would read as a jump in delay. Both
/// are added to the SDP by us (`congestion::offer_feedback_extensions`).
///
/// It hands us the RTCP it receives (str0m's "raw packets"): most forwarded packets leave
/// through our own send path (`rtp_out`), so the NACKs for them are ours to answer.
pub(crate) fn new_subscriber_rtc(now: Instant, dtls: DtlsPeers) -> Rtc {
    let mut exts = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        if !matches!(
            ext,
            Extension::TransportSequenceNumber | Extension::AbsoluteSendTime
        ) {
            exts.set(id, ext.clone());
        }
    }
    exts.set(dependency_descriptor::ID, dependency_descriptor_extension());
    new_rtc(exts, dtls).enable_raw_packets(true).build(now)
}

/// A peer in RTP mode (packets forwarded as packets), ICE-lite (the server is never the
/// controlling agent), with the codecs browsers offer, and RED for Opus: a publisher that
/// sends it has it passed on to the subscribers that negotiated it, and unwrapped for the
/// others (`red.rs`). Opus is offered with NACK (as mediasoup does): a subscriber that
/// keeps it asks for lost audio, which our send path keeps for a second to answer.
fn new_rtc(exts: ExtensionMap, dtls: DtlsPeers) -> RtcConfig {
    let builder = match dtls {
        DtlsPeers::Ecdsa => RtcConfig::new().set_crypto_provider(switchboard_dtls::provider()),
        DtlsPeers::EcdsaOrRsa => {
            RtcConfig::new().set_crypto_provider(crate::dtls_openssl::provider())
        }
    };
    let mut config = builder
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, true)
        .enable_vp8(true)
        .enable_h264(true)
        .enable_vp9(true)
        .enable_av1(true)
        .set_extension_map(exts)
        .set_stats_interval(Some(Duration::from_secs(5)))
        // The video send buffer is also the retransmission history, and each entry is a
        // ~430-byte packet record (the payload itself is shared between subscribers). 300
        // packets are ~1.1 s of 2.5 Mbit/s video (~130 KB per subscriber stream); subscriber
        // streams also get a one-second age limit when they open (`media.rs`,
        // `VIDEO_HISTORY_AGE`). (str0m's default of 1000 was ~430 KB per subscriber stream.)
        .set_send_buffer_video(300);
    for params in config.codec_config().iter_mut() {
        if params.spec().codec == str0m::format::Codec::Opus {
            params.set_fb_nack(true);
        }
    }
    config
}
