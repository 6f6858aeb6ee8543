//! `switchboard serve`: starts the media plane, signaling, the session store and the HTTP
//! server, and shuts them down in order on SIGINT/SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_sfu::{Sfu, SfuConfig};
use switchboard_signaling::{
    KeyStore, NameRules, RoomDefaults, SessionLimits, Signaling, SignalingConfig,
};
use tokio::sync::watch;
use tracing::info;
use tracing_subscriber::EnvFilter;

use crate::cluster;
use crate::config::Settings;
use crate::control::{Control, EgressRuntime};
use crate::delivery::{self, DeliveryConfig};
use crate::http::{self, AppState};
use crate::store::{self, NodeRegistration, NodeState};

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
    settings.check_dev_exposure()?;
    let filter = EnvFilter::try_new(&settings.log).context("invalid log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run(settings))
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
    let node_id =
        cluster::identity::resolve(settings.cluster.node_id.as_deref(), &settings.data_dir)
            .context("cannot settle this node's id")?;
    info!(%node_id, "node identity");

    let test_drop_video_every = test_drop_video_every()?;
    let sfu = Sfu::start(&SfuConfig {
        bind_ip: settings.rtc.ip,
        port: settings.rtc.port,
        tcp_port: settings.rtc.tcp_port,
        max_tcp_connections: settings.limits.max_tcp_connections as usize,
        tcp_connections_per_address: settings.limits.tcp_connections_per_address as usize,
        workers: settings.rtc.workers,
        bandwidth_estimation: settings.rtc.bandwidth_estimation,
        advertise_ips: settings.rtc.advertised_ips(),
        test_drop_video_every,
        ice_connect_timeout: settings.limits.ice_connect_timeout,
        peer_departure_timeout: settings.limits.peer_departure_timeout,
        max_media_sections: settings.limits.max_media_sections as usize,
        max_remote_candidates: settings.limits.max_remote_candidates as usize,
        data_queue_bytes: settings.limits.data_queue_bytes,
    })
    .context("cannot start the media plane")?;
    let media_addrs = sfu.local_addrs();
    let media_tcp = sfu.tcp_addr();
    let sfu = Arc::new(sfu);

    let turn = crate::turn::start(&settings).await?;
    let mut ice_servers = settings.rtc.ice_servers.clone();
    if let Some(turn) = &turn {
        ice_servers.extend(turn.announced.iter().cloned());
    }

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
            node_id: node_id.clone(),
            ice_servers,
            names: NameRules {
                max_room_name_bytes: settings.limits.max_room_name_bytes,
                max_identity_bytes: settings.limits.max_participant_identity_bytes,
            },
            limits: session_limits(&settings.limits),
            single_pc: settings.rtc.single_pc,
        },
        Arc::clone(&sfu),
    );
    signaling.set_max_rooms(settings.limits.max_rooms);
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
        node_id.clone(),
    );
    // Bound before registering: the node advertises the address it really listens on.
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
    let http_addr = listener.local_addr()?;
    let public_ws_url = match &settings.public_url {
        Some(url) => url.clone(),
        None if settings.http_addr.port() == 0 => format!("ws://{http_addr}"),
        None => settings.public_ws_url(),
    };
    let membership = cluster::Membership::new(
        Arc::clone(&store),
        Arc::clone(&signaling),
        NodeRegistration {
            node_id: node_id.clone(),
            http_url: settings.http_url_for(http_addr),
            public_url: public_ws_url.clone(),
            max_rooms: settings.limits.max_rooms,
            started_at: crate::control::now(),
        },
        settings.cluster.heartbeat_interval,
        settings.cluster.node_timeout,
        settings.cluster.room_lease_ttl,
    );
    // From here on, a room opens on this node only with its lease.
    signaling.set_placement(cluster::LeasePlacement::new(
        Arc::clone(&store),
        node_id.clone(),
        settings.cluster.room_lease_ttl,
        settings.cluster.node_timeout,
    ));
    // Registered before recovering: a live node releasing this one's records from now on
    // sees a fresh heartbeat and leaves them to this node.
    membership
        .register()
        .await
        .context("cannot register this node in the session store")?;
    control
        .recover_after_restart()
        .await
        .context("cannot reconcile the records left by the previous run")?;
    let (stop_tasks, tasks_stop) = watch::channel(false);
    let heartbeat = tokio::spawn(Arc::clone(&membership).run_heartbeat(tasks_stop.clone()));
    let release = tokio::spawn(Arc::clone(&membership).run_release(tasks_stop.clone()));
    let recorder = tokio::spawn(Arc::clone(&control).run_signal_events(
        events,
        settings.limits.recorder_queue_bytes,
        tasks_stop.clone(),
    ));
    let egress_events = tokio::spawn(Arc::clone(&control).run_egress_events(tasks_stop.clone()));
    let maintenance = tokio::spawn(
        Arc::clone(&control).run_maintenance(MAINTENANCE_INTERVAL, tasks_stop.clone()),
    );
    let bus_tasks = match &settings.nats {
        Some(nats) => {
            let (sender, tasks) = cluster::bus::start(
                nats,
                node_id.clone(),
                Arc::clone(&signaling),
                tasks_stop.clone(),
            )
            .await
            .context("cannot start the cluster bus")?;
            let _ = control.revocation_bus.set(sender);
            tasks
        }
        None => Vec::new(),
    };
    let delivery_config = DeliveryConfig::from_settings(&settings, &node_id)
        .context("invalid event delivery settings")?;
    let deliveries = delivery::spawn(
        Arc::clone(&store),
        delivery_config,
        Arc::clone(&control.delivery_wake),
        tasks_stop.clone(),
    );

    // Installed before the ready line: a signal sent right after it is not missed.
    let signals =
        cluster::drain::StopSignals::install().context("cannot listen for stop signals")?;
    let drain = cluster::drain::Drain::new(settings.cluster.drain_timeout);
    let state = AppState {
        control: Arc::clone(&control),
        signaling: Arc::clone(&signaling),
        sfu: Arc::clone(&sfu),
        keys: Arc::new(settings.keys.clone()),
        public_ws_url,
        dev: settings.dev,
        guest_limiter: Arc::new(http::default_guest_limiter()),
        cors: Arc::new(http::CorsPolicy::new(
            settings.dev,
            settings.cors_origins.as_ref(),
            &own_origins(http_addr, &settings),
        )),
        node_timeout: settings.cluster.node_timeout,
        forwarder: cluster::Forwarder::new(
            Arc::clone(&store),
            node_id.clone(),
            settings.cluster.room_lease_ttl,
        )?,
        drain: Arc::clone(&drain),
        guard: http::Guard::new(http::GuardLimits {
            rtc_per_minute: settings.limits.rtc_requests_per_minute,
            whip_per_minute: settings.limits.whip_requests_per_minute,
            api_per_minute: settings.limits.api_requests_per_minute,
            body_bytes: settings.limits.http_request_body_bytes,
            body_timeout: settings.limits.http_body_timeout,
        }),
    };
    let app = http::router(state);
    info!(%http_addr, media = ?media_addrs, ?media_tcp, "listening");
    // Tests and scripts wait for this exact line on stdout.
    println!("switchboard ready http://{http_addr}");

    let shutdown_signaling = Arc::clone(&signaling);
    let shutdown_membership = Arc::clone(&membership);
    let serve_limits = http::ServeLimits {
        header_timeout: settings.limits.http_header_timeout,
        idle_timeout: settings.limits.http_idle_timeout,
        header_bytes: settings.limits.http_header_bytes,
        max_connections: settings.limits.http_max_connections,
        connections_per_address: settings.limits.http_connections_per_address,
    };
    let stopped = cluster::drain::until_stopped(
        signals,
        drain,
        shutdown_membership,
        shutdown_signaling,
        SHUTDOWN_GRACE,
    );
    http::serve(listener, app, serve_limits, stopped).await;

    // Recordings are finalized and recorded as complete before the event loops stop.
    control.stop_all_egress(EGRESS_GRACE).await;
    let _ = stop_tasks.send(true);
    let _ = recorder.await;
    let _ = egress_events.await;
    let _ = maintenance.await;
    let _ = heartbeat.await;
    let _ = release.await;
    for task in bus_tasks {
        let _ = task.await;
    }
    // The recorder's last events are in the log; delivery gets its stop grace for them.
    for task in deliveries {
        let _ = task.await;
    }
    // Last: what this node recorded on the way out is in, and no heartbeat follows.
    membership.set_state(NodeState::Stopped).await;
    store.close().await;
    sfu.shutdown();
    if let Some(turn) = turn {
        turn.server.shutdown().await;
    }
    info!("stopped");
    Ok(())
}

