//! Dispatching agents into rooms: a dispatch is offered to matching workers, least loaded
//! first, until one accepts; the one that accepts gets a join token for the room.

use std::sync::Arc;
use std::time::Duration;

use livekit_protocol as proto;
use proto::server_message::Message as ServerMsg;
use tracing::{debug, info, warn};

use super::{AgentError, MAX_AGENT_NAME, MAX_DISPATCH_METADATA};
use crate::token::{self, Claims, RoomAgentDispatch, VideoGrant};
use crate::{ids, Signaling};

/// How long a worker has to answer a job offer before the next worker is asked (LiveKit's
/// server waits as long).
const AVAILABILITY_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of an agent's join token (LiveKit mints them for an hour; a connected agent
/// gets fresh ones through RefreshToken).
const AGENT_TOKEN_TTL_SECS: u64 = 3600;

/// A room has just opened: agents from the opening token's `roomConfig`, or else one from
/// the workers registered without an agent name, are dispatched into it.
pub(crate) fn room_started(
    sig: &Arc<Signaling>,
    room: &proto::Room,
    configured: &[RoomAgentDispatch],
) {
    let wanted: Vec<(String, String)> = if configured.is_empty() {
        if !sig.agents.has_unnamed_worker() {
            return;
        }
        vec![(String::new(), String::new())]
    } else {
        configured
            .iter()
            .map(|a| (a.agent_name.clone(), a.metadata.clone()))
            .collect()
    };
    for (agent_name, metadata) in wanted {
        if let Err(e) = create_dispatch(sig, room, agent_name, metadata) {
            warn!(room = %room.name, "an automatic agent dispatch was refused: {e}");
        }
    }
}

/// Creates a dispatch of `agent_name` into the open room `room` and offers it to workers.
pub(crate) fn create_dispatch(
    sig: &Arc<Signaling>,
    room: &proto::Room,
    agent_name: String,
    metadata: String,
) -> Result<proto::AgentDispatch, AgentError> {
    if agent_name.len() > MAX_AGENT_NAME {
        return Err(AgentError::NameTooLong {
            len: agent_name.len(),
            max: MAX_AGENT_NAME,
        });
    }
    if metadata.len() > MAX_DISPATCH_METADATA {
        return Err(AgentError::MetadataTooLarge {
            len: metadata.len(),
            max: MAX_DISPATCH_METADATA,
        });
    }
    let dispatch = proto::AgentDispatch {
        id: ids::dispatch_id(),
        agent_name,
        room: room.name.clone(),
        metadata,
        state: Some(proto::AgentDispatchState {
            created_at: super::now_ns(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rooms = Arc::clone(&sig.rooms);
    sig.agents
        .add(dispatch.clone(), |name| rooms.live_room(name).is_some())?;
    metrics::counter!("switchboard_agent_dispatches_total").increment(1);
    tokio::spawn(offer(Arc::clone(sig), dispatch.clone(), room.clone()));
    Ok(dispatch)
}

/// Offers the dispatch to each matching worker in turn until one accepts.
async fn offer(sig: Arc<Signaling>, dispatch: proto::AgentDispatch, room: proto::Room) {
    let agents = &sig.agents;
    for (worker_id, tx) in agents.candidates(&dispatch.agent_name) {
        let mut job = proto::Job {
            id: ids::job_id(),
            dispatch_id: dispatch.id.clone(),
            r#type: proto::JobType::JtRoom as i32,
            room: Some(room.clone()),
            agent_name: dispatch.agent_name.clone(),
            metadata: dispatch.metadata.clone(),
            ..Default::default()
        };
        let answer = agents.expect_answer(&job.id);
        let request = ServerMsg::Availability(proto::AvailabilityRequest {
            job: Some(job.clone()),
            resuming: false,
        });
        if tx
            .try_send(proto::ServerMessage {
                message: Some(request),
            })
            .is_err()
        {
            agents.forget_offer(&job.id);
            continue;
        }
        let answer = match tokio::time::timeout(AVAILABILITY_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            _ => {
                agents.forget_offer(&job.id);
                debug!(worker = %worker_id, job = %job.id, "no answer to a job offer");
                continue;
            }
        };
        if !answer.available {
            if answer.terminate {
                info!(room = %room.name, dispatch = %dispatch.id, "a worker ended the dispatch");
                return;
            }
            continue;
        }
        let Some((permissions, api_key)) = agents.worker_grants(&worker_id) else {
            continue; // it left meanwhile
        };
        let identity = if answer.participant_identity.is_empty() {
            format!("agent-{}", job.id)
        } else {
            answer.participant_identity.clone()
        };
        let token = match agent_token(&sig, &api_key, &room.name, &identity, &answer, &permissions)
        {
            Ok(token) => token,
            Err(e) => {
                warn!(worker = %worker_id, "cannot mint an agent's join token: {e}");
                continue;
            }
        };
        job.state = Some(proto::JobState {
            status: proto::JobStatus::JsPending as i32,
            participant_identity: identity,
            worker_id: worker_id.clone(),
            ..Default::default()
        });
        agents.job_created(&job);
        agents.assigned(&job.id, &worker_id);
        let assignment = ServerMsg::Assignment(proto::JobAssignment {
            job: Some(job),
            url: None,
            token,
        });
        let _ = tx.try_send(proto::ServerMessage {
            message: Some(assignment),
        });
        metrics::counter!("switchboard_agent_jobs_total").increment(1);
        return;
    }
    info!(
        room = %room.name,
        agent = %dispatch.agent_name,
        "no registered agent worker took the dispatch"
    );
}

/// The join token of an agent: kind `agent`, the room, and what its worker registered as
/// allowed. Signed with the API key the worker authenticated with.
fn agent_token(
    sig: &Signaling,
    api_key: &str,
    room: &str,
    identity: &str,
    answer: &proto::AvailabilityResponse,
    permissions: &proto::ParticipantPermission,
) -> Result<String, token::TokenError> {
    let secret = sig
        .keys
        .secret(api_key)
        .ok_or_else(|| token::TokenError::UnknownApiKey(api_key.to_owned()))?;
    let mut claims = Claims::for_join(
        api_key,
        identity,
        room,
        Duration::from_secs(AGENT_TOKEN_TTL_SECS),
    );
    claims.name = (!answer.participant_name.is_empty()).then(|| answer.participant_name.clone());
    claims.metadata =
        (!answer.participant_metadata.is_empty()).then(|| answer.participant_metadata.clone());
    claims.attributes = (!answer.participant_attributes.is_empty()).then(|| {
        answer
            .participant_attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    claims.kind = Some("agent".to_owned());
    claims.video = VideoGrant {
        agent: true,
        can_publish: Some(permissions.can_publish),
        can_subscribe: Some(permissions.can_subscribe),
        can_publish_data: Some(permissions.can_publish_data),
        can_update_own_metadata: Some(permissions.can_update_metadata),
        hidden: permissions.hidden,
        ..claims.video
    };
    token::issue(api_key, secret, &claims)
}
