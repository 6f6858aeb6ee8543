//! Tests through the in-memory rig (`bench.rs`): real str0m peers on both sides of one
//! worker, the time handed in, nothing on a network.

use super::*;

#[test]
fn one_packet_in_is_one_srtp_packet_out_per_subscriber_and_the_peers_decrypt_it() {
    let mut rig = ForwardRig::new(3, 2).expect("the rig connects");
    assert_three_subscribers_decrypt_what_is_forwarded(&mut rig);
}

/// Every one of the rig's three subscribers sends on our path, gets one packet per packet
/// in, and its client peer decrypts it as RTP.
fn assert_three_subscribers_decrypt_what_is_forwarded(rig: &mut ForwardRig) {
    let direct = rig
        .worker
        .parts
        .iter()
        .flatten()
        .filter(|p| p.key.starts_with("PA_sub") && p.sender().direct.is_some());
    assert_eq!(
        direct.count(),
        3,
        "every connected subscriber peer sends on our path"
    );
    let received: Vec<u64> = rig.subscribers.iter().map(|c| c.rtp_received).collect();
    let before = rig.sent_rtp();
    let datagrams = rig.prepare(10);
    rig.sink.capture.set(true);
    for datagram in datagrams {
        rig.forward(&datagram);
    }
    assert_eq!(rig.sent_rtp() - before, 30);
    rig.pump();
    for (client, before) in rig.subscribers.iter().zip(received) {
        assert_eq!(client.rtp_received - before, 10);
    }
}

#[test]
fn single_pc_subscribers_get_every_packet_on_our_send_path_and_decrypt_it() {
    let mut rig = ForwardRig::single_pc(3).expect("the rig connects");
    assert!(
        rig.worker
            .parts
            .iter()
            .flatten()
            .filter(|p| p.single_pc())
            .count()
            == 3
    );
    assert_three_subscribers_decrypt_what_is_forwarded(&mut rig);
}

/// The worker's slot of the rig's first subscriber.
fn first_subscriber(rig: &ForwardRig) -> crate::participant::Slot {
    *rig.worker
        .by_key
        .get("PA_sub0")
        .expect("the subscriber joined")
}

#[test]
fn the_subscriber_accepts_transport_wide_numbers_and_our_packets_carry_them() {
    let mut rig = ForwardRig::new(1, 0).expect("the rig connects");
    let slot = first_subscriber(&rig);
    let negotiated = rig.worker.parts[slot]
        .as_ref()
        .is_some_and(|p| p.congestion.is_some());
    assert!(negotiated, "the answer kept the extension");
    let received = rig.subscribers[0].rtp_received;
    let datagrams = rig.prepare(3);
    rig.sink.capture.set(true);
    for datagram in &datagrams {
        rig.forward(datagram);
    }
    let stamped = rig
        .sink
        .captured
        .borrow()
        .iter()
        .filter(|(_, data)| is_rtp(data))
        // The X bit, then a one-byte-header block (0xBEDE) after the 12-byte header.
        .filter(|(_, data)| data[0] & 0x10 != 0 && data[12..14] == [0xbe, 0xde])
        .count();
    assert_eq!(stamped, 3);
    rig.pump();
    assert_eq!(
        rig.subscribers[0].rtp_received - received,
        3,
        "and they decrypt"
    );
}

