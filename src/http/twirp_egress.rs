//! LiveKit's Twirp `Egress` service at `/twirp/livekit.Egress/{Method}`, so
//! `livekit-server-sdk`'s `EgressClient` starts, lists and stops our recordings unchanged
//! where the shapes fit. We never composite or transcode: a "room composite" is the room
//! recorded as one multi-track WebM/Matroska file, a track egress one track as published.
//! Requests we cannot honour are refused with `invalid_argument` (or `unimplemented` for
//! whole methods), never silently approximated. Every call goes through the same
//! [`Control`] as `/v1/egress`. What is supported is documented in docs/egress.md.
//!
//! [`Control`]: crate::control::Control

use std::path::{Component, Path as FsPath};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use livekit_protocol as proto;
use proto::egress_info::Request as InfoRequest;
use proto::room_composite_egress_request::Output as RoomOutput;
use proto::track_egress_request::Output as TrackOutput;
use serde::Deserialize;

use super::auth::{Caller, Need};
use super::problem::Problem;
use super::twirp::{decode, encode, encoding, Encoding, TwirpError};
use super::AppState;
use crate::control::{EgressRequest, OutputRequest};
use crate::store::{EgressRecord, EgressStatus, StoreError};

/// Appended to refusals of StartRoomCompositeEgress, so the caller learns what does work.
const ROOM_SUPPORTED: &str = "Switchboard records the room without compositing or \
    transcoding: every published track, as published, into one WebM/Matroska file in the \
    server's egress directory. Give exactly one file output (EncodedFileOutput with an \
    optional relative filepath, no upload, no fileType) and no layout, encoding options, \
    audio/video-only, custom base URL, audio mixing or webhooks";

const TRACK_SUPPORTED: &str = "Switchboard's StartTrackEgress writes the track as published \
    (WebM for VP8/VP9/Opus, Matroska for H.264) into the server's egress directory: give a \
    file output (DirectFileOutput with an optional relative filepath, no upload)";

const METHODS_SUPPORTED: &str = "the Egress service here supports StartRoomCompositeEgress \
    (file output, recorded as multi-track WebM), StartTrackEgress (file output), ListEgress \
    and StopEgress; /v1/egress also restreams a track as RTP";

fn invalid(msg: impl Into<String>) -> TwirpError {
    TwirpError::new("invalid_argument", msg)
}

/// The same rule as `/v1/egress`: LiveKit's server SDKs sign egress calls with `roomRecord`
/// and no room, which `Need::Record` accepts for any room.
fn may_record(caller: &Caller, room: &str) -> Result<(), Problem> {
    caller.require(Need::Record(room))
}

/// Whether the caller may see this room's egress: whoever may record it, or read it.
fn may_see(caller: &Caller, room: &str) -> bool {
    may_record(caller, room).is_ok() || caller.require(Need::Read(room)).is_ok()
}

/// Our output subdirectory from a LiveKit `filepath`: its directory part, relative to the
/// server's egress directory, with `{room_name}`/`{room_id}` (and `{track_id}` for a track)
/// filled in. The file name part is not honoured (our names carry room, session and egress
/// ids); a path without `/` names only a file, so the files go to the egress directory.
fn directory_of(
    filepath: &str,
    room: &str,
    track: Option<&str>,
) -> Result<Option<String>, TwirpError> {
    if filepath.starts_with('/') {
        return Err(invalid(format!(
            "filepath {filepath:?} is absolute: give a path relative to the server's egress \
             directory (its directory part is used; file names are chosen by the server)"
        )));
    }
    let Some((dir, _file)) = filepath.rsplit_once('/') else {
        return Ok(None);
    };
    let mut dir = dir.replace("{room_name}", room).replace("{room_id}", room);
    if let Some(track) = track {
        dir = dir.replace("{track_id}", track);
    }
    if dir.contains('{') || dir.contains('}') {
        let templates = if track.is_some() {
            "{room_name}, {room_id} and {track_id}"
        } else {
            "{room_name} and {room_id}"
        };
        return Err(invalid(format!(
            "the directory part of filepath {filepath:?} has a template we do not fill: only \
             {templates} are supported there"
        )));
    }
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return Ok(None);
    }
    if !FsPath::new(dir)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid(format!(
            "filepath {filepath:?} must stay inside the server's egress directory: no `..`"
        )));
    }
    Ok(Some(dir.to_owned()))
}

