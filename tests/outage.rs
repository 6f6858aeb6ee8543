//! A PostgreSQL outage during activity, against the real binary.
//!
//! The server reaches PostgreSQL (the shared service at 127.0.0.1:5432, in a database of
//! this test's own, dropped at the end) only through a TCP proxy the test controls. Taking
//! the proxy down is what stopping PostgreSQL looks like to the server: open connections are
//! cut and new ones refused. For the outage (`SWITCHBOARD_TEST_OUTAGE_SECS`, 30 s by
//! default) the test checks that media keeps flowing to a subscriber, that joins and leaves
//! go on, that a request needing the database fails at once with 503, and that /readyz says
//! 503. After it: every event of the room is delivered to the webhook receiver exactly once
//! and in order, the log has no gap, and the participants who left during the outage are
//! recorded as left, at the time they left.

mod support;

// The str0m WebRTC peer of signaling's tests; it speaks through this harness's `Client`.
#[allow(dead_code)]
#[path = "../signaling/tests/support/peer.rs"]
mod peer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::api::{admin_token, guest_token, host_token, http_client, Api};
use support::postgres::{Proxy, TestDatabase};
use support::{rtc_url, Client, Req, Resp, Server, WAIT};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "stage";

fn outage_length() -> Duration {
    let secs = std::env::var("SWITCHBOARD_TEST_OUTAGE_SECS")
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .expect("SWITCHBOARD_TEST_OUTAGE_SECS is whole seconds")
        })
        .unwrap_or(30);
    assert!(
        secs >= 6,
        "an outage under 6 s leaves no time for the checks made during it"
    );
    Duration::from_secs(secs)
}

/// Webhooks as they arrived (bodies as JSON), and a notify per arrival.
type Received = Arc<Mutex<Vec<Value>>>;

async fn webhook_receiver() -> (String, Received, Arc<Notify>) {
    let received: Received = Arc::default();
    let arrived = Arc::new(Notify::new());
    let (store, notify) = (Arc::clone(&received), Arc::clone(&arrived));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let (store, notify) = (Arc::clone(&store), Arc::clone(&notify));
            async move {
                let value: Value = serde_json::from_str(&body).expect("webhook bodies are JSON");
                store.lock().unwrap().push(value);
                notify.notify_waiters();
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received, arrived)
}

/// The seqs of the room's webhooks, in arrival order.
fn webhook_seqs(received: &Received) -> Vec<i64> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["roomId"] == ROOM || b["room"]["name"] == ROOM)
        .map(|b| b["seq"].as_i64().expect("a seq in every webhook"))
        .collect()
}

/// Waits until the receiver holds `count` webhooks of the room, for at most `limit`;
/// returns how long it took.
async fn webhooks_reach(
    received: &Received,
    arrived: &Notify,
    count: usize,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = arrived.notified();
        if webhook_seqs(received).len() >= count {
            return started.elapsed();
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!(
                "{count} webhooks did not arrive within {limit:?}; got seqs {:?}",
                webhook_seqs(received)
            );
        }
    }
}

/// A participant kept alive in the background (pings sent, responses drained, its media
/// connection up so the media plane's connect timeout leaves it alone) until told to leave.
struct Member {
    leave: mpsc::UnboundedSender<()>,
    task: JoinHandle<()>,
}

impl Member {
    /// Joins with `token` and connects the publisher PeerConnection (data channels only).
    async fn join(server: &Server, token: &str) -> Member {
        let (client, _) = Client::join(&server.ws, token).await;
        Member::connected(client).await
    }

    /// Connects `client`'s publisher PeerConnection, then keeps it.
    async fn connected(mut client: Client) -> Member {
        let peer = client.open_data().await;
        Member::keep(client, peer)
    }

