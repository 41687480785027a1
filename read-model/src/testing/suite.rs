//! The store test suite: every test a read store must pass, written once
//! against [`ReadStore`] and a [`Fixture`] that makes stores of one
//! implementation. [`store_suite!`](crate::store_suite) turns them into
//! `#[test]`s; each test has data of its own.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::time::Duration;

use futures::{stream, StreamExt};
use postmesh_proto::v1::{EventType, PostEvent};
use proptest::prelude::*;

use super::{created, event, unique, Fixture};
use crate::{
    cursor::Position, timestamp_to_millis, Applied, ListFilter, PostVersion, ReadModelStore, ReadStore, StoreError,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The events of one post: created, `updates` updates, then maybe deleted.
fn post_events(post_id: i64, updates: usize, delete: bool) -> Vec<PostEvent> {
    let created_ms = 1_700_000_000_000 + post_id * 10_000;
    let mut events = vec![created(post_id, "author", created_ms)];
    for n in 0..updates {
        let version = events.len() as i64 + 1;
        events.push(event(
            post_id,
            version,
            EventType::PostUpdated,
            &format!("title {post_id} v{version}"),
            &format!("content {n}"),
            if n % 2 == 0 { "author" } else { "other" },
            created_ms,
        ));
    }
    if delete {
        let last = events.last().and_then(|e| e.post.clone()).expect("post");
        let version = events.len() as i64 + 1;
        events.push(event(
            post_id,
            version,
            EventType::PostDeleted,
            &last.title,
            &last.content,
            &last.author_name,
            created_ms,
        ));
    }
    events
}

/// Events for three posts, then a random permutation with random duplicates.
fn scenario() -> impl Strategy<Value = (Vec<PostEvent>, Vec<PostEvent>)> {
    (
        prop::collection::vec((0usize..5, any::<bool>()), 3),
        prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    )
        .prop_flat_map(|(shapes, duplicates)| {
            let in_order: Vec<PostEvent> = shapes
                .iter()
                .enumerate()
                .flat_map(|(i, (updates, delete))| post_events(i as i64 + 1, *updates, *delete))
                .collect();
            let mut shuffled = in_order.clone();
            for index in &duplicates {
                shuffled.push(index.get(&in_order).clone());
            }
            (Just(in_order), Just(shuffled).prop_shuffle())
        })
}

async fn snapshot(store: &ReadStore) -> (Vec<postmesh_proto::v1::Post>, Vec<PostVersion>) {
    (
        store.all_posts().await.expect("all_posts"),
        store.all_versions().await.expect("all_versions"),
    )
}

/// Three fresh staging stores: the first with `in_order` applied one by one
/// (the state every other order must converge on), the other two empty.
async fn stores_with_expected(base: &ReadStore, in_order: &[PostEvent]) -> [ReadStore; 3] {
    let stores = [(); 3].map(|()| base.staging(&unique("s")));
    for store in &stores {
        store.ensure_schema().await.expect("schema");
    }
    for event in in_order {
        assert_eq!(stores[0].apply(event).await.expect("apply"), Applied::Applied);
    }
    stores
}

/// Events applied one by one, in any order, with duplicates, by one writer
/// and by several at once, end in the state in-order application gives.
pub fn any_order_with_duplicates_converges_to_in_order_state(fixture: &impl Fixture) {
    let rt = runtime();
    let base = rt.block_on(fixture.fresh("qs_prop"));
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |((in_order, shuffled) in scenario())| {
        rt.block_on(async {
            let [expected, sequential, concurrent] = stores_with_expected(&base, &in_order).await;
            for event in &shuffled {
                sequential.apply(event).await.expect("apply");
            }
            // Several relay replicas at once: exercises the upsert race.
            let results: Vec<_> = stream::iter(shuffled.iter().map(|e| concurrent.apply(e)))
                .buffer_unordered(8)
                .collect()
                .await;
            for result in results {
                result.expect("concurrent apply");
            }

            let want = snapshot(&expected).await;
            // In-order application leaves each post at its last event's state.
            let last: Vec<_> = (1..=3)
                .map(|id| in_order.iter().rev().find(|e| e.post_id == id).and_then(|e| e.post.clone()).expect("post"))
                .collect();
            assert_eq!(want.0, last);
            assert_eq!(want.1.len(), in_order.len());
            assert_eq!(snapshot(&sequential).await, want, "sequential shuffled order diverged");
            assert_eq!(snapshot(&concurrent).await, want, "concurrent shuffled order diverged");
            for store in [expected, sequential, concurrent] {
                store.discard().await;
            }
        });
    });
    rt.block_on(fixture.dispose(base));
}

