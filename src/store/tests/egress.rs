//! Egress records: lifecycle, terminal states, checks and listing.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{
    assert_conflict, assert_not_found, egress_update, events, kinds_of, new_egress, room_spec,
    room_with_session, t,
};
use crate::store::{EgressStatus, EgressUpdate, SessionState, Store};

pub async fn egress_lifecycle(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Publishing).await;
    let created = store
        .create_egress(&new_egress("eg_1", "lobby", Some("se_1"), t(10)))
        .await
        .expect("create");
    assert_eq!(created.status, EgressStatus::Starting);
    assert_eq!(created.session_id.as_deref(), Some("se_1"));
    assert_eq!(created.kind, "room");
    assert_eq!(
        created.output,
        json!({"rtmp": "rtmp://example.test/live/key"})
    );
    assert_eq!((created.created_at, created.updated_at), (t(10), t(10)));
    assert_eq!((created.started_at, created.ended_at), (None, None));
    assert_eq!(created.error, None);
    assert_eq!(store.get_egress("eg_1").await.expect("get"), created);

    let active = store
        .update_egress(
            "eg_1",
            &EgressUpdate {
                status: EgressStatus::Active,
                error: None,
                output: Some(json!({"rtmp": "rtmp://example.test/live/key", "bitrate": 4500})),
                at: t(12),
            },
        )
        .await
        .expect("active");
    assert_eq!(active.started_at, Some(t(12)));
    assert_eq!(active.updated_at, t(12));
    assert_eq!(
        active.output["bitrate"],
        json!(4500),
        "output replaced when Some"
    );

    let ending = store
        .update_egress("eg_1", &egress_update(EgressStatus::Ending, t(20)))
        .await
        .expect("ending");
    assert_eq!(
        ending.started_at,
        Some(t(12)),
        "started_at stays the first activation"
    );
    assert_eq!(ending.output, active.output, "output kept when None");
    assert_eq!(ending.ended_at, None);

    let complete = store
        .update_egress("eg_1", &egress_update(EgressStatus::Complete, t(25)))
        .await
        .expect("complete");
    assert_eq!(complete.ended_at, Some(t(25)));
    assert_eq!(complete.status, EgressStatus::Complete);

    // A finished egress does not change again, and the refusal writes nothing.
    let before = events(&*store, "lobby").await;
    for status in [
        EgressStatus::Active,
        EgressStatus::Failed,
        EgressStatus::Complete,
    ] {
        assert_conflict(
            store
                .update_egress("eg_1", &egress_update(status, t(30)))
                .await,
            "eg_1",
        );
    }
    assert_eq!(events(&*store, "lobby").await, before);
    assert_eq!(store.get_egress("eg_1").await.expect("get"), complete);

    let log = events(&*store, "lobby").await;
    let tail = &log[log.len() - 4..];
    assert_eq!(
        kinds_of(tail),
        [
            "egress_started",
            "egress_updated",
            "egress_updated",
            "egress_ended"
        ]
    );
    assert!(tail.iter().all(|e| e.session_id.as_deref() == Some("se_1")));
    assert_eq!(tail[3].payload["egress"]["status"], json!("complete"));
}

pub async fn failed_egress_keeps_its_error(store: Arc<dyn Store>) {
    store
        .create_room(&room_spec("lobby", t(0)))
        .await
        .expect("create");
    store
        .create_egress(&new_egress("eg_1", "lobby", None, t(1)))
        .await
        .expect("create egress without session");
    let failed = store
        .update_egress(
            "eg_1",
            &EgressUpdate {
                status: EgressStatus::Failed,
                error: Some("rtmp endpoint refused".to_owned()),
                output: None,
                at: t(2),
            },
        )
        .await
        .expect("failed");
    assert_eq!(failed.error.as_deref(), Some("rtmp endpoint refused"));
    assert_eq!(failed.ended_at, Some(t(2)));
    assert_eq!(failed.started_at, None, "it never became active");
    let last = events(&*store, "lobby").await.pop().expect("event");
    assert_eq!(last.kind, "egress_ended");
    assert_eq!(last.session_id, None);
}

pub async fn create_egress_checks_room_session_and_id(store: Arc<dyn Store>) {
    room_with_session(&*store, "a", "se_a", SessionState::Ready).await;
    store
        .create_room(&room_spec("b", t(0)))
        .await
        .expect("create b");
    assert_not_found(
        store
            .create_egress(&new_egress("eg_1", "nowhere", None, t(1)))
            .await,
        "room `nowhere`",
    );
    assert_not_found(
        store
            .create_egress(&new_egress("eg_1", "b", Some("se_none"), t(1)))
            .await,
        "session `se_none`",
    );
    assert_conflict(
        store
            .create_egress(&new_egress("eg_1", "b", Some("se_a"), t(1)))
            .await,
        "se_a",
    );
    store
        .create_egress(&new_egress("eg_1", "a", Some("se_a"), t(1)))
        .await
        .expect("create");
    assert_conflict(
        store
            .create_egress(&new_egress("eg_1", "b", None, t(2)))
            .await,
        "eg_1",
    );
    assert_not_found(store.get_egress("eg_none").await, "egress `eg_none`");
    assert_not_found(
        store
            .update_egress("eg_none", &egress_update(EgressStatus::Active, t(3)))
            .await,
        "egress `eg_none`",
    );
}

pub async fn list_egress_filters_newest_first(store: Arc<dyn Store>) {
    room_with_session(&*store, "a", "se_a", SessionState::Ready).await;
    store
        .create_room(&room_spec("b", t(0)))
        .await
        .expect("create b");
    for (id, room, session, at) in [
        ("eg_1", "a", Some("se_a"), 10),
        ("eg_2", "b", None, 11),
        ("eg_3", "a", None, 12),
        ("eg_4", "a", Some("se_a"), 13),
    ] {
        store
            .create_egress(&new_egress(id, room, session, t(at)))
            .await
            .expect("create");
    }
    let ids = |list: Vec<crate::store::EgressRecord>| -> Vec<String> {
        list.into_iter().map(|e| e.egress_id).collect()
    };
    assert_eq!(
        ids(store.list_egress(None, None).await.expect("all")),
        ["eg_4", "eg_3", "eg_2", "eg_1"]
    );
    assert_eq!(
        ids(store.list_egress(Some("a"), None).await.expect("room a")),
        ["eg_4", "eg_3", "eg_1"]
    );
    assert_eq!(
        ids(store
            .list_egress(None, Some("se_a"))
            .await
            .expect("session")),
        ["eg_4", "eg_1"]
    );
    assert_eq!(
        ids(store
            .list_egress(Some("b"), Some("se_a"))
            .await
            .expect("both")),
        Vec::<String>::new()
    );
}