    fn keep(mut client: Client, peer: peer::DataPeer) -> Member {
        let (leave, mut told) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut ping = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = told.recv() => break,
                    _ = ping.tick() => client.send(Req::Ping(support::now_secs() as i64)).await,
                    frame = client.ws.next() => if frame.is_none() { return },
                }
            }
            client.leave().await;
            // Until the server closes the socket: the leave is then in signaling's hands.
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(WAIT, client.ws.next()).await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
            drop(peer);
        });
        Member { leave, task }
    }

    async fn leave(self) {
        let _ = self.leave.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the server closes a leaving participant's socket")
            .expect("the member task");
    }
}

/// Joins over /rtc during the outage: the JoinResponse, or the refusal, must come within
/// [`WAIT`]. Returns the member if joined.
async fn join_during_outage(server: &Server, identity: &str) -> Option<Member> {
    let url = rtc_url(&server.ws, &guest_token(ROOM, identity), "");
    let started = Instant::now();
    let connected = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
        .await
        .unwrap_or_else(|_| panic!("{identity}'s join hung during the outage"));
    match connected {
        Ok((ws, _)) => {
            let mut client = Client { ws };
            let join = client
                .expect("JoinResponse", |r| match r {
                    Resp::Join(join) => Some(join.clone()),
                    _ => None,
                })
                .await;
            assert_eq!(join.participant.as_ref().unwrap().identity, identity);
            Some(Member::connected(client).await)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(
                response.status().as_u16() == 503 && body.contains("detail"),
                "a join refused during the outage must say why (503 problem+json): {} {body}",
                response.status()
            );
            assert!(started.elapsed() < WAIT);
            None
        }
        Err(e) => panic!("{identity}'s join failed without an HTTP answer: {e}"),
    }
}

