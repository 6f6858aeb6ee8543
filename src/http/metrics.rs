//! `GET /metrics`: everything the server records through the `metrics` facade (media plane,
//! signaling), in Prometheus' text format.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `switchboard_rooms` | gauge | rooms signaling holds (read at scrape time) |
//! | `switchboard_participants` | gauge | participants connected to signaling (at scrape time) |
//! | `switchboard_media_participants` | gauge | participants in the media workers |
//! | `switchboard_published_tracks` | gauge | tracks bound to a publisher's m-line |
//! | `switchboard_subscribed_tracks` | gauge | subscriber m-lines negotiated open |
//! | `switchboard_rtp_packets_received_total`, `switchboard_rtp_bytes_received_total` | counter | RTP packets (payload bytes) received from publishers |
//! | `switchboard_packets_forwarded_total`, `switchboard_bytes_forwarded_total` | counter | RTP packets (payload bytes) written to subscribers; the load tester compares against it |
//! | `switchboard_udp_packets_total`, `switchboard_udp_bytes_total` `{direction="in"/"out", kind="rtp"/"rtcp"/"stun"/"dtls"/"other"}` | counter | datagrams and wire bytes of the media sockets (out includes RTX and RTCP) |
//! | `switchboard_nacks_total{direction="sent"/"received"}` | counter | NACKs sent to publishers, received from subscribers (from str0m's stats, every 5 s) |
//! | `switchboard_keyframe_requests_total{direction, kind="pli"/"fir"}` | counter | PLIs sent to publishers; PLIs and FIRs received from subscribers |
//! | `switchboard_subscriber_reported_packets_lost_total` | counter | packets lost as subscribers' receiver reports say |
//! | `switchboard_fraction_lost{reported_by="subscriber"/"server"}` | histogram | loss fraction per stream report: subscribers' RRs, and ours of publishers |
//! | `switchboard_rtt_seconds{peer="subscriber"/"publisher"}` | histogram | RTCP round-trip time per stream report |
//! | `switchboard_join_latency_seconds{stage="join_response"/"first_media_received"/"first_media_published"}` | histogram | from the token's verification to the JoinResponse sent, to the first packet forwarded to the participant, to its first packet published |
//! | `switchboard_media_worker_lag_seconds{worker}` | histogram | how late a worker's loop woke after its deadline |
//! | `switchboard_media_worker_queue_depth{worker}` | gauge | commands waiting in the worker's queue |
//! | `switchboard_media_worker_participants{worker}` | gauge | participants on that worker |
//! | `switchboard_recorder_queue_depth` | gauge | signaling events waiting to be recorded (grows while the database is unreachable) |
//! | `switchboard_recorder_events_dropped_total` | counter | events dropped because the recorder's queue was full (`recorder_queue_bytes`) |
//!
//! Media counters are kept per worker and flushed every 100 ms, so a scrape lags by that.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// The process-wide recorder's handle, set once by [`install`].
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histograms are drained when nobody scrapes (keeps their memory bounded).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Histograms get real buckets (summaries cannot be aggregated across servers).
fn builder() -> Result<PrometheusBuilder, BuildError> {
    let seconds = |name: &str| Matcher::Full(name.to_owned());
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            seconds("switchboard_join_latency_seconds"),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
            ],
        )?
        .set_buckets_for_metric(
            seconds("switchboard_media_worker_lag_seconds"),
            &[
                0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
            ],
        )?
        .set_buckets_for_metric(
            seconds("switchboard_rtt_seconds"),
            &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 1.0],
        )?
        .set_buckets_for_metric(
            seconds("switchboard_fraction_lost"),
            &[0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
        )
}

/// Installs the Prometheus recorder for the whole process. Must run before the media
/// plane starts: its workers take their metric handles when they start. Needs a tokio
/// runtime (it spawns the upkeep task).
pub fn install() -> Result<(), BuildError> {
    let handle = builder()?.install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let _ = HANDLE.set(handle);
    Ok(())
}

/// Renders every metric. Room and participant counts are read from signaling now, so they
/// are exactly what the admin API would list.
pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = HANDLE.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not enabled in this process",
        )
            .into_response();
    };
    metrics::gauge!("switchboard_rooms").set(state.signaling.live_rooms().len() as f64);
    metrics::gauge!("switchboard_participants").set(state.signaling.participant_count() as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
