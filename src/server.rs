//! `switchboard serve`: starts the media plane, signaling, the session store and the HTTP
//! server, and shuts them down in order on SIGINT/SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_sfu::{Sfu, SfuConfig};
use switchboard_signaling::{KeyStore, NameRules, RoomDefaults, Signaling, SignalingConfig};
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::Settings;
use crate::control::{Control, EgressRuntime};
use crate::delivery::{self, DeliveryConfig};
use crate::http::{self, AppState};
use crate::store;

/// How often rooms idle past their empty_timeout are looked for.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

/// How long shutdown waits for recordings to finalize their files.
const EGRESS_GRACE: Duration = Duration::from_secs(10);

/// How long shutdown waits for participants to be told and to go.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// SQLite does not create missing directories; the embedded default lives in `data_dir`.
pub fn prepare_data_dir(database_url: &str, data_dir: &Path) -> anyhow::Result<()> {
    if database_url.starts_with("sqlite:") && !database_url.contains(":memory:") {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    }
    Ok(())
}

pub fn serve(settings: Settings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log).context("invalid log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run(settings))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    if settings.dev {
        info!(
            "development mode: API key \"devkey\" with secret \"secret\" is accepted; never use --dev in production"
        );
    }
    prepare_data_dir(&settings.database_url, &settings.data_dir)?;
    // Before the media plane: its workers take their metric handles when they start.
    http::metrics::install().context("cannot install the metrics recorder")?;
    let store = store::open_store(&settings.database_url)
        .await
        .context("cannot open the session store")?;

    let test_drop_video_every = test_drop_video_every()?;
    let sfu = Sfu::start(&SfuConfig {
        bind_ip: settings.rtc.ip,
        port: settings.rtc.port,
        workers: settings.rtc.workers,
        advertise_ips: settings.rtc.advertised_ips(),
        test_drop_video_every,
        ice_connect_timeout: settings.limits.ice_connect_timeout,
        peer_departure_timeout: settings.limits.peer_departure_timeout,
        max_media_sections: settings.limits.max_media_sections as usize,
    })
    .context("cannot start the media plane")?;
    let media_addrs = sfu.local_addrs();
    let sfu = Arc::new(sfu);

    let keys = KeyStore::new(settings.keys.clone());
    let (signaling, events) = Signaling::new(
        SignalingConfig {
            keys,
            rooms: RoomDefaults {
                empty_timeout: settings.empty_timeout,
                max_participants: settings.max_participants,
            },
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(15),
            node_id: format!("ND_{}", settings.http_addr.port()),
            ice_servers: settings.rtc.ice_servers.clone(),
            names: NameRules {
                max_room_name_bytes: settings.limits.max_room_name_bytes,
                max_identity_bytes: settings.limits.max_participant_identity_bytes,
            },
        },
        Arc::clone(&sfu),
    );
    let control = Control::new(
        Arc::clone(&store),
        Arc::clone(&signaling),
        settings.empty_timeout.as_secs().min(u64::from(u32::MAX)) as u32,
        settings.max_participants,
        EgressRuntime::new(
            Arc::clone(&sfu),
            settings.egress_dir.clone(),
            settings.limits.max_egress as usize,
        ),
    );
    control
        .recover_after_restart()
        .await
        .context("cannot reconcile the records left by the previous run")?;
    let (stop_tasks, tasks_stop) = watch::channel(false);
    let recorder = tokio::spawn(Arc::clone(&control).run_signal_events(events, tasks_stop.clone()));
    let egress_events = tokio::spawn(Arc::clone(&control).run_egress_events(tasks_stop.clone()));
    let maintenance = tokio::spawn(
        Arc::clone(&control).run_maintenance(MAINTENANCE_INTERVAL, tasks_stop.clone()),
    );
    let delivery_config =
        DeliveryConfig::from_settings(&settings).context("invalid event delivery settings")?;
    let deliveries = delivery::spawn(
        Arc::clone(&store),
        delivery_config,
        Arc::clone(&control.delivery_wake),
        tasks_stop.clone(),
    );

    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
    let http_addr = listener.local_addr()?;
    let listener = without_nagle(listener);
    let public_ws_url = match &settings.public_url {
        Some(url) => url.clone(),
        None if settings.http_addr.port() == 0 => format!("ws://{http_addr}"),
        None => settings.public_ws_url(),
    };
    let state = AppState {
        control: Arc::clone(&control),
        signaling: Arc::clone(&signaling),
        sfu: Arc::clone(&sfu),
        keys: Arc::new(settings.keys.clone()),
        public_ws_url,
        dev: settings.dev,
        guest_limiter: Arc::new(http::default_guest_limiter()),
    };
    let app = http::router(state);
    info!(%http_addr, media = ?media_addrs, "listening");
    // Tests and scripts wait for this exact line on stdout.
    println!("switchboard ready http://{http_addr}");

    let shutdown_signaling = Arc::clone(&signaling);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        info!("shutting down: telling participants to leave");
        shutdown_signaling.shutdown(SHUTDOWN_GRACE).await;
    })
    .await
    .context("the HTTP server failed")?;

    // Recordings are finalized and recorded as complete before the event loops stop.
    control.stop_all_egress(EGRESS_GRACE).await;
    let _ = stop_tasks.send(true);
    let _ = recorder.await;
    let _ = egress_events.await;
    let _ = maintenance.await;
    // The recorder's last events are in the log; delivery gets its stop grace for them.
    for task in deliveries {
        let _ = task.await;
    }
    store.close().await;
    sfu.shutdown();
    info!("stopped");
    Ok(())
}

/// Accepts connections with Nagle's algorithm off. Signaling is small messages in both
/// directions (a JoinResponse then a ParticipantUpdate, an answer then a trickle candidate):
/// with Nagle on, a message written while the previous one is unacknowledged waits for the
/// peer's ACK (a round trip, or a delayed ACK's up to 40 ms on Linux). On loopback, where
/// Linux acknowledges at once, it made no measurable difference.
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(set_nodelay)
}

fn set_nodelay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        warn!("cannot turn Nagle's algorithm off on a connection: {e}");
    }
}

/// The retransmission tests' hook (`SWITCHBOARD_TEST_DROP_VIDEO_EVERY=N`, docs/configuration.md):
/// the media plane withholds the first send of every Nth forwarded video packet, as a lossy
/// downlink would, so a browser's NACKs and our resends can be tested on loopback.
fn test_drop_video_every() -> anyhow::Result<Option<std::num::NonZeroU64>> {
    const NAME: &str = "SWITCHBOARD_TEST_DROP_VIDEO_EVERY";
    let Ok(value) = std::env::var(NAME) else {
        return Ok(None);
    };
    let every = value
        .parse::<std::num::NonZeroU64>()
        .with_context(|| format!("{NAME}={value:?} is not a whole number above 0"))?;
    tracing::warn!(
        every = every.get(),
        "{NAME} is set: every {every}th forwarded video packet is held back (a test hook)"
    );
    Ok(Some(every))
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::without_nagle;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = without_nagle(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(
            accepted.nodelay().unwrap(),
            "the server side must not delay small writes"
        );
    }
}
