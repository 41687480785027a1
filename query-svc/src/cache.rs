//! A bounded in-process cache of the read model's `posts`, so that GetPost
//! does not cost a read-store round trip for every call.
//!
//! # Why it stays coherent
//!
//! The only writer of the read model is event-relay, and it publishes
//! `{"post_id":N,"version":V}` on the notify channel *after* each applied
//! event (a rebuild publishes `{"reset":true}` after swapping collections).
//! This process receives those notifications on one subscription
//! ([`crate::notify::Listener`]), and applies each one to the cache in the
//! receive loop itself, before anything else sees it and never behind a
//! bounded queue that could drop it.
//!
//! - **Invalidation.** A notification `(post, v)` removes a cached entry
//!   older than `v`, and records `v` as the post's *marker* (the highest
//!   version ever notified for it).
//! - **Fills cannot put an old version back.** A GetPost that misses reads
//!   the store and then fills the cache. The read may have started before a
//!   change it did not see; its notification may then arrive before the
//!   fill. So a fill is accepted only if its version is at least the post's
//!   marker, and never replaces a newer cached version. A version the store
//!   returned that is at least every notified version is the newest the
//!   store holds as far as anyone told us; any later change will be
//!   notified and evict it. A fill also evicts an older cached version even
//!   when it is refused: the store held the newer one.
//! - **Markers are bounded without losing that guarantee.** When a shard's
//!   marker map grows past its bound it is emptied, and the shard's *floor*
//!   is raised to a new generation: every fill whose read started before
//!   that (it holds a [`Ticket`] of an older generation) is refused, since
//!   the marker it would have been checked against is gone. Reads that
//!   start afterwards only race with notifications that leave markers.
//! - **Only trusted while the subscription is continuously up.** Pub/sub
//!   does not buffer for an absent subscriber, so a notification published
//!   while the connection is down (or a dead connection not yet noticed) is
//!   lost. When the listener loses the subscription the cache is emptied
//!   and *suspended*: lookups miss and fills are refused, so GetPost reads
//!   the store. When it has subscribed again, the cache is emptied once more
//!   (with a new generation, refusing fills from reads that started
//!   before) and resumed. A message on the channel that cannot be parsed
//!   also empties it: it might have been a change.
//! - **A rebuild** swaps whole collections without per-post notifications;
//!   its reset notification empties the cache.
//! - **TTL.** Each entry is served for at most the configured TTL after it
//!   was read from the store, which bounds staleness from anything the
//!   above does not foresee: a relay publishing on another channel, a
//!   notification the relay failed to publish (it logs that and moves on),
//!   a dead connection not yet detected by the keepalive PING.
//!
//! Absence is not cached: a post that does not exist yet is read from the
//! store on every call until it exists. Deleted posts are cached like any
//! other state, so NOT_FOUND for deleted posts is decided exactly as before.
//!
//! # Bounds and cost
//!
//! Entries are spread over shards, each a `Mutex<HashMap>` held only for a
//! map operation (never across an await). Each shard holds at most its share
//! of the entry capacity and of the byte budget; when full, it evicts with
//! CLOCK (a hit sets a reference bit; the hand clears bits until it finds an
//! entry without one). A post larger than a shard's byte budget is not cached.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use postmesh_proto::v1::Post;

/// Most shards the cache is split into (fewer when the capacity is tiny).
const MAX_SHARDS: usize = 16;
/// Markers a shard keeps per entry of capacity before it resets them.
const MARKERS_PER_ENTRY: usize = 4;
/// Fewest markers a shard keeps before it resets them.
const MIN_MARKERS: usize = 1024;
/// Bytes charged per entry on top of its strings: the `Post`, the `Arc`, the
/// map and ring slots.
const ENTRY_OVERHEAD: usize = 256;

/// Counts of what the cache did, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups that went to the store (absent, too old, expired, or suspended).
    pub misses: AtomicU64,
    /// Times the whole cache was emptied.
    pub clears: AtomicU64,
}

/// Picks one counter out of [`CacheStats`].
type StatField = fn(&CacheStats) -> &AtomicU64;

/// Proof of when a store read started, handed back to [`PostCache::fill`].
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    generation: u64,
}

