//! Cluster membership of this node: its stable id ([`identity`]) and its row in the
//! store's `nodes` table, kept fresh by a heartbeat, with dead nodes' records released by
//! whichever live node notices first ([`membership`]); rooms owned by one node through a
//! lease ([`placement`]), renewed by the heartbeat; admin calls about a room relayed to the
//! node that holds its lease ([`forward`]).
//!
//! Revocations reach the other nodes at once over NATS ([`bus`]); a node drains before it
//! stops ([`drain`]). What a cluster does not have yet (routing joins to the owning node,
//! delivering each event once) is listed in docs/cluster.md.

pub mod bus;
pub mod drain;
pub mod forward;
pub mod identity;
pub mod membership;
pub mod placement;

pub use forward::Forwarder;
pub use membership::Membership;
pub use placement::LeasePlacement;