/// Events as in [`scenario`], shuffled with duplicates, then cut into
/// batches of random sizes.
fn batch_scenario() -> impl Strategy<Value = (Vec<PostEvent>, Vec<Vec<PostEvent>>)> {
    (scenario(), prop::collection::vec(1usize..6, 1..24)).prop_map(|((in_order, shuffled), sizes)| {
        let mut batches = Vec::new();
        let mut rest = shuffled.as_slice();
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, tail) = rest.split_at((*size).min(rest.len()));
            batches.push(batch.to_vec());
            rest = tail;
        }
        (in_order, batches)
    })
}

/// The same for batches of random sizes: each event is reported applied at
/// most once, and only while newer than what is stored.
pub fn batches_in_any_order_with_duplicates_converge_to_in_order_state(fixture: &impl Fixture) {
    let rt = runtime();
    let base = rt.block_on(fixture.fresh("qs_batch_prop"));
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |((in_order, batches) in batch_scenario())| {
        rt.block_on(async {
            let [expected, sequential, concurrent] = stores_with_expected(&base, &in_order).await;
            let mut applied = std::collections::HashSet::new();
            for batch in &batches {
                let outcomes = sequential.apply_batch(batch).await.expect("apply_batch");
                assert_eq!(outcomes.len(), batch.len());
                for (event, outcome) in batch.iter().zip(outcomes) {
                    if outcome == Applied::Applied {
                        // Never twice, and only while newer than what is stored.
                        assert!(applied.insert((event.post_id, event.version)), "applied twice: {event:?}");
                    }
                }
            }
            // Several relay replicas at once: exercises the gate race and settle.
            let results: Vec<_> = stream::iter(batches.iter().map(|b| concurrent.apply_batch(b)))
                .buffer_unordered(8)
                .collect()
                .await;
            for result in results {
                result.expect("concurrent apply_batch");
            }

            let want = snapshot(&expected).await;
            assert_eq!(want.1.len(), in_order.len());
            assert_eq!(snapshot(&sequential).await, want, "sequential batches diverged");
            assert_eq!(snapshot(&concurrent).await, want, "concurrent batches diverged");
            for store in [expected, sequential, concurrent] {
                store.discard().await;
            }
        });
    });
    rt.block_on(fixture.dispose(base));
}

/// A batch stores every version and writes each post's newest; outcomes
/// come per event, in order; an invalid event fails the batch unwritten.
pub async fn a_batch_writes_each_posts_newest_and_reports_every_event(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_batch").await;
    let ms = 1_000;
    let v = |post_id, version, title: &str| event(post_id, version, EventType::PostUpdated, title, "c", "ann", ms);
    let batch = vec![
        created(1, "ann", ms),
        v(1, 3, "t3"),
        created(2, "bob", ms),
        v(1, 2, "t2"),
        v(1, 3, "t3"),
    ];
    let outcomes = store.apply_batch(&batch).await.unwrap();
    use Applied::{Applied as A, Stale as S};
    assert_eq!(outcomes, [A, A, A, A, S], "the duplicate of v3 is stale");
    let post = store.get(1).await.unwrap().unwrap();
    assert_eq!((post.version, post.title.as_str()), (3, "t3"));
    assert_eq!(store.history(1).await.unwrap().len(), 3);
    assert_eq!(store.get(2).await.unwrap().unwrap().version, 1);
    // Older and equal versions are stale; a newer one of the same batch wins.
    let outcomes = store
        .apply_batch(&[v(1, 2, "t2"), v(2, 2, "b2"), v(1, 3, "t3"), created(2, "bob", ms)])
        .await
        .unwrap();
    assert_eq!(outcomes, [S, A, S, S]);
    assert_eq!(store.get(2).await.unwrap().unwrap().title, "b2");
    assert!(store.apply_batch(&[]).await.unwrap().is_empty());
    // An invalid event fails the batch before anything is written.
    let mut bad = created(3, "cy", ms);
    bad.post = None;
    let error = store.apply_batch(&[created(4, "di", ms), bad]).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidEvent(_)));
    assert!(store.get(4).await.unwrap().is_none());
    assert!(store.version(4, 1).await.unwrap().is_none());
    fixture.dispose(store).await;
}

