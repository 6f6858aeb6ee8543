//! Redundant audio (RED, RFC 2198) through a real in-process server between real WebRTC
//! peers: a publisher that sends Opus wrapped in RED reaches a subscriber that negotiated RED
//! and one that did not, each getting the Opus frames it can decode (sfu/src/red.rs).

mod support;

use std::time::Duration;

use support::Server;

const FRAMES: u64 = 10;

#[tokio::test(flavor = "multi_thread")]
async fn red_audio_reaches_subscribers_with_and_without_red_intact() {
    let server = Server::start().await;
    let (mut plain, _) = server.join("choir", "plain").await;
    let (mut red, _) = server.join("choir", "red").await;
    let (mut ann, _) = server.join("choir", "ann").await;
    // AddTrackRequest without disable_red: the server's answer puts RED first, and the
    // support peer asserts it was accepted, so what it sends is RED.
    ann.add_audio_track("mic-1").await;
    let _ann_media = ann.connect_publisher_with_red("mic-1").await;
    let plain_media = plain.accept_subscriber().await;
    let red_media = red.accept_subscriber_with_red().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while plain_media.intact() < FRAMES || red_media.intact() < FRAMES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "frames received intact: without RED {} of {}, with RED {} of {}",
            plain_media.intact(),
            plain_media.received(),
            red_media.intact(),
            red_media.received()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
