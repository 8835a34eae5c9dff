//! An edge's state from its last heartbeat and the interval.

use outpost_protocol::EdgeState;

/// What the state depends on.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub revoked: bool,
    pub approved: bool,
    /// Unix milliseconds of the last heartbeat (or of enrolment, so a new
    /// edge gets its grace period).
    pub last_seen_ms: i64,
}

/// Up within 1.5 intervals of the last heartbeat, stale within 2.5, down
/// beyond (two heartbeats missed). Revoked and pending win over timing.
pub fn edge_state(edge: Liveness, now_ms: i64, heartbeat_ms: u64) -> EdgeState {
    if edge.revoked {
        return EdgeState::Revoked;
    }
    if !edge.approved {
        return EdgeState::Pending;
    }
    let age = now_ms.saturating_sub(edge.last_seen_ms).max(0) as u128;
    let interval = heartbeat_ms.max(1) as u128;
    if age * 2 <= interval * 3 {
        EdgeState::Up
    } else if age * 2 <= interval * 5 {
        EdgeState::Stale
    } else {
        EdgeState::Down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(last_seen_ms: i64) -> Liveness {
        Liveness {
            revoked: false,
            approved: true,
            last_seen_ms,
        }
    }

    #[test]
    fn up_stale_down_at_one_and_a_half_and_two_and_a_half_intervals() {
        let h = 30_000;
        assert_eq!(edge_state(live(0), 45_000, h), EdgeState::Up);
        assert_eq!(edge_state(live(0), 45_001, h), EdgeState::Stale);
        assert_eq!(edge_state(live(0), 75_000, h), EdgeState::Stale);
        assert_eq!(edge_state(live(0), 75_001, h), EdgeState::Down);
        // A clock that went backwards is not a reason to call an edge down.
        assert_eq!(edge_state(live(10_000), 0, h), EdgeState::Up);
    }

    #[test]
    fn revoked_and_pending_win_over_timing() {
        let mut e = live(0);
        e.approved = false;
        assert_eq!(edge_state(e, 0, 1000), EdgeState::Pending);
        e.revoked = true;
        assert_eq!(edge_state(e, 0, 1000), EdgeState::Revoked);
    }
}
