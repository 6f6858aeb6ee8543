//! Tests of the cluster settings: the node id and the heartbeat timing, from every source.

use std::time::Duration;

use super::tests::{env, err, no_env, path_str, serve, toml_file};
use super::*;

#[test]
fn cluster_defaults() {
    let settings = resolve(&serve(&["--dev"]), &no_env).expect("defaults");
    assert_eq!(
        settings.cluster,
        ClusterSettings {
            node_id: None,
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(10),
            room_lease_ttl: Duration::from_secs(10),
            delivery_lease_ttl: Duration::from_secs(10),
            drain_timeout: Duration::ZERO,
        }
    );
}

#[test]
fn cluster_settings_from_flag_env_and_file() {
    let file = toml_file(
        "node_id = \"from-file\"\n[cluster]\nheartbeat_interval = 3\nnode_timeout = \"1m\"\n\
         drain_timeout = 30\n",
    );
    let args = serve(&["--dev", "--config", path_str(&file)]);
    let settings = resolve(&args, &no_env).expect("file");
    assert_eq!(settings.cluster.node_id.as_deref(), Some("from-file"));
    assert_eq!(settings.cluster.heartbeat_interval, Duration::from_secs(3));
    assert_eq!(settings.cluster.node_timeout, Duration::from_secs(60));
    assert_eq!(settings.cluster.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        settings.cluster.room_lease_ttl,
        Duration::from_secs(60),
        "the node timeout by default"
    );

    let environment = env(&[
        ("SWITCHBOARD_NODE_ID", "from-env"),
        ("SWITCHBOARD_CLUSTER_HEARTBEAT_INTERVAL", "1s"),
        ("SWITCHBOARD_CLUSTER_DRAIN_TIMEOUT", "2m"),
    ]);
    let settings = resolve(&args, &environment).expect("env");
    assert_eq!(settings.cluster.drain_timeout, Duration::from_secs(120));
    assert_eq!(settings.cluster.node_id.as_deref(), Some("from-env"));
    assert_eq!(settings.cluster.heartbeat_interval, Duration::from_secs(1));

    let args = serve(&[
        "--dev",
        "--config",
        path_str(&file),
        "--node-id",
        "edge-1.eu_west",
        "--cluster-node-timeout",
        "20s",
        "--cluster-room-lease-ttl",
        "8s",
        "--cluster-drain-timeout",
        "15m",
    ]);
    let settings = resolve(&args, &environment).expect("flags");
    assert_eq!(settings.cluster.node_id.as_deref(), Some("edge-1.eu_west"));
    assert_eq!(settings.cluster.node_timeout, Duration::from_secs(20));
    assert_eq!(settings.cluster.room_lease_ttl, Duration::from_secs(8));
    assert_eq!(settings.cluster.drain_timeout, Duration::from_secs(15 * 60));
}

#[test]
fn node_ids_are_checked() {
    let long = "n".repeat(65);
    for (bad, says) in [
        ("a/b", "may only contain"),
        ("node one", "may only contain"),
        ("nöde", "may only contain"),
        (long.as_str(), "at most 64"),
    ] {
        let message = err(&serve(&["--dev", "--node-id", bad]), &no_env);
        assert!(message.contains("--node-id"), "{message}");
        assert!(message.contains(says), "{bad:?}: {message}");
    }
    assert!(parse_node_id(&"n".repeat(64)).is_ok());
    assert_eq!(
        parse_node_id(""),
        Err("a node id must not be empty".to_owned())
    );
    // An empty environment variable is unset (as for every setting); an empty value in the
    // file is an error that names the file's key.
    let file = toml_file("node_id = \"\"\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert!(message.contains("node_id = \"\""), "{message}");
    assert!(message.contains("must not be empty"), "{message}");
}

