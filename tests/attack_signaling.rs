//! Attacks on `/rtc` signaling with nothing more than a join token, against the real binary
//! (issue 17, items 1, 2 and the participant part of 10): a track flood, a client that stops
//! reading, oversize metadata and attributes, a data-channel flood and a request flood. Each
//! test asserts the bound and that everyone else in the room is still served.

mod support;

// The str0m WebRTC peer of signaling's tests; it speaks through this harness's `Client`.
#[allow(dead_code)]
#[path = "../signaling/tests/support/peer.rs"]
mod peer;

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::request_response::{Reason, Request};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::api::{admin_token, eventually, grant_token, guest_token, http_client, Api};
use support::{join_claims, rtc_url, sign, Client, Event, Req, Resp, Server, DEV_SECRET, WAIT};
use tokio_tungstenite::tungstenite::Error as WsError;

fn audio_track(cid: &str) -> Req {
    Req::AddTrack(proto::AddTrackRequest {
        cid: cid.to_owned(),
        name: "microphone".to_owned(),
        r#type: proto::TrackType::Audio as i32,
        source: proto::TrackSource::Microphone as i32,
        ..Default::default()
    })
}

/// A join token that may update its own metadata.
fn metadata_token(room: &str, identity: &str) -> String {
    grant_token(
        identity,
        json!({ "room": room, "roomJoin": true, "canUpdateOwnMetadata": true }),
    )
}