/// `GET /readyz`: its status and how long it took.
async fn readyz(server: &Server) -> (StatusCode, Duration, String) {
    let started = Instant::now();
    let response = http_client()
        .get(format!("{}/readyz", server.http))
        .send()
        .await
        .expect("/readyz answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, started.elapsed(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_loses_no_event_and_stops_no_media() {
    let outage = outage_length();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let db = TestDatabase::create(listener.local_addr().unwrap().port()).await;
    let proxy = Proxy::start(listener, db.upstream);
    let (hook, received, arrived) = webhook_receiver().await;
    let mut server = Server::start_with(&["--database-url", &db.url, "--webhook-url", &hook]);
    let api = Api::new(&server.http, Some(&admin_token(ROOM, "backend")));

    // Before: a host (so guests belong to a session), a publisher, a subscriber and three
    // guests who will leave during the outage.
    let host = Member::join(&server, &host_token(ROOM, "hana")).await;
    let (mut ann, _) = Client::join(&server.ws, &guest_token(ROOM, "ann")).await;
    let (mut bob, _) = Client::join(&server.ws, &guest_token(ROOM, "bob")).await;
    ann.add_audio_track("mic-1").await;
    let ann_media = ann.connect_publisher(Some("mic-1")).await;
    let bob_media = bob.accept_subscriber().await;
    bob_media.wait_beyond(20).await;
    let ann = Member::keep(ann, ann_media);
    let bob = Member::connected(bob).await;
    let mut leaving = Vec::new();
    for identity in ["gus", "gia", "gil"] {
        leaving.push(Member::join(&server, &guest_token(ROOM, identity)).await);
    }
    let session = api.open_session_reaches(ROOM, "READY").await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Everything so far is recorded and delivered: 1 room_started, 2 session changes, 6
    // joins and 1 track.
    let before = support::api::eventually("the joins to be recorded", || async {
        let events = api.all_events(ROOM).await;
        let joined = events
            .iter()
            .filter(|e| e["kind"] == "participant_joined")
            .count();
        if joined == 6 && events.iter().any(|e| e["kind"] == "track_published") {
            Ok(events.len())
        } else {
            Err(format!("{:?}", support::api::kinds(&events)))
        }
    })
    .await;
    webhooks_reach(&received, &arrived, before, Duration::from_secs(10)).await;

    // The outage.
    proxy.down().await;
    let down_at = Instant::now();
    let down_utc = chrono::Utc::now();
    let (status, readyz_took, text) = loop {
        let (status, took, text) = readyz(&server).await;
        if status == StatusCode::SERVICE_UNAVAILABLE || down_at.elapsed() > WAIT {
            break (status, took, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "/readyz while the database is down: {text}"
    );
    assert!(
        readyz_took < Duration::from_secs(2),
        "/readyz took {readyz_took:?} to say the database is down"
    );
    assert!(text.contains("not reachable"), "{text}");

    // A request that needs the database fails at once, with a reason.
    let started = Instant::now();
    let reply = api
        .post(
            &format!("/v1/rooms/{ROOM}/tokens"),
            &json!({ "identity": "late-host", "admin": true }),
        )
        .await;
    let mint_took = started.elapsed();
    reply.problem_saying(StatusCode::SERVICE_UNAVAILABLE, &["unreachable"]);
    assert!(
        mint_took < Duration::from_secs(2),
        "minting a host token took {mint_took:?} during the outage"
    );

    // Leaves and joins go on; media keeps flowing.
    let mut media_samples = vec![bob_media.received()];
    for member in leaving.drain(..) {
        member.leave().await;
    }
    let mut joined = Vec::new();
    let mut refused = 0;
    for identity in ["jay", "joy", "jim"] {
        match join_during_outage(&server, identity).await {
            Some(member) => joined.push((identity, member)),
            None => refused += 1,
        }
    }
    // One who joined during the outage also leaves during it.
    if let Some((_, member)) = joined.pop() {
        member.leave().await;
    }
    let joined_identities: Vec<&str> = joined.iter().map(|(i, _)| *i).collect();
    let step = (outage - down_at.elapsed().min(outage)) / 4;
    for _ in 0..4 {
        tokio::time::sleep(step).await;
        media_samples.push(bob_media.received());
    }
    for pair in media_samples.windows(2) {
        // Opus every 20 ms: 50 frames a second; allow for scheduling on a busy machine.
        let expected = (step.as_secs_f64() * 25.0) as u64;
        assert!(
            pair[1] >= pair[0] + expected,
            "media stalled during the outage: subscriber frames {media_samples:?}"
        );
    }
    let (status, _, _) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "still down");
    let outage_took = down_at.elapsed();

    // The database is back.
    proxy.up().await;
    let up_at = Instant::now();
    let up_utc = chrono::Utc::now();
    // gus, gia and gil left; the joins that were not refused, and the last of them left.
    let joins = 3 - refused;
    let expected_total = before + 3 + joins + usize::from(joins > 0);
    let events = support::api::eventually("the queued events to be recorded", || async {
        let reply = api
            .get(&format!("/v1/rooms/{ROOM}/events?after=0&limit=1000"))
            .await;
        if reply.status != StatusCode::OK {
            return Err(reply.text);
        }
        let events = reply.body["events"].as_array().unwrap().clone();
        if events.len() == expected_total {
            Ok(events)
        } else {
            Err(format!("{:?}", support::api::kinds(&events)))
        }
    })
    .await;
    let recorded_after = up_at.elapsed();
    support::api::assert_gapless(&events);
    let during = events.len() - before;
    let mut tail = support::api::kinds(&events[before..]);
    tail.sort();
    let mut expected_tail = vec!["participant_left"; 3 + usize::from(joins > 0)];
    expected_tail.extend(vec!["participant_joined"; joins]);
    expected_tail.sort();
    assert_eq!(tail, expected_tail, "the events of the outage");
    // Delivery, whose retries backed off during the outage, is woken by the first write.
    let delivered_after = webhooks_reach(&received, &arrived, events.len(), Duration::from_secs(3))
        .await
        + recorded_after;
    // Nothing more arrives late (e.g. a duplicate of an event retried across the outage).
    let events = api.all_events(ROOM).await;
    assert_eq!(
        events.len(),
        expected_total,
        "{:?}",
        support::api::kinds(&events)
    );
    let (status, _, _) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "ready again");

    // Exactly once, in order: the webhooks' seqs are the log's, each once.
    let seqs = webhook_seqs(&received);
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(
        seqs, expected,
        "webhooks after the outage: every event once, in order"
    );
    let kinds: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        support::api::kinds(&events),
        "webhooks carry the log's events"
    );

    // The records: who left during the outage left then, who joined is in.
    let rows = api.session_participants(&session).await;
    let row = |identity: &str| {
        rows.iter()
            .find(|r| r["identity"] == identity)
            .unwrap_or_else(|| panic!("no record of {identity}: {rows:#?}"))
            .clone()
    };
    for identity in ["gus", "gia", "gil"] {
        let r = row(identity);
        let left_at: chrono::DateTime<chrono::Utc> = r["left_at"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("{identity} left during the outage but is not recorded as left: {r}")
            })
            .parse()
            .expect("an RFC 3339 time");
        assert!(
            left_at >= down_utc && left_at < up_utc,
            "{identity} is recorded as leaving at {left_at}, not when it left (outage {down_utc} to {up_utc})"
        );
    }
    for identity in &joined_identities {
        assert!(row(identity)["left_at"].is_null(), "{identity} is still in");
    }
    for identity in ["hana", "ann", "bob"] {
        assert!(row(identity)["left_at"].is_null(), "{identity} is still in");
    }
    let still = bob_media.received();
    bob_media.wait_beyond(still + 25).await;

    eprintln!(
        "outage {outage_took:.1?}: /readyz 503 in {readyz_took:.1?}, a host token 503 in {mint_took:.1?}; \
         subscriber frames {media_samples:?}; {during} events during it ({refused} joins refused), \
         recorded {recorded_after:.1?} and delivered {delivered_after:.1?} after the database came back"
    );

    for (_, member) in joined {
        member.leave().await;
    }
    for member in [host, ann, bob] {
        member.leave().await;
    }
    assert!(server.stop().success());
    drop(db);
}