/// The one file output of a room composite request (the SDK sends a legacy `file` and the
/// same value again in `file_outputs`), or why the request cannot be honoured.
fn room_file_output(
    req: &proto::RoomCompositeEgressRequest,
) -> Result<&proto::EncodedFileOutput, TwirpError> {
    let refuse = |what: &str| Err(invalid(format!("{what} not supported. {ROOM_SUPPORTED}")));
    if !req.stream_outputs.is_empty() {
        return refuse("stream outputs (RTMP/SRT) are");
    }
    if !req.segment_outputs.is_empty() {
        return refuse("segmented outputs (HLS) are");
    }
    if !req.image_outputs.is_empty() {
        return refuse("image outputs are");
    }
    if req.options.is_some() {
        return refuse("encoding options (preset/advanced) are");
    }
    if req.audio_only || req.video_only {
        return refuse("audio_only/video_only are");
    }
    if !req.layout.is_empty() {
        return refuse("layouts are");
    }
    if !req.custom_base_url.is_empty() {
        return refuse("custom_base_url is");
    }
    if req.audio_mixing != proto::AudioMixing::DefaultMixing as i32 {
        return refuse("audio_mixing is");
    }
    if !req.webhooks.is_empty() {
        return refuse("per-request webhooks are");
    }
    let mut files: Vec<&proto::EncodedFileOutput> = req.file_outputs.iter().collect();
    // The deprecated oneof still carries the output for older SDKs.
    #[allow(deprecated)]
    match &req.output {
        Some(RoomOutput::File(file)) if !files.contains(&file) => files.push(file),
        Some(RoomOutput::File(_)) | None => {}
        Some(RoomOutput::Stream(_)) => return refuse("stream outputs (RTMP/SRT) are"),
        Some(RoomOutput::Segments(_)) => return refuse("segmented outputs (HLS) are"),
    }
    let [file] = files[..] else {
        return Err(invalid(format!(
            "{} file outputs given. {ROOM_SUPPORTED}",
            files.len()
        )));
    };
    if file.file_type != proto::EncodedFileType::DefaultFiletype as i32 {
        return refuse("fileType (MP4/OGG/MP3) is");
    }
    if file.output.is_some() {
        return refuse("uploads (S3/GCP/Azure/AliOSS) are");
    }
    Ok(file)
}

fn track_directory(req: &proto::TrackEgressRequest) -> Result<Option<String>, TwirpError> {
    let refuse = |what: &str| Err(invalid(format!("{what} not supported. {TRACK_SUPPORTED}")));
    if req.track_id.is_empty() {
        return Err(invalid(format!("track_id is empty. {TRACK_SUPPORTED}")));
    }
    if !req.webhooks.is_empty() {
        return refuse("per-request webhooks are");
    }
    match &req.output {
        None => Err(invalid(format!("no output given. {TRACK_SUPPORTED}"))),
        Some(TrackOutput::WebsocketUrl(_)) => refuse(
            "websocket outputs are (for a live copy of a track, /v1/egress restreams it as RTP)",
        ),
        Some(TrackOutput::File(file)) if file.output.is_some() => {
            refuse("uploads (S3/GCP/Azure/AliOSS) are")
        }
        Some(TrackOutput::File(file)) => {
            directory_of(&file.filepath, &req.room_name, Some(&req.track_id))
        }
    }
}

/// Nanoseconds since the epoch, LiveKit's timestamps; 0 when unset.
fn nanos(at: Option<DateTime<Utc>>) -> i64 {
    at.and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0)
}

/// One file of `output.result.files`, as the egress reported it when it finished.
#[derive(Deserialize)]
struct FileResult {
    path: String,
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    duration_ms: u64,
}