/// The cache; one per process, shared by the handlers and the notification
/// listener. With a capacity of 0 it holds nothing and every lookup misses.
#[derive(Debug)]
pub struct PostCache {
    shards: Box<[Mutex<Shard>]>,
    ttl: Duration,
    /// Raised by every clear and every marker reset; tickets carry it.
    generation: AtomicU64,
    /// True while the notification subscription is up.
    live: AtomicBool,
    stats: Arc<CacheStats>,
}

#[derive(Debug)]
struct Entry {
    post: Arc<Post>,
    filled: Instant,
    slot: usize,
    bytes: usize,
    referenced: bool,
}

#[derive(Debug)]
struct Shard {
    entries: HashMap<i64, Entry>,
    /// Keys in CLOCK order; `entries[k].slot` is k's index here.
    ring: Vec<i64>,
    hand: usize,
    capacity: usize,
    bytes: usize,
    max_bytes: usize,
    /// Highest version notified per post.
    markers: HashMap<i64, i64>,
    max_markers: usize,
    /// Fills of reads from before this generation are refused.
    floor: u64,
}

impl PostCache {
    /// A cache of at most `capacity` posts and about `max_bytes` bytes, each
    /// served for at most `ttl`. It starts suspended: call
    /// [`resume`](Self::resume) once notifications flow.
    pub fn new(capacity: usize, max_bytes: usize, ttl: Duration) -> Arc<Self> {
        let count = if max_bytes == 0 { 0 } else { capacity.min(MAX_SHARDS) };
        let shards = (0..count)
            .map(|i| {
                // Spread the capacity exactly, so the total is `capacity`.
                let capacity = capacity / count + usize::from(i < capacity % count);
                Mutex::new(Shard {
                    entries: HashMap::with_capacity(capacity.min(1024)),
                    ring: Vec::with_capacity(capacity.min(1024)),
                    hand: 0,
                    capacity,
                    bytes: 0,
                    max_bytes: max_bytes / count,
                    markers: HashMap::new(),
                    max_markers: (capacity * MARKERS_PER_ENTRY).max(MIN_MARKERS),
                    floor: 0,
                })
            })
            .collect();
        Arc::new(Self {
            shards,
            ttl,
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            stats: Arc::new(CacheStats::default()),
        })
    }

    /// True unless the capacity is 0.
    pub fn is_enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    /// The counters (shared, so metrics can read them).
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// Publishes the counters through the global OpenTelemetry meter as
    /// `query.cache.hits`, `query.cache.misses` and `query.cache.clears`.
    /// Observed at collection time, so a lookup costs one relaxed atomic add,
    /// not an instrument call.
    pub fn export_metrics(&self) {
        let meter = opentelemetry::global::meter("postmesh");
        let counters: [(&'static str, &'static str, StatField); 3] = [
            ("query.cache.hits", "GetPost calls answered from the post cache", |s| {
                &s.hits
            }),
            ("query.cache.misses", "GetPost calls that read the store", |s| &s.misses),
            ("query.cache.clears", "times the post cache was emptied", |s| &s.clears),
        ];
        for (name, description, field) in counters {
            let stats = Arc::clone(&self.stats);
            // The SDK keeps the callback registered; the handle is not needed.
            let _counter = meter
                .u64_observable_counter(name)
                .with_description(description)
                .with_callback(move |observer| observer.observe(field(&stats).load(Ordering::Relaxed), &[]))
                .build();
        }
    }