/// A line of `/proc/<pid>/status`, in kB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// User plus system CPU time of the process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Reads `client` until a pong arrives, checking every ParticipantUpdate on the way.
async fn read_until_pong(client: &mut Client, mut check: impl FnMut(&proto::ParticipantInfo)) {
    client.send(Req::Ping(7)).await;
    loop {
        match client.next_event().await {
            Event::Response(Resp::Pong(7)) => return,
            Event::Response(Resp::Update(update)) => {
                update.participants.iter().for_each(&mut check)
            }
            Event::Response(_) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

/// The `participant_left` event recorded for `identity` in `room`.
async fn recorded_leave(api: &Api, room: &str, identity: &str) -> Value {
    eventually(&format!("{identity}'s leave to be recorded"), || async {
        let events = api.all_events(room).await;
        events
            .iter()
            .find(|e| {
                e["kind"] == "participant_left"
                    && e["payload"]["participant"]["identity"] == identity
            })
            .map(|e| e["payload"]["participant"].clone())
            .ok_or_else(|| format!("{} events", events.len()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_track_flood_is_refused_after_the_limit_and_the_room_stays_cheap() {
    // The request rate limit would stop this flood first; it is not what is tested here.
    let server = Server::start_with(&["--limit", "signal_requests_per_second=100000"]);
    let room = "track-flood";
    let (mut watcher, _) = Client::join(&server.ws, &guest_token(room, "watcher")).await;
    let (mut flooder, join) = Client::join(&server.ws, &guest_token(room, "flooder")).await;
    let flooder_sid = join.participant.expect("own info").sid;
    read_until_pong(&mut watcher, |_| {}).await;
    let pid = server.pid();
    let (rss_before, cpu_before) = (proc_status_kib(pid, "VmRSS:"), cpu_time(pid));

    const FLOOD: usize = 1000;
    const LIMIT: usize = 8; // the default of max_tracks_per_participant
    for n in 0..FLOOD {
        flooder.send(audio_track(&format!("mic-{n}"))).await;
    }
    let (mut published, mut refused) = (Vec::new(), Vec::new());
    while published.len() + refused.len() < FLOOD {
        match flooder.next_event().await {
            Event::Response(Resp::TrackPublished(p)) => published.push(p.cid),
            Event::Response(Resp::RequestResponse(r)) => refused.push(r),
            Event::Response(_) => {}
            other => panic!("the flooder's connection ended: {other:?}"),
        }
    }
    assert_eq!(
        published.len(),
        LIMIT,
        "the first {LIMIT} tracks are published"
    );
    assert_eq!(refused.len(), FLOOD - LIMIT);
    let first = &refused[0];
    assert_eq!(first.reason, Reason::LimitExceeded as i32, "{first:?}");
    assert!(
        first.message.contains("at most 8 tracks"),
        "the refusal says why: {:?}",
        first.message
    );
    assert!(
        matches!(&first.request, Some(Request::AddTrack(t)) if t.cid == format!("mic-{LIMIT}")),
        "the refusal names the request (livekit-client matches it by cid): {first:?}"
    );

    // Everyone else is still served, and never saw more than the limit.
    let mut most = 0;
    read_until_pong(&mut watcher, |p| {
        if p.sid == flooder_sid {
            most = most.max(p.tracks.len());
        }
    })
    .await;
    assert!(most <= LIMIT, "the watcher saw {most} tracks");
    let (mut late, late_join) = Client::join(&server.ws, &guest_token(room, "late")).await;
    let seen = late_join
        .other_participants
        .iter()
        .find(|p| p.sid == flooder_sid)
        .expect("the flooder is listed");
    assert_eq!(seen.tracks.len(), LIMIT);
    late.assert_alive().await;
    flooder.assert_alive().await;

    let rss_growth_mib = proc_status_kib(pid, "VmRSS:").saturating_sub(rss_before) / 1024;
    let cpu = cpu_time(pid) - cpu_before;
    eprintln!("track flood of {FLOOD}: RSS +{rss_growth_mib} MiB, CPU {cpu:?}");
    assert!(rss_growth_mib < 32, "RSS grew by {rss_growth_mib} MiB");
    assert!(
        cpu < Duration::from_secs(5),
        "the flood cost {cpu:?} of CPU"
    );

    // Only the published tracks are recorded (each would be a webhook).
    flooder.leave().await;
    let api = Api::new(&server.http, Some(&admin_token(room, "ops")));
    recorded_leave(&api, room, "flooder").await;
    let tracks = api
        .all_events(room)
        .await
        .iter()
        .filter(|e| e["kind"] == "track_published")
        .count();
    assert_eq!(tracks, LIMIT, "track_published events");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_disconnected_within_the_write_timeout() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    // The churner is over the default request rate: that is not what is tested here.
    let server = Server::start_with(&[
        "--limit",
        "signal_write_timeout=2s",
        "--limit",
        "signal_requests_per_second=100000",
    ]);
    let room = "stuck";
    // Joins, then never reads again (the socket stays open).
    let (stuck, stuck_join) = Client::join(&server.ws, &guest_token(room, "stuck")).await;
    let stuck_sid = stuck_join.participant.expect("own info").sid;
    let (mut churner, _) = Client::join(&server.ws, &metadata_token(room, "churner")).await;

    // Metadata changes of 60 KB each, every one broadcast to the stuck client too, until
    // more than the socket buffers of a loopback connection can hold has been sent to it.
    const FILL: usize = 24 << 20;
    let started = Instant::now();
    let mut filled_at = None;
    let mut sent = 0;
    let mut n = 0u32;
    let gone_at = loop {
        if filled_at.is_none() {
            n += 1;
            let metadata = format!("{n:08}{}", "x".repeat(60_000));
            churner
                .send(Req::UpdateMetadata(proto::UpdateParticipantMetadata {
                    metadata,
                    request_id: n,
                    ..Default::default()
                }))
                .await;
            sent += 60_000;
            if sent >= FILL {
                filled_at = Some(Instant::now());
            }
        }
        let deadline = filled_at.unwrap_or(started + Duration::from_secs(60))
            + WRITE_TIMEOUT
            + Duration::from_secs(4);
        assert!(
            Instant::now() < deadline,
            "the client that stopped reading is still in the room {:?} after {} MB were \
             sent to it (write timeout {WRITE_TIMEOUT:?})",
            started.elapsed(),
            sent >> 20
        );
        // Shorter than the harness's own wait, so that the deadline above is what fails.
        let Ok(event) =
            tokio::time::timeout(Duration::from_millis(500), churner.next_event()).await
        else {
            continue;
        };
        match event {
            Event::Response(Resp::Update(update)) => {
                let gone = update.participants.iter().any(|p| {
                    p.sid == stuck_sid
                        && p.state == proto::participant_info::State::Disconnected as i32
                });
                if gone {
                    break Instant::now();
                }
            }
            Event::Response(_) => {}
            other => panic!("the churner's connection ended: {other:?}"),
        }
    };
    eprintln!(
        "the stuck client left {:?} after the churn began ({} MB sent to it)",
        gone_at - started,
        sent >> 20
    );
    if let Some(filled_at) = filled_at {
        assert!(
            gone_at - filled_at <= WRITE_TIMEOUT + Duration::from_secs(3),
            "disconnected {:?} after the socket was surely full",
            gone_at - filled_at
        );
    }
    churner.assert_alive().await;
    drop(stuck);

    let api = Api::new(&server.http, Some(&admin_token(room, "ops")));
    let left = recorded_leave(&api, room, "stuck").await;
    assert_eq!(left["leave_reason"], "signal_backpressure", "{left}");
}

/// The `/rtc` upgrade is refused with 400 and a body that mentions `says`.
async fn refused_with_400(server: &Server, token: &str, says: &str) {
    match Client::connect(&rtc_url(&server.ws, token, "")).await {
        Ok(_) => panic!("a token with an oversize {says} was accepted"),
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 400, "{says}");
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).into_owned();
            assert!(
                body.contains(says),
                "the refusal must mention {says}: {body:?}"
            );
        }
        Err(other) => panic!("expected a 400 refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_metadata_attributes_and_names_are_refused_and_nothing_is_broadcast() {
    let server = Server::start_with(&[
        "--limit",
        "max_participant_metadata_bytes=1KiB",
        "--limit",
        "max_participant_attributes=4",
        "--limit",
        "max_participant_attributes_bytes=256",
        "--limit",
        "max_participant_name_bytes=32",
        "--limit",
        "max_room_metadata_bytes=1KiB",
    ]);
    let room = "sizes";
    let with = |extra: Value| {
        let mut claims = join_claims(room, "big");
        for (key, value) in extra.as_object().expect("an object") {
            claims[key] = value.clone();
        }
        sign(&claims, DEV_SECRET)
    };

    // Join tokens: refused before the upgrade, with the reason.
    refused_with_400(
        &server,
        &with(json!({ "metadata": "m".repeat(1025) })),
        "metadata",
    )
    .await;
    refused_with_400(&server, &with(json!({ "name": "n".repeat(33) })), "name").await;
    let five: serde_json::Map<String, Value> =
        (0..5).map(|i| (format!("k{i}"), json!("v"))).collect();
    refused_with_400(&server, &with(json!({ "attributes": five })), "attributes").await;
    refused_with_400(
        &server,
        &with(json!({ "attributes": { "k": "v".repeat(300) } })),
        "attributes",
    )
    .await;
    // WHIP and WHEP take the same token: refused the same way, before the offer is read.
    for path in ["whip", "whep"] {
        let reply = http_client()
            .post(format!("{}/{path}", server.http))
            .bearer_auth(with(json!({ "metadata": "m".repeat(1025) })))
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body("v=0\r\n")
            .send()
            .await
            .expect("POST");
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "/{path}");
        let problem: Value = reply.json().await.expect("a problem document");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("metadata"),
            "/{path}: {problem}"
        );
    }
    // At the limits: accepted.
    let (mut ok, _) = Client::join(
        &server.ws,
        &with(json!({ "metadata": "m".repeat(1024), "name": "n".repeat(32) })),
    )
    .await;
    ok.assert_alive().await;

    // UpdateParticipantMetadata over a limit: a RequestResponse for that request, and the
    // room never hears of it.
    let (mut watcher, _) = Client::join(&server.ws, &guest_token(room, "watcher")).await;
    let (mut talker, join) = Client::join(&server.ws, &metadata_token(room, "talker")).await;
    let talker_sid = join.participant.expect("own info").sid;
    let refusals = [
        (
            41,
            proto::UpdateParticipantMetadata {
                metadata: "m".repeat(2000),
                request_id: 41,
                ..Default::default()
            },
            "metadata",
        ),
        (
            42,
            proto::UpdateParticipantMetadata {
                attributes: (0..5).map(|i| (format!("k{i}"), "v".into())).collect(),
                request_id: 42,
                ..Default::default()
            },
            "attributes",
        ),
        (
            43,
            proto::UpdateParticipantMetadata {
                name: "n".repeat(40),
                request_id: 43,
                ..Default::default()
            },
            "name",
        ),
    ];
    for (id, update, says) in refusals {
        talker.send(Req::UpdateMetadata(update)).await;
        let response = talker
            .expect("a RequestResponse", |r| match r {
                Resp::RequestResponse(r) => Some(r.clone()),
                _ => None,
            })
            .await;
        assert_eq!(response.request_id, id);
        assert_eq!(
            response.reason,
            Reason::LimitExceeded as i32,
            "{response:?}"
        );
        assert!(response.message.contains(says), "{response:?}");
    }
    talker
        .send(Req::UpdateMetadata(proto::UpdateParticipantMetadata {
            metadata: "small".into(),
            request_id: 44,
            ..Default::default()
        }))
        .await;
    let mut big_seen = false;
    let info = watcher
        .expect_participant("the accepted update", &talker_sid, |p| {
            big_seen |= p.metadata.len() > 1024 || p.attributes.len() > 4 || p.name.len() > 32;
            p.metadata == "small"
        })
        .await;
    assert!(!big_seen, "a refused update was broadcast");
    assert!(info.attributes.is_empty());

    // Room metadata through the API: refused whole, with the limit.
    let api = Api::new(&server.http, Some(&admin_token(room, "ops")));
    api.patch(
        &format!("/v1/rooms/{room}"),
        &json!({ "metadata": "r".repeat(2000) }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["metadata", "1024"]);
    api.post(
        "/v1/rooms",
        &json!({ "room_id": "roomy", "metadata": "r".repeat(2000) }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["metadata", "1024"]);
    watcher.assert_alive().await;
}

fn user_packet(topic: &str, payload: Vec<u8>) -> proto::DataPacket {
    // `kind` is deprecated upstream but still set by clients.
    #[allow(deprecated)]
    proto::DataPacket {
        kind: proto::data_packet::Kind::Reliable as i32,
        value: Some(proto::data_packet::Value::User(proto::UserPacket {
            payload,
            topic: Some(topic.to_owned()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn topic(packet: &proto::DataPacket) -> String {
    match &packet.value {
        Some(proto::data_packet::Value::User(user)) => user.topic.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_flood_is_rate_limited_and_the_others_still_talk() {
    const RATE: usize = 20;
    let server = Server::start_with(&["--limit", "data_packets_per_second=20"]);
    let room = "data-flood";
    let (mut receiver, _) = Client::join(&server.ws, &guest_token(room, "receiver")).await;
    let mut inbox = receiver.open_data().await;
    let (mut flooder, _) = Client::join(&server.ws, &guest_token(room, "flooder")).await;
    let flood = flooder.open_data().await;
    let (mut friend, _) = Client::join(&server.ws, &guest_token(room, "friend")).await;
    let friendly = friend.open_data().await;

    const FLOOD: usize = 400;
    let started = Instant::now();
    for n in 0..FLOOD {
        flood.send("_reliable", &user_packet("flood", vec![n as u8; 200]));
    }
    // The reliable channel keeps order: once a marker sent after the flood arrives, the
    // flood has been judged. A marker can itself be over the rate: send one every 100 ms.
    let mut flood_received = 0;
    let mut next_marker = Instant::now();
    loop {
        if Instant::now() >= next_marker {
            flood.send("_reliable", &user_packet("marker", Vec::new()));
            next_marker += Duration::from_millis(100);
        }
        let packet = tokio::time::timeout(Duration::from_millis(100), inbox.next()).await;
        match packet {
            Ok((_, packet)) if topic(&packet) == "flood" => flood_received += 1,
            Ok((_, packet)) if topic(&packet) == "marker" => break,
            Ok(_) => {}
            Err(_) => assert!(started.elapsed() < 3 * WAIT, "no marker arrived"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = RATE + (RATE as f64 * elapsed).ceil() as usize;
    eprintln!("{flood_received} of {FLOOD} flood packets relayed in {elapsed:.2} s");
    assert!(
        flood_received >= RATE / 2 && flood_received <= allowed,
        "{flood_received} packets relayed; the rate allows {allowed}"
    );

    // Someone else's bucket is their own.
    friendly.send("_reliable", &user_packet("hello", b"hi".to_vec()));
    loop {
        let (_, packet) = inbox.next().await;
        if topic(&packet) == "hello" {
            assert_eq!(packet.participant_identity, "friend");
            break;
        }
    }
    receiver.assert_alive().await;
    friend.assert_alive().await;
    flooder.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_flood_is_closed_with_a_reason_and_recorded() {
    let server = Server::start_with(&["--limit", "signal_requests_per_second=10"]);
    let room = "chatty";
    let (mut bystander, _) = Client::join(&server.ws, &guest_token(room, "bystander")).await;
    let (mut chatty, _) = Client::join(&server.ws, &guest_token(room, "chatty")).await;
    // Ten a second, bursts of forty: two hundred at once is far over.
    // The server may close the socket before the last of them is written.
    for n in 0..200 {
        if !chatty.try_send(Req::Ping(n)).await {
            break;
        }
    }
    let frame = chatty.expect_close().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(
        frame.reason.contains("signaling requests per second"),
        "{:?}",
        frame.reason
    );
    bystander.assert_alive().await;
    let api = Api::new(&server.http, Some(&admin_token(room, "ops")));
    let left = recorded_leave(&api, room, "chatty").await;
    assert_eq!(left["leave_reason"], "signal_rate_limited", "{left}");
}

/// `switchboard_data_dropped_total{why="…"}` from the server's metrics.
async fn data_dropped(server: &Server, why: &str) -> f64 {
    let text = http_client()
        .get(format!("{}/metrics", server.http))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let series = format!("switchboard_data_dropped_total{{why=\"{why}\"}}");
    text.lines()
        .filter_map(|line| line.strip_prefix(&series))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn data_sent_while_the_session_cannot_write_waits_within_its_budget() {
    // The flooder's session is kept blocked on a write (a long write timeout) while the
    // flooder sends far more data than the budget: what waits for the session is bounded.
    const BUDGET: usize = 256 << 10;
    let server = Server::start_with(&[
        "--limit",
        "signal_write_timeout=120s",
        "--limit",
        "signal_requests_per_second=100000",
        "--limit",
        "data_queue_bytes=256KiB",
    ]);
    let room = "data-queue";
    let (mut flooder, _) = Client::join(&server.ws, &guest_token(room, "flooder")).await;
    let flood = flooder.open_data().await;
    // The flooder never reads its WebSocket again: 24 MB of room metadata updates sent to
    // it fill the loopback socket's buffers, and its session waits in a write.
    let api = Api::new(&server.http, Some(&admin_token(room, "ops")));
    for n in 0..400u32 {
        api.patch(
            &format!("/v1/rooms/{room}"),
            &json!({ "metadata": format!("{n:08}{}", "x".repeat(60_000)) }),
        )
        .await
        .expect(StatusCode::OK);
    }
    // The session takes nothing while it waits in its write, so once more than the budget
    // has arrived the worker drops the rest. The test peer's SCTP drops what it cannot
    // buffer, so the flood goes out in small steps.
    let chunk = user_packet("flood", vec![7; 1_000]);
    let beyond_budget = 10.0;
    let started = Instant::now();
    let mut sent = 0;
    let mut dropped = 0.0;
    while dropped < beyond_budget {
        assert!(
            started.elapsed() < 6 * WAIT,
            "{dropped} data packets dropped after {sent} were sent in {:?}: more than the \
             {BUDGET}-byte budget waits for a session that cannot take it",
            started.elapsed()
        );
        for _ in 0..20 {
            flood.send("_reliable", &chunk);
        }
        sent += 20;
        tokio::time::sleep(Duration::from_millis(100)).await;
        dropped = data_dropped(&server, "queue").await;
    }
    eprintln!(
        "{dropped} packets of 1 KB dropped after {sent} were sent in {:?} (budget {BUDGET} bytes)",
        started.elapsed()
    );
    // The server itself goes on: a newcomer joins and is answered.
    let (mut newcomer, _) = Client::join(&server.ws, &guest_token(room, "newcomer")).await;
    newcomer.assert_alive().await;
}
