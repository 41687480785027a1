//! The contract every read-model store implements.

use std::{future::Future, time::Duration};

use postmesh_proto::v1::{Post, PostEvent};

use crate::{cursor::Position, Applied, ListFilter, PostVersion, StoreError};

/// What a read-model store offers: the writes event-relay applies events and
/// rebuilds with, and the reads query-svc serves. [`MongoStore`](crate::MongoStore)
/// implements it, and so does [`ReadStore`](crate::ReadStore), the one type
/// callers hold, by handing each call to the implementation its URL chose.
///
/// The model is two sets of records: the posts (one per post, its newest
/// applied version) and the versions (one per `(post_id, version)`, for
/// history and for fanning a change out to watchers), each version with the
/// event's position in the log. Beside them, a little bookkeeping of the
/// relay's catch-up (contract C2): the checkpoint, the position through which
/// the model is known complete, kept in the model itself so a rebuilt model
/// swapped in carries its own, and leases, so one relay replica catches up at
/// a time. Every implementation
/// passes the shared suite in [`testing::suite`](crate::testing) (feature
/// `testing`), which is what "implements the contract" means; any error is a
/// [`StoreError`], whose [`is_unavailable`](StoreError::is_unavailable) tells
/// an outage (the relay pauses, query-svc answers UNAVAILABLE) from a refusal.
pub trait ReadModelStore: Clone + Send + Sync + 'static {
    /// The store's kind as OpenTelemetry names it (`db.system`): "mongodb".
    fn system(&self) -> &'static str;

    /// Creates what the writer and the reads rely on (collections or tables,
    /// indexes; the unique ones keep one record per post and per version).
    /// Idempotent; the relay runs it at start-up until it succeeds.
    fn ensure_schema(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One round trip to the store: the health checks' probe.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Applies a batch of events (of any posts, in any order, duplicates
    /// allowed) and tells, per event and in the same order, what it did.
    ///
    /// Idempotent and order-independent: whatever order, batching and however
    /// often events arrive, and however many writers apply at once, the store
    /// converges on the state in-order application gives; a post's latest
    /// version never goes back. Every version is stored for history, stale or
    /// not. An event counts as [`Applied::Applied`] once per `(post, version)`
    /// when this call moved the post past it; otherwise [`Applied::Stale`].
    /// Every event is checked first ([`VersionRecord::from_event`](crate::VersionRecord::from_event)),
    /// so an invalid one fails the batch before anything is written. An
    /// error after some writes is harmless: the caller applies the batch
    /// again.
    fn apply_batch(&self, events: &[PostEvent]) -> impl Future<Output = Result<Vec<Applied>, StoreError>> + Send;

    /// Applies one event: [`apply_batch`](Self::apply_batch) of one.
    fn apply(&self, event: &PostEvent) -> impl Future<Output = Result<Applied, StoreError>> + Send {
        async move {
            self.apply_batch(std::slice::from_ref(event))
                .await?
                .pop()
                .ok_or_else(|| StoreError::Usage("a batch of one event gave no outcome".into()))
        }
    }

    /// The latest state of a post, deleted or not.
    fn get(&self, post_id: i64) -> impl Future<Output = Result<Option<Post>, StoreError>> + Send;

    /// One stored version of a post (`None` when that version is not stored).
    fn version(
        &self,
        post_id: i64,
        version: i64,
    ) -> impl Future<Output = Result<Option<PostVersion>, StoreError>> + Send;

    /// Every stored version of a post, oldest first.
    fn history(&self, post_id: i64) -> impl Future<Output = Result<Vec<PostVersion>, StoreError>> + Send;

    /// Up to `limit` posts matching `filter`, newest first (by `created_at`,
    /// then the higher `post_id`), strictly after `after` when given: the
    /// keyset page ListPosts serves.
    fn list(
        &self,
        filter: &ListFilter,
        after: Option<&Position>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Post>, StoreError>> + Send;

    /// Every post, by id: for comparing the read model with the event store.
    fn all_posts(&self) -> impl Future<Output = Result<Vec<Post>, StoreError>> + Send;

    /// Every version of every post, by `(post_id, version)`.
    fn all_versions(&self) -> impl Future<Output = Result<Vec<PostVersion>, StoreError>> + Send;

    /// A store on the same server (or file) whose records are apart from
    /// this one's, named after `tag`: a rebuild fills one and then
    /// [`swap_in`](Self::swap_in)s it; tests use them as scratch stores.
    /// Nothing is created until it is written or its schema ensured.
    fn staging(&self, tag: &str) -> Self;

    /// Replaces this store's records with `staged`'s (a [`staging`](Self::staging)
    /// store of this one), indexes and checkpoint included, so readers never
    /// see a half-built model; `staged` is empty afterwards. Fails loudly,
    /// leaving the live model in place, rather than leave a model that is
    /// neither. Refuses (`Usage`) a
    /// store on another database or of another kind.
    fn swap_in(&self, staged: &Self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many stored version records have a position in `(after, through]`.
    /// Positions are dense (contract C1: every position up to the log's
    /// head is one committed event), so `count == through - after` proves the
    /// model holds every event of the range: one indexed count, the whole
    /// cost of the catch-up on a complete model.
    fn count_positions(&self, after: i64, through: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The checkpoint: every event at a position up to it is in the model
    /// (applied, stale, or dead-lettered by the relay). 0 when none is kept.
    fn checkpoint(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Compare-and-set of the checkpoint: moves it from `from` to `to` when it
    /// is `from` (0 stands for none kept) and tells whether it did. A false
    /// answer means another writer moved it first: read it again.
    fn advance_checkpoint(&self, from: i64, to: i64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes or renews the lease `name` for `owner` for `ttl`: true when
    /// `owner` holds it now (it was free, expired, or `owner`'s already).
    /// Times are the caller's clock: keep `ttl` well above the clock skew of
    /// the replicas. A lease is an economy, not a lock anything's correctness
    /// rests on: two holders at once only do the same idempotent work twice.
    fn try_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Drops this store's records and their schema: a failed rebuild's
    /// staging store, test clean-up. Best effort: failures are only logged,
    /// since leftovers must not fail the caller.
    fn discard(&self) -> impl Future<Output = ()> + Send;
}
