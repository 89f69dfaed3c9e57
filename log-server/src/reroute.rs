//! The active sets a retry may have been routed with: each log-server remembers the sets it saw
//! replaced within the reroute grace, and every one of them also derives them from the shards'
//! windows, so that a server started after a change (or restarted across it) looks a retry up in the
//! shard its first attempt was routed to.

use cairn_store::{Lifecycle, ShardKind, ShardListing};

use cairn_sequencer::ShardId;

/// The active shards of `kind` just before each start or end of a window within `grace` seconds
/// before `now` (Unix seconds), newest first, as the listings' windows give them. Shards that never
/// took entries (planned now) and archived ones are left out; a configured shard's start is not a
/// change (configured shards are routed while active, whatever start their listing gives).
pub(crate) fn sets_before_changes(
    listings: &[ShardListing],
    kind: ShardKind,
    configured: impl Fn(ShardId) -> bool,
    now: u64,
    grace: u64,
) -> Vec<Vec<ShardId>> {
    let windows: Vec<(ShardId, Option<u64>, Option<u64>)> = listings
        .iter()
        .filter(|l| l.kind == kind && l.state != Lifecycle::Planned && !l.archived)
        .map(|l| {
            let from = if configured(l.id) { None } else { l.valid_from };
            (l.id, from, l.valid_until)
        })
        .collect();
    let mut moments: Vec<u64> = windows
        .iter()
        .flat_map(|(_, from, until)| [*from, *until])
        .flatten()
        .filter(|t| *t <= now && now - *t <= grace)
        .collect();
    moments.sort_unstable_by(|a, b| b.cmp(a));
    moments.dedup();
    let mut sets: Vec<Vec<ShardId>> = Vec::new();
    for t in moments {
        // Active just before `t`: started before it, not ended before it.
        let mut set: Vec<ShardId> = windows
            .iter()
            .filter(|(_, from, until)| from.is_none_or(|f| f < t) && until.is_none_or(|u| u >= t))
            .map(|(id, _, _)| *id)
            .collect();
        set.sort_unstable();
        if !set.is_empty() && !sets.contains(&set) {
            sets.push(set);
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::Shard;

    fn listing(id: ShardId, state: Lifecycle, from: Option<u64>, until: Option<u64>) -> ShardListing {
        let shard = Shard {
            id,
            origin: format!("w{id}.example"),
            vkey: String::new(),
        };
        let mut l = ShardListing::new(shard, ShardKind::Sigstore, state);
        l.valid_from = from;
        l.valid_until = until;
        l
    }

    #[test]
    fn a_rotation_within_the_grace_gives_the_set_before_it() {
        // Window 10 ended at 1000 and window 11 took over then; window 12 is planned.
        let listings = [
            listing(10, Lifecycle::Frozen, Some(900), Some(1000)),
            listing(11, Lifecycle::Active, Some(1000), Some(1100)),
            listing(12, Lifecycle::Planned, Some(1100), Some(1200)),
        ];
        let sets = |now, grace| sets_before_changes(&listings, ShardKind::Sigstore, |_| false, now, grace);
        assert_eq!(sets(1030, 90), vec![vec![10]]);
        // Past the grace, or before the change: nothing.
        assert!(sets(1091, 90).is_empty());
        assert!(sets(990, 5).is_empty());
        // Another kind has no sets.
        assert!(sets_before_changes(&listings, ShardKind::Opaque, |_| false, 1030, 90).is_empty());
        // An archived shard is never looked in.
        let mut archived = listings.clone();
        archived[0].archived = true;
        assert!(sets_before_changes(&archived, ShardKind::Sigstore, |_| false, 1030, 90).is_empty());
    }

    #[test]
    fn a_freeze_among_several_shards_and_a_configured_start() {
        // Configured shards 1 and 2; 2 was frozen at 500; 3 was added at runtime, active from 520.
        let listings = [
            listing(1, Lifecycle::Active, Some(495), None),
            listing(2, Lifecycle::Frozen, Some(10), Some(500)),
            listing(3, Lifecycle::Active, Some(520), None),
        ];
        let configured = |id| id == 1 || id == 2;
        let sets = sets_before_changes(&listings, ShardKind::Sigstore, configured, 530, 90);
        // Newest first: before 3 started, {1}; before 2 ended, {1, 2}. Shard 1's start (a key file's
        // time) is no change.
        assert_eq!(sets, vec![vec![1], vec![1, 2]]);
    }
}