#[test]
fn transport_feedback_is_decrypted_by_our_path_and_reaches_the_estimator() {
    let mut rig = ForwardRig::new(1, 0).expect("the rig connects");
    rig.worker.metrics.hold_flush();
    let slot = first_subscriber(&rig);
    let datagrams = rig.prepare(20);
    rig.sink.capture.set(true);
    for datagram in &datagrams {
        rig.forward(datagram);
    }
    // The subscriber's str0m sends its reports on its own timer (every 50 ms).
    let acknowledged = |rig: &ForwardRig| {
        rig.worker.parts[slot]
            .as_ref()
            .and_then(|p| p.congestion.as_ref())
            .and_then(|c| c.estimator.loss())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while acknowledged(&rig).is_none() && Instant::now() < deadline {
        rig.pump();
        std::thread::yield_now();
    }
    assert_eq!(
        acknowledged(&rig),
        Some(0.0),
        "the estimator judged the packets"
    );
    assert!(
        rig.worker.metrics.feedback_taken > 0,
        "the reports came through our decryption, not str0m's"
    );
}

#[test]
fn on_the_handed_in_clock_subscribers_report_and_the_estimate_follows_or_nothing_is_estimated() {
    let interval = Duration::from_micros(3_650);
    let mut on = ForwardRig::with_estimation(2, true).expect("the rig connects");
    on.worker.metrics.hold_flush();
    // 1.1 s of S1's packet rate: str0m reports every 50 ms, so ~22 reports per subscriber.
    let run = on.forward_with_feedback(300, interval);
    assert_eq!(run.packets, 300);
    assert!(run.replies >= 2 * 15, "{} datagrams back", run.replies);
    let slot = first_subscriber(&on);
    let acked = on.worker.parts[slot]
        .as_ref()
        .and_then(|p| p.congestion.as_ref())
        .and_then(|c| c.estimator.acked_bitrate());
    // 1200-byte payloads every 3.65 ms: ~2.7 Mbit/s on the wire.
    assert!(
        acked.is_some_and(|bps| (2_000_000..3_500_000).contains(&bps)),
        "acknowledged {acked:?}"
    );
    assert!(on.worker.metrics.feedback_taken > 0);

    let mut off = ForwardRig::with_estimation(2, false).expect("the rig connects");
    off.worker.metrics.hold_flush();
    off.forward_with_feedback(300, interval);
    let slot = first_subscriber(&off);
    assert!(off.worker.parts[slot]
        .as_ref()
        .is_some_and(|p| p.congestion.is_none()));
    assert_eq!(off.worker.metrics.feedback_taken, 0);
}

#[test]
fn a_packet_lost_on_the_way_is_resent_when_the_subscriber_nacks_it() {
    let mut rig = ForwardRig::new(1, 0).expect("the rig connects");
    let datagrams = rig.prepare(8);
    let received = rig.subscribers[0].rtp_received;
    let sent = rig.sent_rtp();
    rig.sink.capture.set(true);
    for datagram in &datagrams {
        rig.forward(datagram);
    }
    // The network loses the fourth forwarded packet.
    {
        let mut captured = rig.sink.captured.borrow_mut();
        let lost = captured
            .iter()
            .enumerate()
            .filter(|(_, (_, data))| is_rtp(data))
            .nth(3)
            .map(|(index, _)| index)
            .expect("eight packets were forwarded");
        captured.remove(lost);
    }
    // The subscriber notices the gap and sends a NACK on its own timer; keep the peers
    // talking until the packet arrives or it clearly never will.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.subscribers[0].rtp_received - received < 8 && Instant::now() < deadline {
        rig.pump();
        std::thread::yield_now();
    }
    assert_eq!(
        rig.subscribers[0].rtp_received - received,
        8,
        "the lost packet came"
    );
    assert!(rig.sent_rtp() - sent > 8, "it came as a retransmission");
}

/// Deterministic noise for the hostile datagrams (xorshift; the values only need to
/// be arbitrary, not random).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn hostile_datagrams_are_dropped_and_cost_no_one_their_media() {
    let mut rig = ForwardRig::new(3, 0).expect("the rig connects");
    let valid = rig.prepare(4);
    let mut tampered = valid[0].clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff; // the SRTP tag no longer matches
    let mut rtp_header = vec![0x80, 96, 0, 1, 0, 0, 0, 1];
    rtp_header.extend_from_slice(&valid[0][8..12]); // the publisher's own SSRC
    let mut stun = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    stun.extend(noise(3, 20));
    let mut handshake = vec![22, 0xfe, 0xfd];
    handshake.extend(noise(4, 60));
    let mut app_data = vec![23, 0xfe, 0xfd];
    app_data.extend(noise(5, 60));
    let mut rtcp = vec![0x80, 200, 0, 6];
    rtcp.extend(noise(6, 24));
    let hostile: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x80],
        rtp_header,
        tampered,
        valid[1][..valid[1].len() / 2].to_vec(),
        rtcp,
        stun,
        handshake,
        app_data,
        noise(7, 1500),
        noise(8, 2048),
    ];
    let stranger = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 30_000);
    let sources = [rig.publisher.addr, rig.subscribers[0].addr, stranger];
    let sent_before = rig.sent_rtp();
    for datagram in &hostile {
        for source in sources {
            rig.worker.datagram_turn(datagram, source, Instant::now());
        }
    }
    assert_eq!(rig.sent_rtp(), sent_before, "nothing hostile is forwarded");

    let received: Vec<u64> = rig.subscribers.iter().map(|c| c.rtp_received).collect();
    rig.sink.capture.set(true);
    for datagram in &valid {
        rig.forward(datagram);
    }
    rig.pump();
    assert_eq!(rig.sent_rtp() - sent_before, 4 * 3);
    for (client, before) in rig.subscribers.iter().zip(received) {
        assert_eq!(
            client.rtp_received - before,
            4,
            "every subscriber still gets and decrypts the publisher's media"
        );
    }
}

/// A one-packet VP8 frame as an L1T3 encoder sends it: 15-bit picture id, TL0PICIDX and
/// TID in the descriptor, then the frame header's first byte (P set: a delta frame).
fn l1t3_frame(picture_id: u16, tl0: u8, tid: u8) -> Vec<u8> {
    let mut payload = vec![
        0x90,
        0xe0,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        tl0,
        tid << 6,
        0x01,
    ];
    payload.resize(60, 0);
    payload
}

