//! Audit log, transcripts and revocations.

use std::sync::Arc;

use super::fixtures::{all_events, assert_not_found, room_with_session, t};
use crate::store::{AuditEntry, SessionState, Store, TranscriptSegment};

fn audit(actor: &str, action: &str, at: i64) -> AuditEntry {
    AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: "room:lobby".to_owned(),
        remote_addr: Some("192.0.2.7".to_owned()),
        outcome: "ok".to_owned(),
        detail: None,
        at: t(at),
    }
}

pub async fn audit_log_pages_newest_first(store: Arc<dyn Store>) {
    assert!(store.list_audit(10, None).await.expect("empty").is_empty());
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut entry = audit("APIkey1", &format!("action{i}"), i);
        if i == 3 {
            entry.outcome = "denied".to_owned();
            entry.remote_addr = None;
            entry.detail = Some("missing roomAdmin grant".to_owned());
        }
        let record = store.record_audit(&entry).await.expect("record");
        assert_eq!(record.action, entry.action);
        assert_eq!(record.outcome, entry.outcome);
        assert_eq!(record.remote_addr, entry.remote_addr);
        assert_eq!(record.detail, entry.detail);
        assert_eq!(record.at, entry.at);
        ids.push(record.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    let first = store.list_audit(3, None).await.expect("page 1");
    let actions: Vec<&str> = first.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["action6", "action5", "action4"]);
    let second = store
        .list_audit(3, Some(first[2].id))
        .await
        .expect("page 2");
    let actions: Vec<&str> = second.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["action3", "action2", "action1"]);
    assert_eq!(second[0].outcome, "denied");
    let last = store
        .list_audit(3, Some(second[2].id))
        .await
        .expect("page 3");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].id, ids[0]);
    assert!(
        all_events(&*store).await.is_empty(),
        "the audit log is not the event log"
    );
}

fn segment(
    segment_id: &str,
    text: &str,
    is_final: bool,
    start_ms: i64,
    at: i64,
) -> TranscriptSegment {
    TranscriptSegment {
        session_id: "se_1".to_owned(),
        segment_id: segment_id.to_owned(),
        participant_identity: "alice".to_owned(),
        text: text.to_owned(),
        language: Some("en".to_owned()),
        is_final,
        start_ms,
        end_ms: start_ms + 900,
        at: t(at),
    }
}

pub async fn transcripts_update_interim_until_final(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Live).await;
    let (first, changed) = store
        .upsert_transcript(&segment("utt1", "hel", false, 1000, 10))
        .await
        .expect("interim");
    assert!(changed);
    assert_eq!((first.created_at, first.updated_at), (t(10), t(10)));
    assert!(!first.is_final);

    let (second, changed) = store
        .upsert_transcript(&segment("utt1", "hello wor", false, 1000, 11))
        .await
        .expect("interim update");
    assert!(changed);
    assert_eq!(second.text, "hello wor");
    assert_eq!((second.created_at, second.updated_at), (t(10), t(11)));

    let (fin, changed) = store
        .upsert_transcript(&segment("utt1", "hello world", true, 1000, 12))
        .await
        .expect("final");
    assert!(changed);
    assert!(fin.is_final);
    assert_eq!(fin.text, "hello world");

    // A late interim result of a finished utterance is ignored.
    let (kept, changed) = store
        .upsert_transcript(&segment("utt1", "hello wo", false, 1000, 13))
        .await
        .expect("late interim");
    assert!(!changed);
    assert_eq!(kept, fin);

    // A later final version replaces it.
    let (corrected, changed) = store
        .upsert_transcript(&segment("utt1", "Hello, world.", true, 1000, 14))
        .await
        .expect("corrected final");
    assert!(changed);
    assert_eq!(corrected.text, "Hello, world.");
    assert_eq!((corrected.created_at, corrected.updated_at), (t(10), t(14)));

    let mut unknown = segment("utt9", "x", true, 0, 15);
    unknown.session_id = "se_none".to_owned();
    assert_not_found(store.upsert_transcript(&unknown).await, "session `se_none`");
}

pub async fn transcripts_list_in_order(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Live).await;
    assert!(store
        .list_transcripts("se_1")
        .await
        .expect("empty")
        .is_empty());
    for (id, start) in [("c", 3000), ("b", 1000), ("a", 1000), ("d", 2000)] {
        store
            .upsert_transcript(&segment(id, id, true, start, 1))
            .await
            .expect("upsert");
    }
    let order: Vec<String> = store
        .list_transcripts("se_1")
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.segment_id)
        .collect();
    assert_eq!(order, ["a", "b", "d", "c"], "start_ms, then segment_id");
    assert_not_found(store.list_transcripts("se_none").await, "session `se_none`");
}

pub async fn revocations_move_forward_only(store: Arc<dyn Store>) {
    store
        .revoke_identity("lobby", "mallory", t(10))
        .await
        .expect("revoke");
    store
        .revoke_identity("other", "eve", t(20))
        .await
        .expect("revoke eve");
    store
        .revoke_identity("lobby", "mallory", t(5))
        .await
        .expect("older replay");
    let all = store.list_revocations(t(0)).await.expect("list");
    assert_eq!(
        all,
        [
            ("lobby".to_owned(), "mallory".to_owned(), t(10)),
            ("other".to_owned(), "eve".to_owned(), t(20)),
        ]
    );
    store
        .revoke_identity("lobby", "mallory", t(30))
        .await
        .expect("newer");
    let recent = store.list_revocations(t(20)).await.expect("since");
    assert_eq!(recent, [("lobby".to_owned(), "mallory".to_owned(), t(30))]);
    assert!(store
        .list_revocations(t(30))
        .await
        .expect("none")
        .is_empty());
}
