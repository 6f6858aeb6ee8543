//! `GET /metrics` of the real binary while real participants exchange media: a publisher
//! sends Opus over ICE/DTLS-SRTP (the str0m peer of signaling's test support) to two
//! subscribers. On loopback nothing is lost, so the forwarded-packet counter must equal
//! exactly what the subscribers received; the gauges and the join latency histogram must
//! count these participants.

mod support;

// The str0m WebRTC peer of signaling's tests; it speaks through this harness's `Client`.
#[allow(dead_code)]
#[path = "../signaling/tests/support/peer.rs"]
mod peer;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::{Client, Req, Resp, Server, WAIT};

/// Every sample of the text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &Server) -> (String, BTreeMap<String, f64>) {
    let response = support::api::http_client()
        .get(format!("{}/metrics", server.http))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("the metrics text");
    let parsed = samples(&text);
    (text, parsed)
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_forwarded_packets_participants_and_join_latency() {
    let server = Server::start();
    let (mut bob, _) = server.join("metrics", "bob", &[]).await;
    let (mut cat, _) = server.join("metrics", "cat", &[]).await;
    let (mut ann, _) = server.join("metrics", "ann", &[]).await;
    ann.add_audio_track("mic-1").await;
    let ann_media = ann.connect_publisher(Some("mic-1")).await;
    let bob_media = bob.accept_subscriber().await;
    let cat_media = cat.accept_subscriber().await;
    bob_media.wait_beyond(20).await;
    cat_media.wait_beyond(20).await;

    // Stop the publisher, then wait until nothing more arrives.
    drop(ann_media);
    let received = || bob_media.received() + cat_media.received();
    let mut last = received();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if received() != last {
            last = received();
            quiet_since = Instant::now();
        }
    }

    // The workers flush their counts every 100 ms.
    let deadline = Instant::now() + WAIT;
    let (text, metrics) = loop {
        let (text, metrics) = scrape(&server).await;
        if value(&metrics, "switchboard_packets_forwarded_total") == last as f64
            || Instant::now() > deadline
        {
            break (text, metrics);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        value(&metrics, "switchboard_packets_forwarded_total"),
        last as f64,
        "forwarded packets = packets the subscribers received; metrics:\n{text}"
    );
    let received_by_server = value(&metrics, "switchboard_rtp_packets_received_total");
    assert!(
        received_by_server * 2.0 >= last as f64 && received_by_server > 0.0,
        "{received_by_server} packets in for {last} forwarded to two subscribers"
    );
    assert!(value(&metrics, "switchboard_bytes_forwarded_total") >= 3.0 * last as f64);
    assert!(
        value(
            &metrics,
            r#"switchboard_udp_packets_total{direction="out",kind="rtp"}"#
        ) >= last as f64
    );
    assert_eq!(value(&metrics, "switchboard_participants"), 3.0, "{text}");
    assert_eq!(value(&metrics, "switchboard_rooms"), 1.0, "{text}");
    assert_eq!(
        value(&metrics, "switchboard_media_participants"),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(&metrics, "switchboard_published_tracks"),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&metrics, "switchboard_subscribed_tracks"),
        2.0,
        "{text}"
    );
    let joins = |stage: &str| {
        value(
            &metrics,
            &format!(r#"switchboard_join_latency_seconds_count{{stage="{stage}"}}"#),
        )
    };
    assert_eq!(joins("join_response"), 3.0, "{text}");
    assert_eq!(joins("first_media_received"), 2.0, "{text}");
    assert_eq!(joins("first_media_published"), 1.0, "{text}");
    assert!(
        text.contains(
            r#"switchboard_join_latency_seconds_bucket{stage="join_response",le="+Inf"} 3"#
        ),
        "join latency is a histogram with buckets:\n{text}"
    );
    assert!(text.contains("# TYPE switchboard_media_worker_queue_depth gauge"));
    assert!(text.contains("# TYPE switchboard_media_worker_lag_seconds histogram"));
}
