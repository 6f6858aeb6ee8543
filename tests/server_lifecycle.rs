//! The server's life around signaling: what it records in its embedded SQLite store, and a
//! graceful shutdown on SIGTERM that tells participants to leave.

mod support;

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use sqlx::Row as _;
use support::{open_db, Event, Resp, Server};

/// One `participants` row, as the migration defines it.
#[derive(Debug)]
struct ParticipantRow {
    room_id: String,
    identity: String,
    joined_at: i64,
    left_at: Option<i64>,
    leave_reason: Option<String>,
}

async fn participant_row(pool: &sqlx::SqlitePool, sid: &str) -> ParticipantRow {
    let row = sqlx::query(
        "SELECT room_id, identity, joined_at, left_at, leave_reason \
         FROM connections WHERE sid = ?",
    )
    .bind(sid)
    .fetch_optional(pool)
    .await
    .expect("query participants")
    .unwrap_or_else(|| panic!("no participants row for {sid}"));
    ParticipantRow {
        room_id: row.get("room_id"),
        identity: row.get("identity"),
        joined_at: row.get("joined_at"),
        left_at: row.get("left_at"),
        leave_reason: row.get("leave_reason"),
    }
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn joins_and_leaves_are_recorded() {
    let mut server = Server::start();
    let before = unix_millis();
    let (mut alice, join) = server.join("records", "alice", &["--name", "Alice"]).await;
    let sid = join.participant.unwrap().sid;
    let room_sid = join.room.unwrap().sid;
    alice.assert_alive().await;
    alice.leave().await;
    alice.until_gone().await;
    let status = server.stop();
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let after = unix_millis();

    let pool = open_db(&server).await;
    let room = sqlx::query("SELECT sid, status, created_at FROM rooms WHERE room_id = ?")
        .bind("records")
        .fetch_one(&pool)
        .await
        .expect("a rooms row for the room");
    assert_eq!(room.get::<String, _>("sid"), room_sid);
    assert_eq!(
        room.get::<String, _>("status"),
        "active",
        "a room stays active until its empty_timeout"
    );
    let created: i64 = room.get("created_at");
    assert!(
        (before - 1000..=after).contains(&created),
        "created_at {created}"
    );

    let row = participant_row(&pool, &sid).await;
    assert_eq!(row.room_id, "records");
    assert_eq!(row.identity, "alice");
    let left = row.left_at.expect("left_at is set after a leave");
    assert!(
        before - 1000 <= row.joined_at && row.joined_at <= left && left <= after,
        "joined {} left {left}, test ran {before}..{after}",
        row.joined_at
    );
    assert_eq!(row.leave_reason.as_deref(), Some("CLIENT_INITIATED"));
    let name: String = sqlx::query_scalar("SELECT name FROM connections WHERE sid = ?")
        .bind(&sid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "Alice");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_tells_participants_to_leave_and_exits_cleanly() {
    let mut server = Server::start();
    // Several participants in two rooms: every one of them must be told and recorded.
    let mut clients = Vec::new();
    for (room, identity) in [
        ("shutdown", "alice"),
        ("shutdown", "bob"),
        ("shutdown", "carol"),
        ("shutdown-2", "dave"),
        ("shutdown-2", "erin"),
        ("shutdown-2", "frank"),
    ] {
        let (mut client, join) = server.join(room, identity, &[]).await;
        client.assert_alive().await;
        clients.push((join.participant.unwrap().sid, client));
    }

    let started = Instant::now();
    server.terminate();
    for (sid, client) in &mut clients {
        let leave = client
            .expect("a LeaveRequest on shutdown", |r| match r {
                Resp::Leave(l) => Some(l.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            leave.reason,
            proto::DisconnectReason::ServerShutdown as i32,
            "{sid}"
        );
        assert_eq!(
            leave.action,
            proto::leave_request::Action::Disconnect as i32
        );
        match client.next_event().await {
            Event::Closed(_) | Event::Ended(_) => {}
            Event::Response(other) => panic!("after the leave the socket closes, got {other:?}"),
        }
    }
    let status = server.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );

    let pool = open_db(&server).await;
    let mut unrecorded = Vec::new();
    for (sid, _) in &clients {
        let row = participant_row(&pool, sid).await;
        if row.leave_reason.as_deref() != Some("SERVER_SHUTDOWN") || row.left_at.is_none() {
            unrecorded.push(row);
        }
    }
    assert!(
        unrecorded.is_empty(),
        "every participant's row must say SERVER_SHUTDOWN; these do not: {unrecorded:#?}"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_evicted_duplicate_is_recorded_as_such() {
    let mut server = Server::start();
    let (mut old, old_join) = server.join("dup-records", "alice", &[]).await;
    let old_sid = old_join.participant.unwrap().sid;
    let (mut new, new_join) = server.join("dup-records", "alice", &[]).await;
    let new_sid = new_join.participant.unwrap().sid;
    let leave = old
        .expect("the eviction", |r| match r {
            Resp::Leave(l) => Some(l.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::DuplicateIdentity as i32
    );
    old.until_gone().await;
    new.leave().await;
    new.until_gone().await;
    let status = server.stop();
    assert!(status.success(), "clean exit after SIGTERM: {status}");

    let pool = open_db(&server).await;
    let evicted = participant_row(&pool, &old_sid).await;
    assert_eq!(evicted.identity, "alice");
    assert_eq!(
        evicted.leave_reason.as_deref(),
        Some("DUPLICATE_IDENTITY"),
        "{evicted:?}"
    );
    assert!(evicted.left_at.is_some());
    let replacement = participant_row(&pool, &new_sid).await;
    assert_eq!(replacement.identity, "alice");
    assert_eq!(
        replacement.leave_reason.as_deref(),
        Some("CLIENT_INITIATED")
    );
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM connections WHERE room_id = 'dup-records'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 2, "one row per connection, the older one kept");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_room_is_closed_after_its_empty_timeout() {
    let mut server = Server::start_with(&["--empty-timeout", "1s"]);
    let (mut alice, _) = server.join("brief", "alice", &[]).await;
    alice.leave().await;
    alice.until_gone().await;
    let left = unix_millis();
    let pool = open_db(&server).await;
    // Await the timer's effect on the record (bounded); nothing else would change it. The
    // recorder writes a join-opened room just after the join, so the row itself may still
    // be on its way when the leave has already been answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, closed_at) = loop {
        let row = sqlx::query("SELECT status, closed_at FROM rooms WHERE room_id = 'brief'")
            .fetch_optional(&pool)
            .await
            .expect("the rooms table can be read");
        let (status, closed_at) = match row {
            Some(row) => (
                row.get::<String, _>("status"),
                row.get::<Option<i64>, _>("closed_at"),
            ),
            None => ("not recorded".to_owned(), None),
        };
        if status == "closed" || Instant::now() > deadline {
            break (status, closed_at);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, "closed", "the room closes once empty for 1 s");
    let closed_at = closed_at.expect("closed_at is set");
    assert!(
        closed_at >= left + 900,
        "closed {} ms after the last leave; the timeout is 1 s",
        closed_at - left
    );
    assert!(server.stop().success());
}
