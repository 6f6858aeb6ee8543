use livekit_protocol as proto;
use proto::signal_response::Message as Resp;

use super::*;

fn snapshot(sid: &str, version: u32, metadata_len: usize) -> SharedFrame {
    SharedFrame::encode(Resp::Update(proto::ParticipantUpdate {
        participants: vec![proto::ParticipantInfo {
            sid: sid.into(),
            version,
            metadata: "m".repeat(metadata_len),
            ..Default::default()
        }],
    }))
}

/// What was queued, as (sid, version) for updates and a word for the rest.
fn drain(inbox: &mut Inbox) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(msg) = inbox.try_recv() {
        out.push(match msg {
            SessionMsg::Update(frame) => match frame.decode() {
                Resp::Update(u) => {
                    format!("{}@{}", u.participants[0].sid, u.participants[0].version)
                }
                other => panic!("not an update: {other:?}"),
            },
            SessionMsg::Broadcast(_) => "room".into(),
            SessionMsg::Signal(_) => "signal".into(),
            SessionMsg::Permission(_) => "permission".into(),
            SessionMsg::Leave(reason) => format!("leave:{}", reason.as_str()),
        });
    }
    out
}

fn mute() -> SessionMsg {
    SessionMsg::Signal(Box::new(Resp::Mute(proto::MuteTrackRequest {
        sid: "TR_1".into(),
        muted: true,
    })))
}

#[test]
fn n_changes_of_one_participant_leave_one_snapshot_the_newest() {
    let (outbox, mut inbox) = channel(usize::MAX);
    for version in 1..=1000 {
        outbox
            .update("PA_a", snapshot("PA_a", version, 10))
            .unwrap();
    }
    outbox.update("PA_b", snapshot("PA_b", 1, 10)).unwrap();
    assert_eq!(
        inbox.queued_bytes(),
        snapshot("PA_a", 1000, 10).len() + snapshot("PA_b", 1, 10).len(),
        "only the newest snapshot of each is counted"
    );
    assert_eq!(drain(&mut inbox), ["PA_a@1000", "PA_b@1"]);
    assert_eq!(inbox.queued_bytes(), 0);
}

#[test]
fn a_newer_snapshot_moves_behind_what_was_queued_before_it() {
    let (outbox, mut inbox) = channel(usize::MAX);
    outbox.update("PA_a", snapshot("PA_a", 1, 0)).unwrap();
    outbox.send(mute()).unwrap();
    outbox.update("PA_b", snapshot("PA_b", 1, 0)).unwrap();
    outbox.update("PA_a", snapshot("PA_a", 2, 0)).unwrap();
    outbox.room_update(snapshot("room", 1, 0)).unwrap();
    outbox.room_update(snapshot("room", 2, 0)).unwrap();
    // The mute request stays ahead of the snapshot that shows it.
    assert_eq!(drain(&mut inbox), ["signal", "PA_b@1", "PA_a@2", "room"]);
}

#[test]
fn a_leave_goes_first_and_nothing_follows_it() {
    let (outbox, mut inbox) = channel(usize::MAX);
    outbox.update("PA_a", snapshot("PA_a", 1, 0)).unwrap();
    outbox
        .send(SessionMsg::Leave(LeaveReason::ParticipantRemoved))
        .unwrap();
    outbox
        .send(SessionMsg::Leave(LeaveReason::RoomDeleted))
        .unwrap();
    outbox.update("PA_b", snapshot("PA_b", 1, 0)).unwrap();
    assert_eq!(drain(&mut inbox), ["leave:PARTICIPANT_REMOVED"]);
    outbox.update("PA_c", snapshot("PA_c", 1, 0)).unwrap();
    assert_eq!(drain(&mut inbox), Vec::<String>::new());
}

#[test]
fn a_reader_too_far_behind_is_told_to_leave_as_a_slow_client() {
    let one = snapshot("PA_0", 1, 1000).len();
    let (outbox, mut inbox) = channel(10 * one);
    // Distinct participants do not coalesce: the 11th overflows.
    for n in 0..10 {
        outbox
            .update(&format!("PA_{n}"), snapshot(&format!("PA_{n}"), 1, 1000))
            .unwrap();
    }
    assert_eq!(inbox.queued_bytes(), 10 * one, "at the limit, still queued");
    outbox.update("PA_x", snapshot("PA_x", 1, 1000)).unwrap();
    assert_eq!(inbox.queued_bytes(), 0, "the backlog is freed at once");
    assert_eq!(drain(&mut inbox), ["leave:signal_backpressure"]);
}

#[test]
fn repeated_changes_never_overflow_a_reader_that_is_behind() {
    let one = snapshot("PA_a", 1, 1000).len();
    let (outbox, mut inbox) = channel(3 * one);
    for version in 1..=10_000 {
        outbox
            .update("PA_a", snapshot("PA_a", version, 1000))
            .unwrap();
        outbox
            .update("PA_b", snapshot("PA_b", version, 1000))
            .unwrap();
    }
    assert_eq!(drain(&mut inbox), ["PA_a@10000", "PA_b@10000"]);
}

#[tokio::test]
async fn the_room_learns_when_the_session_is_gone() {
    let (outbox, mut inbox) = channel(usize::MAX);
    outbox.send(mute()).unwrap();
    assert!(matches!(inbox.recv().await, Some(SessionMsg::Signal(_))));
    let waiter = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.closed().await })
    };
    drop(inbox);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("closed() resolves once the session is gone")
        .unwrap();
    assert_eq!(outbox.send(mute()), Err(Gone));
}

#[tokio::test]
async fn recv_wakes_for_a_message_pushed_while_it_waits() {
    let (outbox, mut inbox) = channel(usize::MAX);
    let reader = tokio::spawn(async move {
        inbox
            .recv()
            .await
            .map(|m| matches!(m, SessionMsg::Broadcast(_)))
    });
    tokio::task::yield_now().await;
    outbox.room_update(snapshot("room", 1, 0)).unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("the reader woke")
        .unwrap();
    assert_eq!(got, Some(true));
}

#[tokio::test]
async fn a_parked_session_takes_only_the_leave_and_keeps_the_rest_queued() {
    let (outbox, mut inbox) = channel(usize::MAX);
    outbox.update("PA_a", snapshot("PA_a", 1, 10)).unwrap();
    outbox.send(mute()).unwrap();
    // Updates alone do not end the wait.
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        inbox.leave_requested(),
    )
    .await;
    assert!(waited.is_err(), "no leave yet");
    assert!(inbox.queued_bytes() > 0, "the updates stay queued");

    let parked = tokio::spawn(async move {
        let reason = inbox.leave_requested().await;
        (reason, drain(&mut inbox))
    });
    outbox
        .send(SessionMsg::Leave(LeaveReason::ParticipantRemoved))
        .unwrap();
    let (reason, rest) = parked.await.unwrap();
    assert_eq!(reason, LeaveReason::ParticipantRemoved);
    assert!(rest.is_empty(), "nothing is read after a leave: {rest:?}");
}
