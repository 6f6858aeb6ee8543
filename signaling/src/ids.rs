//! LiveKit-shaped identifiers: a prefix and 12 base62 characters (`RM_`, `PA_`, `TR_`).

use rand::Rng;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh random sid with `prefix`, e.g. `PA_4fKx9aQ2LmZp`.
pub fn new_sid(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut sid = String::with_capacity(prefix.len() + 12);
    sid.push_str(prefix);
    for _ in 0..12 {
        sid.push(char::from(BASE62[rng.random_range(0..BASE62.len())]));
    }
    sid
}

pub fn room_sid() -> String {
    new_sid("RM_")
}

pub fn participant_sid() -> String {
    new_sid("PA_")
}

pub fn track_sid() -> String {
    new_sid("TR_")
}

/// An agent job (one offer of a dispatch to a worker).
pub fn job_id() -> String {
    new_sid("AJ_")
}

/// An agent dispatch.
pub fn dispatch_id() -> String {
    new_sid("AD_")
}

/// A registered agent worker.
pub fn worker_id() -> String {
    new_sid("AW_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_have_livekit_shape_and_differ() {
        let a = participant_sid();
        let b = participant_sid();
        assert!(a.starts_with("PA_"));
        assert_eq!(a.len(), 15);
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert!(room_sid().starts_with("RM_"));
        assert!(track_sid().starts_with("TR_"));
    }
}