/// A batch of hundreds of events (more than one write command) is applied whole.
pub async fn a_batch_larger_than_one_write_command_is_applied_whole(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_batch_big").await;
    let first: Vec<PostEvent> = (1..=100).map(|id| created(id, "ann", 1_000)).collect();
    assert!(store
        .apply_batch(&first)
        .await
        .unwrap()
        .iter()
        .all(|a| *a == Applied::Applied));
    // Old posts again (stale) interleaved with new ones and updates.
    let mut second = Vec::new();
    for id in 1..=100 {
        second.push(created(id, "ann", 1_000));
        second.push(created(id + 100, "bob", 1_000));
        if id % 2 == 0 {
            second.push(event(id, 2, EventType::PostUpdated, "t2", "c2", "ann", 1_000));
        }
    }
    let outcomes = store.apply_batch(&second).await.unwrap();
    for (event, outcome) in second.iter().zip(&outcomes) {
        let want = if event.post_id > 100 || event.version == 2 {
            Applied::Applied
        } else {
            Applied::Stale
        };
        assert_eq!(*outcome, want, "{} v{}", event.post_id, event.version);
    }
    let posts = store.all_posts().await.unwrap();
    assert_eq!(posts.len(), 200);
    assert!(posts
        .iter()
        .all(|p| p.version == if p.post_id <= 100 && p.post_id % 2 == 0 { 2 } else { 1 }));
    assert_eq!(store.all_versions().await.unwrap().len(), 250);
    fixture.dispose(store).await;
}

/// Duplicates and older versions are stale; history keeps every version.
pub async fn duplicates_and_older_versions_are_stale(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_stale").await;
    let v1 = created(1, "ann", 1_000);
    let v2 = event(1, 2, EventType::PostUpdated, "new", "body", "ann", 1_000);
    assert_eq!(store.apply(&v1).await.unwrap(), Applied::Applied);
    assert_eq!(store.apply(&v2).await.unwrap(), Applied::Applied);
    assert_eq!(store.apply(&v2).await.unwrap(), Applied::Stale);
    assert_eq!(store.apply(&v1).await.unwrap(), Applied::Stale);
    let post = store.get(1).await.unwrap().unwrap();
    assert_eq!((post.version, post.title.as_str()), (2, "new"));
    // updated_at is the event's time (created + 1 s), not the time of applying.
    assert_eq!(post.updated_at.unwrap().seconds, 2);
    assert_eq!(post.created_at.unwrap().seconds, 1);
    let history = store.history(1).await.unwrap();
    assert_eq!(history.iter().map(|v| v.post.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(history[0].event_type, EventType::PostCreated);
    fixture.dispose(store).await;
}

/// A newer version applied first wins over older ones arriving later.
pub async fn a_newer_version_applied_first_wins(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_reorder").await;
    let v1 = created(5, "ann", 1_000);
    let v3 = event(5, 3, EventType::PostDeleted, "t3", "c3", "ann", 1_000);
    let v2 = event(5, 2, EventType::PostUpdated, "t2", "c2", "ann", 1_000);
    assert_eq!(store.apply(&v3).await.unwrap(), Applied::Applied);
    assert_eq!(store.apply(&v1).await.unwrap(), Applied::Stale);
    assert_eq!(store.apply(&v2).await.unwrap(), Applied::Stale);
    let post = store.get(5).await.unwrap().unwrap();
    assert_eq!(post.version, 3);
    assert!(post.deleted);
    assert_eq!(store.history(5).await.unwrap().len(), 3);
    let v2_doc = store.version(5, 2).await.unwrap().unwrap();
    assert_eq!(v2_doc.post.title, "t2");
    assert_eq!(v2_doc.event_type, EventType::PostUpdated);
    fixture.dispose(store).await;
}

/// An invalid event is refused, and the refusal is not an outage.
pub async fn invalid_events_are_not_outages(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_invalid").await;
    let mut bad = created(1, "ann", 1_000);
    bad.post = None;
    let error = store.apply(&bad).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidEvent(_)));
    assert!(!error.is_unavailable());
    fixture.dispose(store).await;
}

/// Ensuring the schema again changes nothing (the relay does it at every start).
pub async fn ensure_schema_is_idempotent(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_schema").await;
    store.apply(&created(1, "ann", 1_000)).await.unwrap();
    store.ensure_schema().await.unwrap();
    store.ensure_schema().await.unwrap();
    assert_eq!(store.apply(&created(1, "ann", 1_000)).await.unwrap(), Applied::Stale);
    assert_eq!(store.all_posts().await.unwrap().len(), 1);
    fixture.dispose(store).await;
}