/// The origins pages served by this server have: the bound address, the configured HTTP
/// address and the public URL's host (ws→http, wss→https).
fn own_origins(bound: std::net::SocketAddr, settings: &Settings) -> Vec<String> {
    let mut origins = vec![
        format!("http://{bound}"),
        format!("http://{}", settings.http_addr),
    ];
    let public = settings.public_ws_url();
    if let Some(rest) = public.strip_prefix("wss://") {
        origins.push(format!(
            "https://{}",
            rest.split('/').next().unwrap_or(rest)
        ));
    } else if let Some(rest) = public.strip_prefix("ws://") {
        origins.push(format!("http://{}", rest.split('/').next().unwrap_or(rest)));
    }
    origins
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

/// The participant limits of the `[limits]` table, as signaling enforces them.
fn session_limits(limits: &crate::config::Limits) -> SessionLimits {
    SessionLimits {
        max_tracks: limits.max_tracks_per_participant,
        max_metadata_bytes: limits.max_participant_metadata_bytes,
        max_attributes: limits.max_participant_attributes,
        max_attributes_bytes: limits.max_participant_attributes_bytes,
        max_name_bytes: limits.max_participant_name_bytes,
        max_room_metadata_bytes: limits.max_room_metadata_bytes,
        max_data_packet_bytes: limits.max_data_packet_bytes,
        data_packets_per_second: limits.data_packets_per_second,
        data_bytes_per_second: limits.data_bytes_per_second,
        signal_requests_per_second: limits.signal_requests_per_second,
        signal_queue_bytes: limits.signal_queue_bytes,
        signal_write_timeout: limits.signal_write_timeout,
        departure_timeout: limits.peer_departure_timeout,
        token_refresh_interval: limits.token_refresh_interval,
    }
}
