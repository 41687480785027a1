//! How a batch of events is planned and reported, whatever store applies it:
//! each post once with its newest version of the batch (the one the gate
//! writes), and the per-event outcome from what the gate did per post.

use std::collections::{HashMap, HashSet};

use crate::Applied;

/// What the gate did with one post of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Written over the version stored before (`None`: the post was new).
    Written {
        /// The version the post had before this write.
        before: Option<i64>,
    },
    /// Not written: the store holds this version or a newer one.
    Stale,
}

/// The posts of a batch, each once, in order of first appearance, with the
/// index of its newest version in the batch.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Per post (a "slot"), the index of its newest event in the batch.
    pub newest: Vec<usize>,
    slot_of: HashMap<i64, usize>,
}

impl Plan {
    /// Plans a batch given as `(post_id, version)` per event, in batch order.
    pub fn of(keys: &[(i64, i64)]) -> Self {
        let mut newest: Vec<usize> = Vec::new();
        let mut slot_of: HashMap<i64, usize> = HashMap::with_capacity(keys.len());
        for (i, &(post_id, version)) in keys.iter().enumerate() {
            match slot_of.get(&post_id) {
                Some(&slot) => {
                    if version > keys[newest[slot]].1 {
                        newest[slot] = i;
                    }
                }
                None => {
                    slot_of.insert(post_id, newest.len());
                    newest.push(i);
                }
            }
        }
        Self { newest, slot_of }
    }

    /// The outcome of every event, in batch order, given the gate of each
    /// slot: [`Applied::Applied`] when its post was written by this call and
    /// the event is newer than the version stored before (older versions of
    /// the batch included: the post moved past them), once per
    /// `(post, version)`; otherwise [`Applied::Stale`].
    pub fn outcomes(&self, keys: &[(i64, i64)], gated: &[Gate]) -> Vec<Applied> {
        let mut seen = HashSet::with_capacity(keys.len());
        keys.iter()
            .map(|&(post_id, version)| {
                let slot = self.slot_of.get(&post_id).copied().unwrap_or_default();
                let newer = match gated.get(slot) {
                    Some(Gate::Written { before }) => before.is_none_or(|before| version > before),
                    Some(Gate::Stale) | None => false,
                };
                if newer && seen.insert((post_id, version)) {
                    Applied::Applied
                } else {
                    Applied::Stale
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_post_once_with_its_newest_and_outcomes_per_event() {
        let keys = [(1, 1), (1, 3), (2, 1), (1, 2), (1, 3)];
        let plan = Plan::of(&keys);
        assert_eq!(plan.newest, vec![1, 2]);
        let outcomes = plan.outcomes(&keys, &[Gate::Written { before: None }, Gate::Stale]);
        use Applied::{Applied as A, Stale as S};
        assert_eq!(outcomes, [A, A, S, A, S]);
        let outcomes = plan.outcomes(&keys, &[Gate::Written { before: Some(2) }, Gate::Stale]);
        assert_eq!(outcomes, [S, A, S, S, S]);
    }
}