/// Swapping in a staging store replaces the live records with its own, with
/// their unique indexes; an empty staging store swaps in an empty model.
pub async fn swap_in_replaces_the_model_with_its_indexes(fixture: &impl Fixture) {
    let live = fixture.fresh("qs_swap").await;
    live.apply(&created(1, "old", 1_000)).await.unwrap();
    live.apply(&created(2, "old", 2_000)).await.unwrap();
    let fresh = live.staging("rebuild");
    fresh.ensure_schema().await.unwrap();
    fresh.apply(&created(3, "new", 3_000)).await.unwrap();
    live.swap_in(&fresh).await.unwrap();

    let posts = live.all_posts().await.unwrap();
    assert_eq!(posts.iter().map(|p| p.post_id).collect::<Vec<_>>(), vec![3]);
    assert_eq!(live.all_versions().await.unwrap().len(), 1);
    // The staging store is empty, and the swapped-in records keep their
    // unique index: re-applying is still Stale, not a second document.
    assert!(fresh.all_posts().await.unwrap().is_empty());
    assert_eq!(live.apply(&created(3, "new", 3_000)).await.unwrap(), Applied::Stale);
    assert_eq!(live.all_posts().await.unwrap().len(), 1);

    // An empty rebuild swaps in empty collections.
    let empty = live.staging("empty");
    live.swap_in(&empty).await.unwrap();
    assert!(live.all_posts().await.unwrap().is_empty());
    fixture.dispose(live).await;
}

/// Title filters match literal text, case-insensitively: no operator or
/// pattern injection.
pub async fn list_matches_literal_text_only(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_literal").await;
    let titles = [
        "plain",
        "has $where inside",
        "dot.star .* here",
        "json {\"$gt\": \"\"} x",
        "a|b pipe",
        "ab",
        "A",
        "nul\0byte",
    ];
    for (i, title) in titles.iter().enumerate() {
        let id = i as i64 + 1;
        store
            .apply(&event(id, 1, EventType::PostCreated, title, "c", "ann", 1_000 * id))
            .await
            .unwrap();
    }
    let search = |text: &str| {
        let filter = ListFilter {
            title: text.to_owned(),
            ..ListFilter::default()
        };
        let store = store.clone();
        async move {
            let posts = store.list(&filter, None, 100).await.unwrap();
            posts.into_iter().map(|p| p.title).collect::<Vec<_>>()
        }
    };
    assert_eq!(search("$where").await, vec!["has $where inside"]);
    assert_eq!(search(".*").await, vec!["dot.star .* here"]);
    assert_eq!(search("{\"$gt\": \"\"}").await, vec!["json {\"$gt\": \"\"} x"]);
    assert_eq!(search("a|b").await, vec!["a|b pipe"]);
    assert_eq!(search("\0").await, vec!["nul\0byte"]);
    // Case-insensitive substring: "A" is in "A", "ab", "a|b pipe", "plain", "has $where inside", "dot.star .* here".
    assert_eq!(search("A").await.len(), 6);
    fixture.dispose(store).await;
}

/// Pages come newest first (ties: higher id first) and continue strictly
/// after a position.
pub async fn list_pages_newest_first_by_keyset(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_keyset").await;
    // Two posts share a created_at: the higher id comes first.
    for (id, ms) in [(1, 1_000), (2, 2_000), (3, 2_000), (4, 3_000)] {
        store.apply(&created(id, "ann", ms)).await.unwrap();
    }
    let filter = ListFilter::default();
    let first = store.list(&filter, None, 2).await.unwrap();
    assert_eq!(first.iter().map(|p| p.post_id).collect::<Vec<_>>(), vec![4, 3]);
    let last = first.last().unwrap();
    let after = Position {
        created_at_ms: timestamp_to_millis(last.created_at.as_ref().unwrap()),
        post_id: last.post_id,
    };
    let second = store.list(&filter, Some(&after), 2).await.unwrap();
    assert_eq!(second.iter().map(|p| p.post_id).collect::<Vec<_>>(), vec![2, 1]);
    fixture.dispose(store).await;
}