fn file_results(record: &EgressRecord) -> Vec<proto::FileInfo> {
    let files = record
        .output
        .pointer("/result/files")
        .cloned()
        .and_then(|v| serde_json::from_value::<Vec<FileResult>>(v).ok())
        .unwrap_or_default();
    files
        .into_iter()
        .map(|f| proto::FileInfo {
            filename: f.path.clone(),
            started_at: nanos(record.started_at),
            ended_at: nanos(record.ended_at),
            duration: i64::try_from(f.duration_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            size: i64::try_from(f.bytes).unwrap_or(i64::MAX),
            // No upload: the file stays where it was written.
            location: f.path,
        })
        .collect()
}

/// What was asked, rebuilt from the record (the start response echoes the request itself).
fn request_of(record: &EgressRecord) -> Option<InfoRequest> {
    match record.kind.as_str() {
        "room" => Some(InfoRequest::RoomComposite(
            proto::RoomCompositeEgressRequest {
                room_name: record.room_id.clone(),
                ..Default::default()
            },
        )),
        "track" => Some(InfoRequest::Track(proto::TrackEgressRequest {
            room_name: record.room_id.clone(),
            track_id: record
                .output
                .get("track_sid")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            ..Default::default()
        })),
        // RTP restreams have no LiveKit request shape.
        _ => None,
    }
}

/// A stored egress as LiveKit's `EgressInfo`.
fn egress_info(record: &EgressRecord) -> proto::EgressInfo {
    use proto::EgressStatus as S;
    let status = match record.status {
        EgressStatus::Starting => S::EgressStarting,
        EgressStatus::Active => S::EgressActive,
        EgressStatus::Ending => S::EgressEnding,
        EgressStatus::Complete => S::EgressComplete,
        EgressStatus::Failed => S::EgressFailed,
    };
    let file_results = file_results(record);
    // Older clients read the deprecated single `file` result.
    #[allow(deprecated)]
    let result = match &file_results[..] {
        [one] => Some(proto::egress_info::Result::File(one.clone())),
        _ => None,
    };
    proto::EgressInfo {
        egress_id: record.egress_id.clone(),
        room_id: record.room_id.clone(),
        room_name: record.room_id.clone(),
        // No browser is involved: media comes straight from the SFU.
        source_type: proto::EgressSourceType::Sdk as i32,
        status: status as i32,
        started_at: nanos(record.started_at),
        ended_at: nanos(record.ended_at),
        updated_at: nanos(Some(record.updated_at)),
        file_results,
        error: record.error.clone().unwrap_or_default(),
        request: request_of(record),
        result,
        ..Default::default()
    }
}

/// Starts an egress after the grant check, both audited like `/v1/egress`.
async fn start(
    state: &AppState,
    caller: &Caller,
    action: &str,
    request: EgressRequest,
) -> Result<EgressRecord, TwirpError> {
    let room = request.room_id.clone();
    let result: Result<_, Problem> = async {
        may_record(caller, &room)?;
        Ok(state.control.start_egress(request, None).await?)
    }
    .await;
    Ok(state.audited(caller, action, &room, result).await?)
}

/// The egress `ListEgress` asks for, before the grant filter.
async fn listed(
    state: &AppState,
    req: &proto::ListEgressRequest,
) -> Result<Vec<EgressRecord>, TwirpError> {
    let store = &state.control.store;
    let records = if req.egress_id.is_empty() {
        let room = (!req.room_name.is_empty()).then_some(req.room_name.as_str());
        store.list_egress(room, None).await?
    } else {
        match store.get_egress(&req.egress_id).await {
            Ok(record) => vec![record],
            // An unknown id is an empty list, as a filter that matches nothing.
            Err(StoreError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(records
        .into_iter()
        .filter(|r| req.room_name.is_empty() || r.room_id == req.room_name)
        .filter(|r| !req.active || !r.status.is_terminal())
        .collect())
}

/// The room an Egress call acts on, when it needs the node running that room: a recording
/// runs where the room's media is, and only that node can stop it. `None` for the rest and
/// for a body that does not decode (the local handler says what is wrong with it).
async fn room_of(state: &AppState, method: &str, e: Encoding, body: &[u8]) -> Option<String> {
    let room = match method {
        "StartRoomCompositeEgress" => {
            decode::<proto::RoomCompositeEgressRequest>(e, body)
                .ok()?
                .room_name
        }
        "StartTrackEgress" => decode::<proto::TrackEgressRequest>(e, body).ok()?.room_name,
        "StopEgress" => {
            let req = decode::<proto::StopEgressRequest>(e, body).ok()?;
            state
                .control
                .store
                .get_egress(&req.egress_id)
                .await
                .ok()?
                .room_id
        }
        _ => return None,
    };
    (!room.is_empty()).then_some(room)
}

pub async fn egress_service(
    State(state): State<AppState>,
    Path(method): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    caller: Result<Caller, Problem>,
    body: Bytes,
) -> Result<Response, TwirpError> {
    let e = encoding(&headers)?;
    let caller = caller?;
    if let Some(room) = room_of(&state, &method, e, &body).await {
        if let Some(answer) = super::forwarding::twirp(&state, &room, &uri, &headers, &body).await {
            return Ok(answer);
        }
    }
    match method.as_str() {
        "StartRoomCompositeEgress" => {
            let req: proto::RoomCompositeEgressRequest = decode(e, &body)?;
            if req.room_name.is_empty() {
                return Err(invalid(format!("room_name is empty. {ROOM_SUPPORTED}")));
            }
            let file = room_file_output(&req)?;
            let directory = directory_of(&file.filepath, &req.room_name, None)?;
            let request = EgressRequest {
                room_id: req.room_name.clone(),
                track_sid: None,
                output: OutputRequest::File { directory },
            };
            let record = start(&state, &caller, "twirp.StartRoomCompositeEgress", request).await?;
            let mut info = egress_info(&record);
            info.request = Some(InfoRequest::RoomComposite(req));
            Ok(encode(e, &info))
        }
        "StartTrackEgress" => {
            let req: proto::TrackEgressRequest = decode(e, &body)?;
            if req.room_name.is_empty() {
                return Err(invalid(format!("room_name is empty. {TRACK_SUPPORTED}")));
            }
            let directory = track_directory(&req)?;
            let request = EgressRequest {
                room_id: req.room_name.clone(),
                track_sid: Some(req.track_id.clone()),
                output: OutputRequest::File { directory },
            };
            let record = start(&state, &caller, "twirp.StartTrackEgress", request).await?;
            let mut info = egress_info(&record);
            info.request = Some(InfoRequest::Track(req));
            Ok(encode(e, &info))
        }
        "ListEgress" => {
            let req: proto::ListEgressRequest = decode(e, &body)?;
            if !req.room_name.is_empty() && !may_see(&caller, &req.room_name) {
                // The refusal names the grant that was missing.
                may_record(&caller, &req.room_name)?;
            }
            let grant = &caller.claims.video;
            if !(grant.room_record || grant.room_list || grant.room_create || grant.room_admin) {
                return Err(TwirpError::new(
                    "permission_denied",
                    "ListEgress needs roomRecord, roomList, roomCreate or roomAdmin",
                ));
            }
            // Without a room filter a room-bound token sees only the egress of its room.
            let items = listed(&state, &req)
                .await?
                .iter()
                .filter(|r| may_see(&caller, &r.room_id))
                .map(egress_info)
                .collect();
            Ok(encode(
                e,
                &proto::ListEgressResponse {
                    items,
                    ..Default::default()
                },
            ))
        }
        "StopEgress" => {
            let req: proto::StopEgressRequest = decode(e, &body)?;
            let record = state.control.store.get_egress(&req.egress_id).await?;
            let result: Result<_, Problem> = async {
                may_record(&caller, &record.room_id)?;
                Ok(state.control.stop_egress(&req.egress_id).await?)
            }
            .await;
            let record = state
                .audited(&caller, "twirp.StopEgress", &req.egress_id, result)
                .await?;
            Ok(encode(e, &egress_info(&record)))
        }
        "StartEgress"
        | "StartParticipantEgress"
        | "StartTrackCompositeEgress"
        | "StartWebEgress"
        | "UpdateLayout"
        | "UpdateStream"
        | "ExportReplay" => Err(TwirpError::new(
            "unimplemented",
            format!("{method} is not implemented: {METHODS_SUPPORTED}"),
        )),
        other => Err(TwirpError::new(
            "bad_route",
            format!("Egress has no method {other:?}; {METHODS_SUPPORTED}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filepath_gives_its_directory_part_with_room_templates() {
        let dir = |p: &str| directory_of(p, "lobby", None).map_err(drop);
        assert_eq!(dir(""), Ok(None));
        assert_eq!(dir("rec.webm"), Ok(None));
        assert_eq!(dir("{room_name}-{time}.mp4"), Ok(None));
        assert_eq!(dir("rec/"), Ok(Some("rec".into())));
        assert_eq!(
            dir("rec/{room_name}/{time}.mp4"),
            Ok(Some("rec/lobby".into()))
        );
        assert!(dir("/abs/x.webm").is_err());
        assert!(dir("../x.webm").is_err());
        assert!(dir("a/../../x.webm").is_err());
        assert!(dir("{time}/x.webm").is_err());
        assert_eq!(
            directory_of("t/{track_id}/x", "lobby", Some("TR_1")).ok(),
            Some(Some("t/TR_1".into()))
        );
    }

    #[test]
    fn the_legacy_and_repeated_file_output_count_once() {
        let file = proto::EncodedFileOutput {
            filepath: "a/b.webm".into(),
            ..Default::default()
        };
        #[allow(deprecated)]
        let req = proto::RoomCompositeEgressRequest {
            room_name: "r".into(),
            output: Some(RoomOutput::File(file.clone())),
            file_outputs: vec![file],
            ..Default::default()
        };
        assert!(room_file_output(&req).is_ok());
        let two = proto::RoomCompositeEgressRequest {
            file_outputs: vec![Default::default(), req.file_outputs[0].clone()],
            ..req.clone()
        };
        assert!(room_file_output(&two).is_err());
        let layout = proto::RoomCompositeEgressRequest {
            layout: "grid".into(),
            ..req.clone()
        };
        assert!(room_file_output(&layout).is_err());
        let stream = proto::RoomCompositeEgressRequest {
            stream_outputs: vec![Default::default()],
            ..req
        };
        assert!(room_file_output(&stream).is_err());
    }
}