/// `GET /metrics`: the value of one unlabelled sample (0 when absent).
async fn metric(server: &Server, name: &str) -> f64 {
    let text = http_client()
        .get(format!("{}/metrics", server.http))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A flood of joins and leaves during an outage meets a small `recorder_queue_bytes`:
/// newer events are dropped and counted (every event is recorded or counted, none lost
/// silently), the server goes on serving, and after the outage what was kept is recorded
/// and delivered in order and the recorder takes new events again.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_recorder_queue_drops_newer_events_counts_them_and_goes_on() {
    const FLOOD: usize = 20;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let db = TestDatabase::create(listener.local_addr().unwrap().port()).await;
    let proxy = Proxy::start(listener, db.upstream);
    let (hook, received, arrived) = webhook_receiver().await;
    let mut server = Server::start_with(&[
        "--database-url",
        &db.url,
        "--webhook-url",
        &hook,
        "--limit",
        "recorder_queue_bytes=1KiB",
    ]);
    let api = Api::new(&server.http, Some(&admin_token(ROOM, "backend")));
    let host = Member::join(&server, &host_token(ROOM, "hana")).await;
    let before = support::api::eventually("the host's join to be recorded", || async {
        // The room itself is recorded just after the join: 404 until then.
        let reply = api
            .get(&format!("/v1/rooms/{ROOM}/events?after=0&limit=1000"))
            .await;
        let events = reply.body["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["kind"] == "participant_joined") {
            Ok(events.len())
        } else {
            Err(format!("{:?}", support::api::kinds(&events)))
        }
    })
    .await;
    webhooks_reach(&received, &arrived, before, Duration::from_secs(10)).await;

    proxy.down().await;
    support::api::eventually("/readyz to report the outage", || async {
        let (status, _, text) = readyz(&server).await;
        (status == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(())
            .ok_or(text)
    })
    .await;
    for i in 0..FLOOD {
        let token = guest_token(ROOM, &format!("flood-{i}"));
        let (mut client, _) = Client::join(&server.ws, &token).await;
        support::api::leave(&mut client).await;
    }
    let dropped = metric(&server, "switchboard_recorder_events_dropped_total").await;
    assert!(
        dropped > 0.0,
        "{} events for a 1 KiB queue: some must be dropped",
        2 * FLOOD
    );
    let depth = metric(&server, "switchboard_recorder_queue_depth").await;
    assert!(
        depth <= 8.0,
        "a 1 KiB queue holds a handful of events, not {depth}"
    );

    proxy.up().await;
    // Drained: the depth falls to 0, and every event of the flood is either in the log or
    // counted as dropped. The flood's last leave may reach the recorder after `dropped` was
    // read above, so both are read again until they account for the whole flood (an event
    // neither recorded nor counted keeps this waiting until it fails).
    let (events, dropped) = support::api::eventually("the kept events to be recorded", || async {
        let depth = metric(&server, "switchboard_recorder_queue_depth").await;
        let dropped = metric(&server, "switchboard_recorder_events_dropped_total").await;
        let reply = api
            .get(&format!("/v1/rooms/{ROOM}/events?after=0&limit=1000"))
            .await;
        if depth > 0.0 || reply.status != StatusCode::OK {
            return Err(format!("depth {depth}, {}", reply.text));
        }
        let events = reply.body["events"].as_array().unwrap().clone();
        let accounted = (events.len() - before) as f64 + dropped;
        if accounted < (2 * FLOOD) as f64 {
            return Err(format!("{accounted} of {} events accounted for", 2 * FLOOD));
        }
        Ok((events, dropped))
    })
    .await;
    support::api::assert_gapless(&events);
    let kept = events.len() - before;
    assert!(kept > 0, "the events queued before the bound are recorded");
    assert_eq!(
        kept as f64 + dropped,
        (2 * FLOOD) as f64,
        "every event of the flood is recorded or counted as dropped"
    );
    webhooks_reach(&received, &arrived, events.len(), Duration::from_secs(5)).await;
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(webhook_seqs(&received), expected, "each once, in order");

    // The recorder takes new events again.
    let late = Member::join(&server, &guest_token(ROOM, "late")).await;
    support::api::eventually("a join after the outage to be recorded", || async {
        let events = api.all_events(ROOM).await;
        let last = events.last().cloned().unwrap_or_default();
        (last["kind"] == "participant_joined" && last["payload"].to_string().contains("late"))
            .then_some(())
            .ok_or_else(|| last.to_string())
    })
    .await;
    eprintln!(
        "flood during an outage with a 1 KiB queue: {} events, {kept} recorded, {dropped} dropped",
        2 * FLOOD
    );
    late.leave().await;
    host.leave().await;
    assert!(server.stop().success());
    drop(db);
}

/// Stopping while the database is down ends in bounded time: the recorder gives its queue a
/// grace and says what it could not record (the next start's reconciliation closes it).
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_an_outage_ends_in_bounded_time() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let db = TestDatabase::create(listener.local_addr().unwrap().port()).await;
    let proxy = Proxy::start(listener, db.upstream);
    let mut server = Server::start_with(&["--database-url", &db.url]);
    let host = Member::join(&server, &host_token(ROOM, "hana")).await;
    proxy.down().await;
    host.leave().await;
    let started = Instant::now();
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(20));
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
    let log = server.stderr_text();
    assert!(
        log.contains("stopping with events the database did not take"),
        "the unrecorded events are reported:\n{log}"
    );
    eprintln!("stopped during an outage in {took:.1?}");
    drop(db);
}