    /// Posts cached right now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached post if it is at `min_version` or newer and younger than
    /// the TTL; `None` sends the caller to the store.
    pub fn get(&self, post_id: i64, min_version: i64) -> Option<Post> {
        let shard = self.shard(post_id)?;
        if !self.live.load(Ordering::Acquire) {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let found = {
            let mut shard = lock(shard);
            match shard.entries.get_mut(&post_id) {
                Some(entry) if entry.filled.elapsed() >= self.ttl => {
                    shard.remove(post_id);
                    None
                }
                Some(entry) if entry.post.version >= min_version => {
                    entry.referenced = true;
                    Some(Arc::clone(&entry.post))
                }
                Some(_) | None => None,
            }
        };
        match found {
            Some(post) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                // The copy for the response is made outside the lock.
                Some(Arc::unwrap_or_clone(post))
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Take before reading the store; hand to [`fill`](Self::fill) after.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation.load(Ordering::SeqCst),
        }
    }

    /// Offers what a store read (started when `ticket` was taken) returned.
    /// Refused while suspended, when the cache was cleared or the shard's
    /// markers reset since the ticket, when a newer version was notified or
    /// is cached, and when the post alone exceeds the shard's byte budget.
    pub fn fill(&self, ticket: Ticket, post: &Post) -> bool {
        let Some(shard) = self.shard(post.post_id) else {
            return false;
        };
        if !self.live.load(Ordering::Acquire) {
            return false;
        }
        let bytes = weight(post);
        let mut guard = lock(shard);
        // Through the guard once, so fields can be borrowed separately.
        let shard = &mut *guard;
        // The store held this version, so an older cached one is stale
        // whether or not this read may fill.
        if shard
            .entries
            .get(&post.post_id)
            .is_some_and(|e| e.post.version < post.version)
        {
            shard.remove(post.post_id);
        }
        if ticket.generation < shard.floor
            || bytes > shard.max_bytes
            || shard.markers.get(&post.post_id).is_some_and(|v| *v > post.version)
        {
            return false;
        }
        if let Some(entry) = shard.entries.get_mut(&post.post_id) {
            if entry.post.version > post.version {
                return false;
            }
            // Same or newer version: refresh it in place (a fresh TTL).
            shard.bytes = shard.bytes + bytes - entry.bytes;
            entry.post = Arc::new(post.clone());
            entry.filled = Instant::now();
            entry.bytes = bytes;
            shard.shrink_to_budget(Some(post.post_id));
            return true;
        }
        shard.insert(post.clone(), bytes);
        true
    }

    /// Applies a change notification: evicts an older cached version and
    /// raises the post's marker.
    pub fn invalidate(&self, post_id: i64, version: i64) {
        let Some(shard) = self.shard(post_id) else {
            return;
        };
        let mut shard = lock(shard);
        if shard.entries.get(&post_id).is_some_and(|e| e.post.version < version) {
            shard.remove(post_id);
        }
        if shard.markers.len() >= shard.max_markers && !shard.markers.contains_key(&post_id) {
            // Reads in flight can no longer be checked against the markers
            // being forgotten, so their fills are refused.
            shard.markers.clear();
            shard.floor = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        }
        let marker = shard.markers.entry(post_id).or_insert(version);
        *marker = (*marker).max(version);
    }

    /// Empties the cache and refuses fills from reads already started.
    pub fn clear(&self, why: &str) {
        if !self.is_enabled() {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        for shard in &*self.shards {
            let mut shard = lock(shard);
            shard.entries.clear();
            shard.ring.clear();
            shard.hand = 0;
            shard.bytes = 0;
            shard.markers.clear();
            shard.floor = generation;
        }
        self.stats.clears.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(why, "post cache cleared");
    }

    /// The subscription is down: notifications may be lost from now on, so
    /// the cache is emptied and bypassed until [`resume`](Self::resume).
    pub fn suspend(&self) {
        self.live.store(false, Ordering::Release);
        self.clear("notification subscription lost");
    }

    /// The subscription is (again) up: starts afresh and serves from now on.
    pub fn resume(&self) {
        self.clear("notification subscription established");
        self.live.store(true, Ordering::Release);
    }

    fn shard(&self, post_id: i64) -> Option<&Mutex<Shard>> {
        if self.shards.is_empty() {
            return None;
        }
        // Fibonacci hashing: consecutive ids land on different shards.
        let hash = (post_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        self.shards.get(hash as usize % self.shards.len())
    }
}

impl Shard {
    fn remove(&mut self, post_id: i64) {
        let Some(entry) = self.entries.remove(&post_id) else {
            return;
        };
        self.bytes -= entry.bytes;
        self.ring.swap_remove(entry.slot);
        if let Some(moved) = self.ring.get(entry.slot).copied() {
            if let Some(moved) = self.entries.get_mut(&moved) {
                moved.slot = entry.slot;
            }
        }
    }

    fn insert(&mut self, post: Post, bytes: usize) {
        let post_id = post.post_id;
        while !self.ring.is_empty() && (self.ring.len() >= self.capacity || self.bytes + bytes > self.max_bytes) {
            self.evict_one(None);
        }
        self.bytes += bytes;
        self.ring.push(post_id);
        self.entries.insert(
            post_id,
            Entry {
                post: Arc::new(post),
                filled: Instant::now(),
                slot: self.ring.len() - 1,
                bytes,
                referenced: false,
            },
        );
    }

    /// After an entry grew in place: evicts others until the budget holds.
    fn shrink_to_budget(&mut self, keep: Option<i64>) {
        while self.bytes > self.max_bytes && self.ring.len() > 1 {
            self.evict_one(keep);
        }
    }

    /// CLOCK: clears reference bits until an unreferenced entry comes up.
    fn evict_one(&mut self, keep: Option<i64>) {
        // Two sweeps clear every bit, so this ends; the bound is a guard.
        for _ in 0..=2 * self.ring.len() {
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let Some(key) = self.ring.get(self.hand).copied() else {
                return;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                // Cannot happen (ring and map change together); drop the slot.
                self.ring.swap_remove(self.hand);
                continue;
            };
            if entry.referenced || keep == Some(key) {
                entry.referenced = false;
                self.hand += 1;
                continue;
            }
            self.remove(key);
            return;
        }
    }
}

/// What a cached post is charged against the byte budget.
fn weight(post: &Post) -> usize {
    ENTRY_OVERHEAD + post.title.len() + post.content.len() + post.author_name.len()
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every update leaves the shard consistent before anything can panic,
    // so a poisoned lock is still usable.
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn post(post_id: i64, version: i64) -> Post {
        Post {
            post_id,
            version,
            title: format!("v{version}"),
            ..Post::default()
        }
    }

    fn live(capacity: usize) -> Arc<PostCache> {
        let cache = PostCache::new(capacity, 64 * MIB, Duration::from_secs(60));
        cache.resume();
        cache
    }

    #[test]
    fn a_fill_is_served_until_a_newer_version_is_notified() {
        let cache = live(100);
        assert!(cache.fill(cache.ticket(), &post(1, 1)));
        assert_eq!(cache.get(1, 0).unwrap().version, 1);
        assert_eq!(cache.get(1, 1).unwrap().title, "v1");
        // A min_version above the cached one goes to the store.
        assert!(cache.get(1, 2).is_none());
        // An old or duplicate notification changes nothing...
        cache.invalidate(1, 1);
        assert!(cache.get(1, 0).is_some());
        // ...a newer one evicts.
        cache.invalidate(1, 2);
        assert!(cache.get(1, 0).is_none());
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_read_that_started_before_a_change_cannot_put_the_old_version_back() {
        let cache = live(100);
        // The read starts, the change to v2 is applied and notified, then
        // the read returns the v1 it saw.
        let ticket = cache.ticket();
        cache.invalidate(7, 2);
        assert!(!cache.fill(ticket, &post(7, 1)));
        assert!(cache.get(7, 0).is_none());
        // A later read that sees v2 is cached, and then an old one is not.
        assert!(cache.fill(cache.ticket(), &post(7, 2)));
        assert!(!cache.fill(ticket, &post(7, 1)));
        assert_eq!(cache.get(7, 0).unwrap().version, 2);
        // Evicting v2 for capacity does not forget the marker either.
        cache.clear_shard_entries_for_test(7);
        assert!(!cache.fill(ticket, &post(7, 1)));
    }

    #[test]
    fn forgetting_markers_refuses_fills_from_reads_already_running() {
        let cache = PostCache::new(1, 64 * MIB, Duration::from_secs(60));
        cache.resume();
        let ticket = cache.ticket();
        cache.invalidate(5, 9);
        // Overflow the one shard's markers: the marker for 5 is forgotten.
        for id in 100..100 + MIN_MARKERS as i64 + 1 {
            cache.invalidate(id, 1);
        }
        assert!(
            !cache.fill(ticket, &post(5, 8)),
            "stale fill slipped past a forgotten marker"
        );
        // A refused fill still evicts an older cached version.
        assert!(cache.fill(cache.ticket(), &post(6, 1)));
        let ticket = cache.ticket();
        for id in 5000..5000 + MIN_MARKERS as i64 + 1 {
            cache.invalidate(id, 1);
        }
        assert!(!cache.fill(ticket, &post(6, 2)));
        assert!(cache.get(6, 0).is_none());
        // Reads started after the reset fill normally.
        assert!(cache.fill(cache.ticket(), &post(5, 9)));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = PostCache::new(10, 64 * MIB, Duration::from_millis(30));
        cache.resume();
        assert!(cache.fill(cache.ticket(), &post(1, 1)));
        assert!(cache.get(1, 0).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(1, 0).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_gap_clears_everything_and_the_cache_is_bypassed_until_resubscribed() {
        let cache = live(100);
        assert!(cache.fill(cache.ticket(), &post(1, 1)));
        let before = cache.ticket();
        cache.suspend();
        assert!(cache.is_empty());
        assert!(cache.get(1, 0).is_none());
        assert!(!cache.fill(cache.ticket(), &post(1, 1)), "filled while unsubscribed");
        let during = cache.ticket();
        cache.resume();
        // Reads that started before the subscription was back are refused.
        assert!(!cache.fill(before, &post(1, 1)));
        assert!(!cache.fill(during, &post(1, 1)));
        assert!(cache.fill(cache.ticket(), &post(1, 1)));
        // A reset (rebuild) or an unreadable message clears too.
        let ticket = cache.ticket();
        cache.clear("reset");
        assert!(cache.get(1, 0).is_none());
        assert!(!cache.fill(ticket, &post(1, 1)));
        assert_eq!(cache.stats().clears.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_new_cache_is_suspended_and_a_zero_capacity_one_holds_nothing() {
        let fresh = PostCache::new(10, 64 * MIB, Duration::from_secs(60));
        assert!(!fresh.fill(fresh.ticket(), &post(1, 1)));
        let off = live(0);
        assert!(!off.is_enabled());
        assert!(!off.fill(off.ticket(), &post(1, 1)));
        assert!(off.get(1, 0).is_none());
        off.invalidate(1, 2);
    }

    #[test]
    fn capacity_is_a_hard_bound_and_hot_entries_survive_eviction() {
        for capacity in [1, 3, 17, 100] {
            let cache = live(capacity);
            for id in 1..=1000 {
                cache.fill(cache.ticket(), &post(id, 1));
                assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            }
            assert_eq!(cache.len(), capacity);
        }
        // A post read between fills keeps its reference bit and outlives cold
        // ones (shards of 4: a shard of 1 has no room for anything else).
        let cache = live(4 * MAX_SHARDS);
        cache.fill(cache.ticket(), &post(1, 1));
        for id in 2..=1000 {
            assert!(cache.get(1, 0).is_some(), "hot post evicted before fill {id}");
            cache.fill(cache.ticket(), &post(id, 1));
        }
    }

    #[test]
    fn the_byte_budget_bounds_memory_and_huge_posts_are_not_cached() {
        let cache = PostCache::new(1000, 16 * 10_000, Duration::from_secs(60));
        cache.resume();
        let big = |id| Post {
            content: "x".repeat(3_000),
            ..post(id, 1)
        };
        for id in 1..=1000 {
            cache.fill(cache.ticket(), &big(id));
        }
        let held: usize = cache.shards.iter().map(|s| lock(s).bytes).sum();
        assert!(held <= 16 * 10_000, "{held}");
        assert!(!cache.is_empty());
        let huge = Post {
            content: "x".repeat(20_000),
            ..post(5000, 1)
        };
        assert!(!cache.fill(cache.ticket(), &huge));
    }

    #[test]
    fn a_refill_of_the_same_version_refreshes_and_never_downgrades() {
        let cache = live(10);
        assert!(cache.fill(cache.ticket(), &post(1, 3)));
        assert!(!cache.fill(cache.ticket(), &post(1, 2)));
        assert!(cache.fill(cache.ticket(), &post(1, 3)));
        assert!(cache.fill(cache.ticket(), &post(1, 4)));
        assert_eq!(cache.get(1, 0).unwrap().version, 4);
        assert_eq!(cache.len(), 1);
    }

    impl PostCache {
        /// Drops one post's entry as capacity eviction would.
        fn clear_shard_entries_for_test(&self, post_id: i64) {
            if let Some(shard) = self.shard(post_id) {
                lock(shard).remove(post_id);
            }
        }
    }
}
