//! Signal requests beyond publishing and subscribing, against the real binary: each one
//! is honoured or answered with a RequestResponse that says why, never dropped in silence.

mod support;

use livekit_protocol as proto;
use proto::request_response::Reason;
use support::{Client, Req, Resp, Server};

/// The next RequestResponse, as (reason, message).
async fn refusal(client: &mut Client, what: &str) -> (Reason, String, proto::RequestResponse) {
    client
        .expect(what, |r| match r {
            Resp::RequestResponse(rr) => Some((
                Reason::try_from(rr.reason).unwrap_or(Reason::UnclassifiedError),
                rr.message.clone(),
                rr.clone(),
            )),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_the_server_cannot_honour_are_answered_with_a_reason() {
    let server = Server::start();
    let (mut alice, _) = server.join("requests", "alice", &[]).await;

    // Own metadata without canUpdateOwnMetadata: refused with the request id, so
    // livekit-client rejects setAttributes at once instead of timing out.
    alice
        .send(Req::UpdateMetadata(proto::UpdateParticipantMetadata {
            attributes: [("mood".to_owned(), "happy".to_owned())].into(),
            request_id: 7,
            ..Default::default()
        }))
        .await;
    let (reason, message, rr) = refusal(&mut alice, "the metadata refusal").await;
    assert_eq!(reason, Reason::NotAllowed);
    assert_eq!(rr.request_id, 7);
    assert!(message.contains("canUpdateOwnMetadata"), "{message}");

    // Local track settings for a track it does not publish.
    alice
        .send(Req::UpdateVideoTrack(proto::UpdateLocalVideoTrack {
            track_sid: "TR_nothere".into(),
            width: 1280,
            height: 720,
        }))
        .await;
    let (reason, message, rr) = refusal(&mut alice, "the video track refusal").await;
    assert_eq!(reason, Reason::NotFound);
    assert!(message.contains("TR_nothere"), "{message}");
    assert!(matches!(
        rr.request,
        Some(proto::request_response::Request::UpdateVideoTrack(_))
    ));
    alice
        .send(Req::UpdateAudioTrack(proto::UpdateLocalAudioTrack {
            track_sid: "TR_nothere".into(),
            features: vec![proto::AudioTrackFeature::TfStereo as i32],
        }))
        .await;
    assert_eq!(
        refusal(&mut alice, "the audio track refusal").await.0,
        Reason::NotFound
    );

    // Data tracks and simulated migrations are not done here, and say so.
    alice
        .send(Req::PublishDataTrackRequest(
            proto::PublishDataTrackRequest {
                ..Default::default()
            },
        ))
        .await;
    let (reason, message, _) = refusal(&mut alice, "the data track refusal").await;
    assert_eq!(reason, Reason::UnsupportedType);
    assert!(message.contains("data tracks"), "{message}");
    alice
        .send(Req::Simulate(proto::SimulateScenario {
            scenario: Some(proto::simulate_scenario::Scenario::Migration(true)),
        }))
        .await;
    let (reason, message, _) = refusal(&mut alice, "the simulate refusal").await;
    assert_eq!(reason, Reason::UnsupportedType);
    assert!(message.contains("Migration"), "{message}");

    // A permission list over the bound is refused whole.
    let permissions = (0..1_001)
        .map(|i| proto::TrackPermission {
            participant_identity: format!("p{i}"),
            all_tracks: true,
            ..Default::default()
        })
        .collect();
    alice
        .send(Req::SubscriptionPermission(proto::SubscriptionPermission {
            all_participants: false,
            track_permissions: permissions,
        }))
        .await;
    let (reason, message, _) = refusal(&mut alice, "the permission refusal").await;
    assert_eq!(reason, Reason::LimitExceeded);
    assert!(message.contains("1000"), "{message}");

    // Through all of that the session stayed up.
    alice.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn simulate_server_leave_ends_the_session_with_a_leave_request() {
    let server = Server::start();
    let (mut alice, _) = server.join("simulate", "alice", &[]).await;
    alice
        .send(Req::Simulate(proto::SimulateScenario {
            scenario: Some(proto::simulate_scenario::Scenario::ServerLeave(true)),
        }))
        .await;
    let leave = alice
        .expect("a LeaveRequest", |r| match r {
            Resp::Leave(leave) => Some(leave.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Disconnect as i32
    );
    alice.expect_close().await;
}