#[test]
fn the_node_timeout_must_outlast_two_heartbeats() {
    let message = err(
        &serve(&["--dev", "--cluster-heartbeat-interval", "6s"]),
        &no_env,
    );
    assert!(message.contains("cluster.node_timeout"), "{message}");
    assert!(message.contains("at least twice"), "{message}");
    let ok = serve(&[
        "--dev",
        "--cluster-heartbeat-interval",
        "5s",
        "--cluster-node-timeout",
        "10s",
    ]);
    assert!(resolve(&ok, &no_env).is_ok());
    let message = err(
        &serve(&["--dev", "--cluster-heartbeat-interval", "0"]),
        &no_env,
    );
    assert!(
        message.contains("--cluster-heartbeat-interval"),
        "{message}"
    );
    let message = err(
        &serve(&["--dev"]),
        &env(&[("SWITCHBOARD_CLUSTER_NODE_TIMEOUT", "soon")]),
    );
    assert!(
        message.contains("SWITCHBOARD_CLUSTER_NODE_TIMEOUT"),
        "{message}"
    );
}

#[test]
fn the_room_lease_ttl_lies_between_two_heartbeats_and_the_node_timeout() {
    for ttl in ["3s", "11s"] {
        let message = err(&serve(&["--dev", "--cluster-room-lease-ttl", ttl]), &no_env);
        assert!(message.contains("cluster.room_lease_ttl"), "{message}");
        assert!(message.contains("at most"), "{message}");
    }
    let ok = serve(&["--dev", "--cluster-room-lease-ttl", "4s"]);
    let settings = resolve(&ok, &no_env).expect("4s");
    assert_eq!(settings.cluster.room_lease_ttl, Duration::from_secs(4));
    let file = toml_file("[cluster]\nroom_lease_ttl = \"6s\"\n");
    let settings = resolve(&serve(&["--dev", "--config", path_str(&file)]), &no_env).expect("file");
    assert_eq!(settings.cluster.room_lease_ttl, Duration::from_secs(6));
}

#[test]
fn the_delivery_lease_ttl_defaults_to_the_node_timeout_from_every_source() {
    let file = toml_file("[cluster]\nnode_timeout = \"30s\"\n");
    let from_file = serve(&["--dev", "--config", path_str(&file)]);
    let settings = resolve(&from_file, &no_env).expect("file");
    assert_eq!(
        settings.cluster.delivery_lease_ttl,
        Duration::from_secs(30),
        "the node timeout by default"
    );
    let file = toml_file("[cluster]\ndelivery_lease_ttl = \"4s\"\n");
    let args = serve(&["--dev", "--config", path_str(&file)]);
    let settings = resolve(&args, &no_env).expect("file");
    assert_eq!(settings.cluster.delivery_lease_ttl, Duration::from_secs(4));
    let environment = env(&[("SWITCHBOARD_CLUSTER_DELIVERY_LEASE_TTL", "90s")]);
    let settings = resolve(&args, &environment).expect("env");
    assert_eq!(settings.cluster.delivery_lease_ttl, Duration::from_secs(90));
    let flags = serve(&[
        "--dev",
        "--config",
        path_str(&file),
        "--cluster-delivery-lease-ttl",
        "1s",
    ]);
    let settings = resolve(&flags, &environment).expect("flag");
    assert_eq!(settings.cluster.delivery_lease_ttl, Duration::from_secs(1));
    // Independent of the heartbeat and of the room lease.
    assert_eq!(settings.cluster.room_lease_ttl, Duration::from_secs(10));

    let message = err(
        &serve(&["--dev", "--cluster-delivery-lease-ttl", "0"]),
        &no_env,
    );
    assert!(
        message.contains("--cluster-delivery-lease-ttl"),
        "{message}"
    );
    assert!(message.contains("above zero"), "{message}");
    let message = err(
        &serve(&["--dev"]),
        &env(&[("SWITCHBOARD_CLUSTER_DELIVERY_LEASE_TTL", "later")]),
    );
    assert!(
        message.contains("SWITCHBOARD_CLUSTER_DELIVERY_LEASE_TTL"),
        "{message}"
    );
}

#[test]
fn unknown_cluster_keys_list_the_known_ones() {
    let file = toml_file("[cluster]\nheartbeat = 2\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert!(message.contains("cluster.heartbeat_interval"), "{message}");
    assert!(message.contains("cluster.node_timeout"), "{message}");
}