#[test]
fn a_subscriber_asking_for_fewer_frames_gets_fewer_temporal_layers_with_no_gaps() {
    let mut rig = ForwardRig::new(1, 0).expect("the rig connects");
    let slot = first_subscriber(&rig);
    rig.subscribers[0].record = true;
    // Up to 100 frames a second (10 ms apart, and the work between) in the pattern T0 T2 T1
    // T2: the base layer at most 25 fps, below the 30 asked for, and with T1 at least 27
    // (10 % short of 30) while a frame takes under 18 ms.
    let mut frame = 0u16;
    let mut send = |rig: &mut ForwardRig, frames: u16| {
        for _ in 0..frames {
            let tid = [0, 2, 1, 2][usize::from(frame % 4)];
            let payload = l1t3_frame(1000 + frame, (frame / 4) as u8, tid);
            rig.fuzz_packet(0, 900, true, &payload);
            frame += 1;
            // Media paced as an encoder sends it: the layers' rates are measured over a
            // second of the time the worker is handed.
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Over a second, so the track's temporal layers have been measured.
    send(&mut rig, 112);
    let before = rig.subscribers[0].received.len();
    rig.worker.track_settings(
        slot,
        &["TR_bench".to_owned()],
        crate::api::TrackSettings {
            fps: 30,
            ..Default::default()
        },
    );
    send(&mut rig, 40);
    rig.pump();

    let received: Vec<(u64, u16, u8)> = rig.subscribers[0]
        .received
        .iter()
        .map(|(seq, payload)| {
            let d = crate::vp8_ids::descriptor(payload).expect("a VP8 descriptor");
            let picture_id = d.picture_id.expect("a picture id").1;
            (*seq, picture_id, d.temporal.expect("a temporal layer"))
        })
        .collect();
    let (all, fewer) = received.split_at(before);
    assert!(all.iter().any(|r| r.2 == 2), "all three layers before");
    assert!(
        !fewer.iter().any(|r| r.2 == 2),
        "no T2 after asking for 30 fps: {fewer:?}"
    );
    // 40 frames of which 20 are T2: the other 20 came, numbered as if nothing was left out.
    assert_eq!(fewer.len(), 20, "{fewer:?}");
    for pair in received.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "sequence numbers without gaps: {pair:?}"
        );
        assert_eq!(
            pair[1].1,
            (pair[0].1 + 1) & 0x7fff,
            "picture ids without gaps: {pair:?}"
        );
    }
}

fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
}

/// The ICE ufrag the worker's peer of `slot` uses now.
fn local_ufrag(rig: &mut ForwardRig, slot: crate::participant::Slot) -> String {
    let part = rig.worker.parts[slot]
        .as_mut()
        .expect("the subscriber is there");
    part.sender_mut()
        .rtc
        .direct_api()
        .local_ice_credentials()
        .ufrag
}

#[test]
fn a_subscriber_ice_restart_offers_new_credentials_and_media_flows_again() {
    let mut rig = ForwardRig::new(1, 0).expect("the rig connects");
    let slot = first_subscriber(&rig);
    let before = local_ufrag(&mut rig, slot);
    // The publisher's events come first, then the subscriber's.
    let events = rig._events.last_mut().expect("the subscriber's events");
    while events.try_recv().is_ok() {}

    rig.worker.restart_subscriber_ice(slot);
    let offer = std::iter::from_fn(|| events.try_recv().ok())
        .find_map(|event| match event {
            PeerEvent::SubscriberOffer { sdp, .. } => Some(sdp),
            _ => None,
        })
        .expect("the restart is offered at once");
    let offered = ice_ufrag(&offer).expect("the offer has a ufrag").to_owned();
    assert_ne!(offered, before, "the offer carries new ICE credentials");

    let offer = SdpOffer::from_sdp_string(&offer).unwrap();
    let answer = rig.subscribers[0]
        .rtc
        .sdp_api()
        .accept_offer(offer)
        .unwrap()
        .to_sdp_string();
    rig.worker.subscriber_answer("PA_sub0", &answer).unwrap();
    let received = rig.subscribers[0].rtp_received;
    let started = Instant::now();
    while rig.subscribers[0].rtp_received == received {
        assert!(
            started.elapsed() < SETUP_LIMIT,
            "media reaches the subscriber after the restart"
        );
        let datagrams = rig.prepare(1);
        rig.sink.capture.set(true);
        for datagram in datagrams {
            rig.forward(&datagram);
        }
        rig.pump();
    }
    let now = local_ufrag(&mut rig, slot);
    assert_eq!(now, offered, "the worker's peer uses the new credentials");
}
