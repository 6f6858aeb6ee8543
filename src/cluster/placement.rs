//! Placement by lease: this node takes a room's lease in the store before the room opens
//! here ([`LeasePlacement`], installed into signaling), and, for routing later, which node a
//! new room should go to ([`least_loaded`]).

use std::sync::Arc;
use std::time::Duration;

use switchboard_signaling::{Claim, Placement, PlacementRefused};
use tracing::warn;

use crate::control::now;
use crate::store::{LeaseOutcome, NodeRecord, NodeState, Store};

/// Takes room leases for this node.
pub struct LeasePlacement {
    store: Arc<dyn Store>,
    node_id: String,
    ttl: Duration,
}

impl LeasePlacement {
    pub fn new(store: Arc<dyn Store>, node_id: String, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            node_id,
            ttl,
        })
    }

    async fn take(&self, room: &str) -> Result<(), PlacementRefused> {
        // Bounded like a heartbeat: a join waits no longer than a lease lasts.
        let call = self
            .store
            .acquire_room_lease(room, &self.node_id, now(), self.ttl);
        let unavailable = |reason: String| PlacementRefused::Unavailable {
            room: room.to_owned(),
            reason,
        };
        match tokio::time::timeout(self.ttl, call).await {
            Ok(Ok(LeaseOutcome::Granted { .. })) => Ok(()),
            Ok(Ok(LeaseOutcome::HeldBy(lease))) => Err(PlacementRefused::OwnedElsewhere {
                room: room.to_owned(),
                node_id: lease.node_id,
                url: lease.public_url,
            }),
            Ok(Err(e)) => {
                warn!(room, "taking the room's lease failed: {e}");
                Err(unavailable("the session store failed".to_owned()))
            }
            Err(_) => {
                warn!(room, "taking the room's lease timed out");
                Err(unavailable("the session store did not answer".to_owned()))
            }
        }
    }
}

impl Placement for LeasePlacement {
    fn claim<'a>(&'a self, room: &'a str) -> Claim<'a> {
        Box::pin(self.take(room))
    }
}

/// The node a new room should be placed on: among live, active nodes with a free room, the
/// one with the fewest rooms (then participants, then node id, so every node picks alike).
/// `max_rooms` 0 means no limit.
// For routing joins to the owning node (issue 21), which does not exist yet.
#[allow(dead_code)]
pub fn least_loaded(nodes: &[NodeRecord]) -> Option<&NodeRecord> {
    nodes
        .iter()
        .filter(|n| n.alive && n.state == NodeState::Active)
        .filter(|n| n.max_rooms == 0 || n.load.rooms < n.max_rooms)
        .min_by(|a, b| {
            (a.load.rooms, a.load.participants, &a.node_id).cmp(&(
                b.load.rooms,
                b.load.participants,
                &b.node_id,
            ))
        })
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::store::NodeLoad;

    fn node(id: &str, rooms: u32, participants: u32, max_rooms: u32) -> NodeRecord {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("in range");
        NodeRecord {
            node_id: id.to_owned(),
            http_url: format!("http://{id}"),
            public_url: format!("ws://{id}"),
            max_rooms,
            load: NodeLoad {
                rooms,
                participants,
            },
            state: NodeState::Active,
            started_at: at,
            heartbeat_at: at,
            released_at: None,
            alive: true,
        }
    }

    fn pick(nodes: &[NodeRecord]) -> Option<&str> {
        least_loaded(nodes).map(|n| n.node_id.as_str())
    }

    #[test]
    fn picks_the_live_active_node_with_the_fewest_rooms_and_room_to_spare() {
        assert_eq!(pick(&[]), None);
        let mut nodes = vec![
            node("a", 3, 9, 10),
            node("b", 1, 50, 10),
            node("c", 2, 0, 10),
        ];
        assert_eq!(pick(&nodes), Some("b"), "fewest rooms first");
        nodes[1].load.rooms = 2;
        assert_eq!(pick(&nodes), Some("c"), "then fewest participants");
        nodes[1].load.participants = 0;
        assert_eq!(pick(&nodes), Some("b"), "then the node id");
        nodes[1].state = NodeState::Draining;
        assert_eq!(pick(&nodes), Some("c"), "a draining node takes nothing new");
        nodes[2].alive = false;
        assert_eq!(pick(&nodes), Some("a"), "nor does a dead one");
        nodes[0].load.rooms = 10;
        assert_eq!(pick(&nodes), None, "a full node neither");
        nodes[0].max_rooms = 0;
        assert_eq!(pick(&nodes), Some("a"), "0 = no limit");
    }
}
