use super::*;
use crate::admin::RoomSettings;
use crate::outbox;
use livekit_protocol::participant_info::State;

fn info(sid: &str, identity: &str) -> proto::ParticipantInfo {
    proto::ParticipantInfo {
        sid: sid.into(),
        identity: identity.into(),
        version: 1,
        ..Default::default()
    }
}

fn rooms(timeout_secs: u64, max: u32) -> (Arc<Rooms>, mpsc::UnboundedReceiver<SignalEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let defaults = RoomDefaults {
        empty_timeout: Duration::from_secs(timeout_secs),
        max_participants: max,
    };
    (Arc::new(Rooms::new(defaults, tx)), rx)
}

fn finished(events: &mut mpsc::UnboundedReceiver<SignalEvent>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let SignalEvent::RoomFinished { room_id, .. } = event {
            out.push(room_id);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn an_empty_room_closes_after_its_timeout_unless_someone_returns() {
    let (rooms, mut events) = rooms(300, 0);
    let (tx, _rx) = outbox::channel(usize::MAX);
    rooms.join("a", info("PA_1", "ann"), tx.clone()).unwrap();
    rooms.join("b", info("PA_2", "bob"), tx.clone()).unwrap();
    assert!(rooms.leave("a", "PA_1"));
    assert!(rooms.leave("b", "PA_2"));
    tokio::time::sleep(Duration::from_secs(200)).await;
    // Someone comes back to "b" before its timeout: only "a" closes.
    rooms.join("b", info("PA_3", "bob"), tx).unwrap();
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert_eq!(finished(&mut events), vec!["a".to_owned()]);
    assert_eq!(rooms.participant_count(), 1);
    assert!(
        !rooms.leave("a", "PA_1"),
        "a closed room has no members left"
    );
}

#[tokio::test]
async fn a_duplicate_identity_replaces_the_older_connection() {
    let (rooms, _events) = rooms(300, 0);
    let (old_tx, mut old_rx) = outbox::channel(usize::MAX);
    let (other_tx, mut other_rx) = outbox::channel(usize::MAX);
    rooms.join("r", info("PA_old", "ann"), old_tx).unwrap();
    rooms.join("r", info("PA_oth", "cat"), other_tx).unwrap();
    let (new_tx, _new_rx) = outbox::channel(usize::MAX);
    let joined = rooms.join("r", info("PA_new", "ann"), new_tx).unwrap();
    assert_eq!(joined.others.len(), 1, "the newcomer sees only cat");
    let mut told_to_leave = false;
    while let Ok(msg) = old_rx.try_recv() {
        told_to_leave |= matches!(msg, SessionMsg::Leave(LeaveReason::DuplicateIdentity));
    }
    assert!(told_to_leave);
    let mut states = Vec::new();
    while let Ok(SessionMsg::Update(frame)) = other_rx.try_recv() {
        let Resp::Update(update) = frame.decode() else {
            panic!("an Update frame holds a ParticipantUpdate");
        };
        states.extend(update.participants.into_iter().map(|i| (i.sid, i.state)));
    }
    assert!(states.contains(&("PA_old".into(), State::Disconnected as i32)));
    assert!(states.iter().any(|(sid, _)| sid == "PA_new"));
    assert!(
        !rooms.leave("r", "PA_old"),
        "the evicted one is already gone"
    );
}

#[tokio::test]
async fn a_full_room_refuses_newcomers_but_not_a_returning_identity() {
    let (rooms, _events) = rooms(300, 1);
    let (tx, _rx) = outbox::channel(usize::MAX);
    rooms.join("r", info("PA_1", "ann"), tx.clone()).unwrap();
    assert_eq!(
        rooms.check_capacity("r", "bob"),
        Err(JoinRefused::Full {
            room: "r".into(),
            max: 1
        })
    );
    assert!(rooms.join("r", info("PA_2", "bob"), tx.clone()).is_err());
    assert!(rooms.check_capacity("r", "ann").is_ok());
    assert!(rooms.join("r", info("PA_3", "ann"), tx).is_ok());
}

#[tokio::test]
async fn hidden_participants_are_not_announced() {
    let (rooms, _events) = rooms(300, 0);
    let (tx, mut rx) = outbox::channel(usize::MAX);
    rooms.join("r", info("PA_1", "ann"), tx).unwrap();
    let mut hidden = info("PA_2", "recorder");
    hidden.permission = Some(proto::ParticipantPermission {
        hidden: true,
        ..Default::default()
    });
    let (htx, _hrx) = outbox::channel(usize::MAX);
    let joined = rooms.join("r", hidden, htx).unwrap();
    assert_eq!(joined.others.len(), 1);
    assert!(
        rx.try_recv().is_err(),
        "ann hears nothing about the hidden one"
    );
    rooms.leave("r", "PA_2");
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn an_api_room_waits_for_its_first_participant_then_closes_on_its_own_timeout() {
    let (rooms, mut events) = rooms(300, 0);
    let settings = RoomSettings {
        empty_timeout: Duration::from_secs(1000),
        max_participants: 0,
        metadata: Some("m".into()),
        ..Default::default()
    };
    let (room, created) = rooms.ensure("a", settings.clone()).unwrap();
    assert!(created && room.metadata == "m" && room.empty_timeout == 1000);
    match events.try_recv() {
        Ok(SignalEvent::RoomStarted { room_id, sid, .. }) => {
            assert_eq!((room_id.as_str(), sid.as_str()), ("a", room.sid.as_str()));
        }
        other => panic!("an API room is reported started with its sid: {other:?}"),
    }
    assert!(events.try_recv().is_err(), "and only once");
    // Someone comes and goes: the timer restarts from the leave.
    tokio::time::sleep(Duration::from_secs(900)).await;
    let (tx, _rx) = outbox::channel(usize::MAX);
    rooms.join("a", info("PA_1", "ann"), tx).unwrap();
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert!(rooms.leave("a", "PA_1"));
    tokio::time::sleep(Duration::from_secs(999)).await;
    assert!(finished(&mut events).is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(finished(&mut events), vec!["a".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_rooms_old_timer_does_not_close_the_room_made_after_it() {
    let (rooms, mut events) = rooms(300, 0);
    let (tx, mut rx) = outbox::channel(usize::MAX);
    rooms.join("a", info("PA_1", "ann"), tx.clone()).unwrap();
    assert!(
        rooms.leave("a", "PA_1"),
        "the 300 s timer of the first room starts"
    );
    rooms.join("a", info("PA_2", "bob"), tx.clone()).unwrap();
    let members = rooms.delete("a").unwrap();
    assert_eq!(members.len(), 1);
    assert!(std::iter::from_fn(|| rx.try_recv().ok())
        .any(|m| matches!(m, SessionMsg::Leave(LeaveReason::RoomDeleted))));
    // Until the deletion is finished, the name cannot be used.
    assert_eq!(
        rooms.check_capacity("a", "cat"),
        Err(JoinRefused::Deleting { room: "a".into() })
    );
    assert!(rooms.join("a", info("PA_3", "cat"), tx.clone()).is_err());
    assert!(rooms.ensure("a", RoomSettings::default()).is_err());
    rooms.finish_delete("a");
    assert_eq!(finished(&mut events), vec!["a".to_owned()]);
    let settings = RoomSettings {
        empty_timeout: Duration::from_secs(1000),
        ..Default::default()
    };
    rooms.ensure("a", settings).unwrap();
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert!(finished(&mut events).is_empty(), "the old timer lost");
    tokio::time::sleep(Duration::from_secs(700)).await;
    assert_eq!(finished(&mut events), vec!["a".to_owned()]);
}

/// The RoomUpdates an inbox holds: (participants, publishers) of each.
fn room_updates(inbox: &mut outbox::Inbox) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while let Ok(message) = inbox.try_recv() {
        let SessionMsg::Broadcast(frame) = message else {
            continue;
        };
        let Resp::RoomUpdate(update) = frame.decode() else {
            continue;
        };
        let room = update.room.unwrap_or_default();
        out.push((room.num_participants, room.num_publishers));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn participant_counts_reach_the_members_batched_and_without_hidden_ones() {
    let (rooms, _events) = rooms(300, 0);
    let (ann_tx, mut ann) = outbox::channel(usize::MAX);
    let joined = rooms.join("r", info("PA_1", "ann"), ann_tx).unwrap();
    assert_eq!(joined.room.num_participants, 1);
    let (bob_tx, mut bob) = outbox::channel(usize::MAX);
    rooms.join("r", info("PA_2", "bob"), bob_tx).unwrap();
    let mut recorder = info("PA_3", "recorder");
    recorder.permission = Some(proto::ParticipantPermission {
        hidden: true,
        ..Default::default()
    });
    let (rec_tx, _rec) = outbox::channel(usize::MAX);
    let joined = rooms.join("r", recorder, rec_tx).unwrap();
    assert_eq!(
        joined.room.num_participants, 2,
        "the hidden one is not counted"
    );
    rooms.update("r", "PA_2", |info| info.is_publisher = true);
    // Nothing yet: counts go out together, 2 s after the first change.
    assert_eq!(room_updates(&mut ann), []);
    tokio::time::sleep(COUNTS_INTERVAL + Duration::from_millis(1)).await;
    assert_eq!(room_updates(&mut ann), [(2, 1)]);
    assert_eq!(room_updates(&mut bob), [(2, 1)]);
    // A change and its undoing within the interval: nothing to tell.
    let (cat_tx, _cat) = outbox::channel(usize::MAX);
    rooms.join("r", info("PA_4", "cat"), cat_tx).unwrap();
    assert!(rooms.leave("r", "PA_4"));
    tokio::time::sleep(COUNTS_INTERVAL * 2).await;
    assert_eq!(room_updates(&mut ann), []);
}

#[tokio::test(start_paused = true)]
async fn a_room_closed_here_tells_its_members_to_leave_and_never_finishes() {
    let (rooms, mut events) = rooms(1, 0);
    let (ann_tx, mut ann_rx) = outbox::channel(usize::MAX);
    let (bob_tx, mut bob_rx) = outbox::channel(usize::MAX);
    rooms.join("moved", info("PA_1", "ann"), ann_tx).unwrap();
    rooms
        .join("moved", info("PA_2", "bob"), bob_tx.clone())
        .unwrap();
    rooms.join("stays", info("PA_3", "bob"), bob_tx).unwrap();

    assert_eq!(rooms.close_here("moved", LeaveReason::LeaseLost), 2);
    assert!(!rooms.is_open("moved"));
    assert!(rooms.is_open("stays"));
    assert_eq!(rooms.close_here("moved", LeaveReason::LeaseLost), 0, "gone");
    for rx in [&mut ann_rx, &mut bob_rx] {
        let mut told = false;
        while let Ok(msg) = rx.try_recv() {
            told |= matches!(msg, SessionMsg::Leave(LeaveReason::LeaseLost));
        }
        assert!(told, "every member is told to leave");
    }
    // The sessions' own leaves find nothing, and no timer finishes the room: its record
    // belongs to the node that took it.
    assert!(!rooms.leave("moved", "PA_1"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(finished(&mut events), Vec::<String>::new());
}