/// A store that cannot be reached says so within its timeout, as an outage.
pub async fn an_unreachable_server_is_unavailable_quickly(fixture: &impl Fixture) {
    let store = fixture.unreachable(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let error = store.ping().await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let error = store.apply(&created(1, "ann", 1_000)).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
}

/// `event` at log position `position`.
fn at(position: i64, mut event: PostEvent) -> PostEvent {
    event.position = position;
    event
}

/// Every version keeps its event's position, and `count_positions` counts
/// the stored versions of a range of positions, duplicates once.
pub async fn positions_are_stored_and_counted(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_positions").await;
    let v = |post_id, version| event(post_id, version, EventType::PostUpdated, "t", "c", "ann", 1_000);
    // Positions 1..=6, all but 4 (post 2's update) applied, 5 twice.
    let applied = [
        at(1, created(1, "ann", 1_000)),
        at(2, created(2, "bob", 1_000)),
        at(3, v(1, 2)),
        at(5, v(1, 3)),
        at(6, created(3, "cy", 1_000)),
        at(5, v(1, 3)),
    ];
    store.apply_batch(&applied).await.unwrap();
    assert_eq!(store.count_positions(0, 6).await.unwrap(), 5);
    assert_eq!(store.count_positions(3, 6).await.unwrap(), 2);
    assert_eq!(store.count_positions(0, 3).await.unwrap(), 3);
    assert_eq!(store.count_positions(6, 10).await.unwrap(), 0);
    assert_eq!(store.count_positions(6, 6).await.unwrap(), 0);
    assert_eq!(store.version(1, 3).await.unwrap().unwrap().position, 5);
    let history = store.history(1).await.unwrap();
    assert_eq!(history.iter().map(|v| v.position).collect::<Vec<_>>(), [1, 3, 5]);
    // The missing one arrives: the range is complete.
    store.apply(&at(4, v(2, 2))).await.unwrap();
    assert_eq!(store.count_positions(0, 6).await.unwrap(), 6);
    assert!(store.all_versions().await.unwrap().iter().all(|v| v.position > 0));
    fixture.dispose(store).await;
}

/// The checkpoint starts at 0 and moves only by compare-and-set; a staging
/// store has its own, and a swap brings the staged one in.
pub async fn the_checkpoint_moves_by_compare_and_set_and_swaps_with_the_model(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_checkpoint").await;
    assert_eq!(store.checkpoint().await.unwrap(), 0);
    assert!(!store.advance_checkpoint(5, 10).await.unwrap(), "not at 5");
    assert!(store.advance_checkpoint(0, 10).await.unwrap());
    assert_eq!(store.checkpoint().await.unwrap(), 10);
    assert!(!store.advance_checkpoint(0, 20).await.unwrap(), "no longer at 0");
    assert!(store.advance_checkpoint(10, 20).await.unwrap());
    assert_eq!(store.checkpoint().await.unwrap(), 20);
    // Two writers from the same position: one wins.
    let (a, b) = tokio::join!(store.advance_checkpoint(20, 30), store.advance_checkpoint(20, 31));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a || b, "one of two racing advances wins");
    let now = store.checkpoint().await.unwrap();
    assert!(now == 30 || now == 31, "{now}");
    // Ensuring the schema keeps it.
    store.ensure_schema().await.unwrap();
    assert_eq!(store.checkpoint().await.unwrap(), now);

    let staged = store.staging("ckpt");
    staged.ensure_schema().await.unwrap();
    assert_eq!(staged.checkpoint().await.unwrap(), 0, "a staging store has its own");
    staged.apply(&at(1, created(1, "ann", 1_000))).await.unwrap();
    assert!(staged.advance_checkpoint(0, 7).await.unwrap());
    assert_eq!(store.checkpoint().await.unwrap(), now);
    store.swap_in(&staged).await.unwrap();
    assert_eq!(
        store.checkpoint().await.unwrap(),
        7,
        "the swapped-in model carries its checkpoint"
    );
    assert_eq!(store.count_positions(0, 1).await.unwrap(), 1);
    fixture.dispose(store).await;
}

/// A lease is held by one owner, renewed by it, and free for another once
/// it has expired.
pub async fn a_lease_has_one_owner_until_it_expires(fixture: &impl Fixture) {
    let store = fixture.fresh("qs_lease").await;
    let ttl = Duration::from_millis(600);
    assert!(store.try_lease("catch-up", "a", ttl).await.unwrap());
    assert!(!store.try_lease("catch-up", "b", ttl).await.unwrap(), "held by a");
    assert!(store.try_lease("catch-up", "a", ttl).await.unwrap(), "a renews");
    assert!(store.try_lease("other", "b", ttl).await.unwrap(), "leases are by name");
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert!(
        store.try_lease("catch-up", "b", ttl).await.unwrap(),
        "expired: b takes it"
    );
    assert!(!store.try_lease("catch-up", "a", ttl).await.unwrap(), "now held by b");
    // Racing owners of a free lease: at least one holds it afterwards, and
    // then only that one renews.
    let (x, y) = tokio::join!(
        store.try_lease("race", "x", Duration::from_secs(30)),
        store.try_lease("race", "y", Duration::from_secs(30))
    );
    assert!(x.unwrap() || y.unwrap());
    let x = store.try_lease("race", "x", Duration::from_secs(30)).await.unwrap();
    let y = store.try_lease("race", "y", Duration::from_secs(30)).await.unwrap();
    assert!(x != y, "exactly one owner renews: x {x}, y {y}");
    fixture.dispose(store).await;
}
