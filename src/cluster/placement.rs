//! Placement by lease: this node takes a room's lease in the store before the room opens
//! here ([`LeasePlacement`], installed into signaling), or, for a client's join to a room
//! nobody serves, gives it to the least-loaded live node ([`least_loaded`]), to which
//! signaling then relays the client.

use std::sync::Arc;
use std::time::Duration;

use switchboard_signaling::{Claim, Owner, Placement, PlacementRefused, Placing};
use tracing::warn;

use crate::control::now;
use crate::store::{LeaseOutcome, NodeRecord, NodeState, RoomLease, Store, StoreError};

/// Takes room leases for this node, or places new rooms on the least-loaded node.
pub struct LeasePlacement {
    store: Arc<dyn Store>,
    node_id: String,
    ttl: Duration,
    /// Heartbeats older than this mark a node dead: it gets no new room.
    node_timeout: Duration,
}

fn held_elsewhere(room: &str, lease: RoomLease) -> PlacementRefused {
    PlacementRefused::OwnedElsewhere {
        room: room.to_owned(),
        owner: Owner {
            node_id: lease.node_id,
            public_url: lease.public_url,
            http_url: lease.http_url,
        },
    }
}

impl LeasePlacement {
    pub fn new(
        store: Arc<dyn Store>,
        node_id: String,
        ttl: Duration,
        node_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            node_id,
            ttl,
            node_timeout,
        })
    }

    async fn take(&self, room: &str, placing: Placing) -> Result<(), PlacementRefused> {
        // Bounded like a heartbeat: a join waits no longer than a lease lasts.
        let call = self.place(room, placing);
        let unavailable = |reason: String| PlacementRefused::Unavailable {
            room: room.to_owned(),
            reason,
        };
        match tokio::time::timeout(self.ttl, call).await {
            Ok(Ok(placed)) => placed,
            Ok(Err(e)) => {
                warn!(room, "placing the room failed: {e}");
                Err(unavailable("the session store failed".to_owned()))
            }
            Err(_) => {
                warn!(room, "placing the room timed out");
                Err(unavailable("the session store did not answer".to_owned()))
            }
        }
    }

    /// The room's node: its current owner, else (for [`Placing::Anywhere`]) the
    /// least-loaded live node, which may be this one, or (for [`Placing::Elsewhere`], a
    /// draining node) the least-loaded other node; `Ok(())` when it is this node, whose lease
    /// is then taken or renewed.
    async fn place(
        &self,
        room: &str,
        placing: Placing,
    ) -> Result<Result<(), PlacementRefused>, StoreError> {
        let at = now();
        if placing != Placing::Here {
            let ours = match self.store.room_owner(room, at).await? {
                Some(lease) if lease.node_id != self.node_id => {
                    return Ok(Err(held_elsewhere(room, lease)));
                }
                Some(_) => true,
                None => false,
            };
            if !ours || placing == Placing::Elsewhere {
                let nodes = self.store.list_nodes(at, self.node_timeout).await?;
                let candidates: Vec<NodeRecord> = nodes
                    .into_iter()
                    .filter(|n| placing == Placing::Anywhere || n.node_id != self.node_id)
                    .collect();
                match least_loaded(&candidates).filter(|n| n.node_id != self.node_id) {
                    Some(pick) => {
                        if ours {
                            // Draining: the room was placed here but never opened; hand it on.
                            self.store.release_room_lease(room, &self.node_id).await?;
                        }
                        return self.place_on(room, pick, at).await;
                    }
                    None if placing == Placing::Elsewhere => {
                        return Ok(Err(PlacementRefused::Draining {
                            room: room.to_owned(),
                            node_id: self.node_id.clone(),
                        }));
                    }
                    None => {}
                }
            }
        }
        Ok(
            match self
                .store
                .acquire_room_lease(room, &self.node_id, at, self.ttl)
                .await?
            {
                LeaseOutcome::Granted { .. } => Ok(()),
                LeaseOutcome::HeldBy(lease) => Err(held_elsewhere(room, lease)),
            },
        )
    }
}

impl LeasePlacement {
    /// Gives a room nobody serves to `pick`: its lease names that node, so racing placements
    /// agree on one owner; that node renews it once the routed client opens the room there,
    /// and it lapses after one TTL if nobody comes.
    async fn place_on(
        &self,
        room: &str,
        pick: &NodeRecord,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Result<(), PlacementRefused>, StoreError> {
        let outcome = self
            .store
            .acquire_room_lease(room, &pick.node_id, at, self.ttl)
            .await?;
        Ok(match outcome {
            LeaseOutcome::Granted { .. } => Err(PlacementRefused::OwnedElsewhere {
                room: room.to_owned(),
                owner: Owner {
                    node_id: pick.node_id.clone(),
                    public_url: Some(pick.public_url.clone()),
                    http_url: Some(pick.http_url.clone()),
                },
            }),
            LeaseOutcome::HeldBy(lease) if lease.node_id == self.node_id => Ok(()),
            LeaseOutcome::HeldBy(lease) => Err(held_elsewhere(room, lease)),
        })
    }
}

impl Placement for LeasePlacement {
    fn claim<'a>(&'a self, room: &'a str, placing: Placing) -> Claim<'a> {
        Box::pin(self.take(room, placing))
    }
}

/// The node a new room should be placed on: among live, active nodes with a free room, the
/// one with the fewest rooms (then participants, then node id, so every node picks alike).
/// `max_rooms` 0 means no limit.
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
