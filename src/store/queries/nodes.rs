//! Cluster membership: each node's own row in `nodes` (registration, heartbeats, state) and
//! the list every node reads. Liveness is computed by the reader from `heartbeat_at`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::DialectStore;
use crate::store::records::{to_millis, NodeRow};
use crate::store::{NodeLoad, NodeRecord, NodeRegistration, NodeState, StoreError};

impl DialectStore {
    pub(super) async fn register_node_impl(
        &self,
        node: &NodeRegistration,
    ) -> Result<(), StoreError> {
        // A restart of the same node replaces its row: new URLs, no load yet, active, and
        // no longer released (it is back).
        sqlx::query(concat!(
            "INSERT INTO nodes (node_id, http_url, public_url, max_rooms, rooms, participants, \
                 state, started_at, heartbeat_at, released_at) \
             VALUES ($1, $2, $3, $4, 0, 0, 'active', ",
            ts!("$5"),
            ", ",
            ts!("$5"),
            ", NULL) \
             ON CONFLICT (node_id) DO UPDATE SET \
                 http_url = excluded.http_url, public_url = excluded.public_url, \
                 max_rooms = excluded.max_rooms, rooms = 0, participants = 0, \
                 state = 'active', started_at = excluded.started_at, \
                 heartbeat_at = excluded.heartbeat_at, released_at = NULL"
        ))
        .bind(&node.node_id)
        .bind(&node.http_url)
        .bind(&node.public_url)
        .bind(i64::from(node.max_rooms))
        .bind(to_millis(node.started_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn node_heartbeat_impl(
        &self,
        node_id: &str,
        load: NodeLoad,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // heartbeat_at never moves back (a late heartbeat must not make a node look older);
        // a heartbeat means the node is there, so an earlier release no longer applies.
        let done = sqlx::query(concat!(
            "UPDATE nodes SET rooms = $1, participants = $2, released_at = NULL, \
                 heartbeat_at = ",
            greatest!(),
            "(heartbeat_at, ",
            ts!("$3"),
            ") WHERE node_id = $4"
        ))
        .bind(i64::from(load.rooms))
        .bind(i64::from(load.participants))
        .bind(to_millis(at))
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        registered(done.rows_affected(), node_id)
    }

    pub(super) async fn set_node_state_impl(
        &self,
        node_id: &str,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE nodes SET state = $1, heartbeat_at = ",
            greatest!(),
            "(heartbeat_at, ",
            ts!("$2"),
            ") WHERE node_id = $3"
        ))
        .bind(state.as_str())
        .bind(to_millis(at))
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        registered(done.rows_affected(), node_id)
    }

    pub(super) async fn list_nodes_impl(
        &self,
        now: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        let rows: Vec<NodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            node_columns!(),
            " FROM nodes ORDER BY node_id",
            by_bytes!()
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| row.into_record(now, timeout).map_err(StoreError::from))
            .collect()
    }
}

/// An UPDATE of a node's own row found it, or the node never registered.
fn registered(rows: u64, node_id: &str) -> Result<(), StoreError> {
    if rows == 0 {
        return Err(StoreError::not_found(format!("node `{node_id}`")));
    }
    Ok(())
}
