//! The MongoDB read store (FerretDB works too): [`MongoStore`].
//!
//! Two collections:
//! - `posts`: one document per post, the newest applied version
//!   (unique index on `post_id`);
//! - `post_versions`: one document per `(post_id, version)` (unique), for
//!   history reads and for fanning a change out to watchers, with the
//!   event's log `position` (indexed, for the catch-up's count);
//! - `read_model_meta`: the catch-up's checkpoint (`_id: "checkpoint"`) and
//!   leases (`_id: "lease:<name>"`), a few documents.
//!
//! The writer ([`MongoStore::apply_batch`](crate::ReadModelStore::apply_batch))
//! uses only single-document writes (several to a command), so it works the
//! same on MongoDB and on FerretDB (no transactions, no change streams).
//!
//! Every document has a string `_id` derived from its key (`"<post_id>"` in
//! `posts`, `"<post_id>:<version>"` in `post_versions`), and the writer and
//! the point reads address documents by that `_id` alone. FerretDB 1.24
//! passes only an exact `{_id: <string>}` filter down to its SQLite backend;
//! any other filter (`{post_id: 7}` included) makes FerretDB read and decode
//! every document of the collection. (FerretDB 1.24 then also misses its own
//! `_id` index in SQLite, so even `_id` lookups scan, inside SQLite: see
//! docs/performance.md.) On MongoDB `_id` is the primary index. The writer
//! works a batch at a time: `insert` commands of up to 64 version documents,
//! one point read per post, `insert` commands of up to 64 new posts, `update`
//! commands of up to 64 existing ones and, on FerretDB only, one point probe
//! per post; the reads go side by side. The `post_id` indexes stay: MongoDB
//! uses them for history and listing, and they keep one document per post.
//! ListPosts filters become query documents in [`query`].

mod document;
pub(crate) mod error;
mod query;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use mongodb::{
    bson::{doc, to_document, Bson, Document},
    options::{ClientOptions, IndexOptions},
    Client, Collection, Database, IndexModel,
};
use postmesh_proto::v1::{Post, PostEvent};

use crate::{
    batch::{Gate, Plan},
    cursor::Position,
    Applied, ListFilter, PostVersion, ReadModelStore, StoreError, VersionRecord,
};
use document::{PostDoc, VersionDoc};
use error::{
    is_duplicate_key, is_namespace_exists, is_namespace_not_found, is_not_implemented, labelled, DUPLICATE_KEY,
};

/// Default name of the latest-state collection.
pub const POSTS: &str = "posts";
/// Default name of the per-version collection.
pub const POST_VERSIONS: &str = "post_versions";
/// Default name of the collection of the checkpoint and the leases.
pub const META: &str = "read_model_meta";

/// The `_id` of the checkpoint document in the meta collection.
const CHECKPOINT_ID: &str = "checkpoint";

/// How long the driver may look for a usable server, and may take to open a
/// connection, before an operation fails: an outage surfaces in seconds, not
/// after the driver's default 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound for one store operation, on top of the driver's own timeouts,
/// so a server that accepts connections but never answers cannot hang a caller.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a read that found no posts collection mid-swap waits for it.
const SWAP_READ_WAIT: Duration = Duration::from_secs(2);

/// Where [`MongoStore::swap_by_two_renames`] keeps the live collection
/// `to` between its renames.
fn swap_old_name(to: &str) -> String {
    format!("{to}_swap_old")
}

/// Tries of the second rename of [`MongoStore::swap_by_two_renames`].
const SWAP_RENAME_TRIES: usize = 5;

/// Rounds of the version gate's read-and-write for a post before its
/// duplicate keys count as a [`StoreError::Conflict`].
const GATE_ROUNDS: usize = 3;

/// Reads of one batch (gate reads, settle probes) in flight at once: within
/// the driver's default pool of 10 connections, leaving room for others.
const READ_CONCURRENCY: usize = 8;

/// Most items in one write command; a batch beyond it takes several commands.
/// FerretDB on SQLite takes a few milliseconds per update statement, more
/// under load, so a command of 64 stays far inside its time limit (see
/// [`WRITE_ITEM_TIMEOUT`]) while still saving 63 round trips in 64.
const MAX_WRITE_ITEMS: usize = 64;

/// Time a write command may take per item, on top of [`OPERATION_TIMEOUT`]:
/// a command that is slow because it is big is not mistaken for a hung server
/// (which the relay would treat as an outage and send again, and again).
const WRITE_ITEM_TIMEOUT: Duration = Duration::from_millis(100);

/// Most bytes of items in one write command, well under the 16 MiB a command
/// document may have (a post's content alone may be 100 kB).
const MAX_WRITE_BYTES: usize = 8 * 1024 * 1024;

/// The collection names of one store (live or staging).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Names {
    posts: String,
    versions: String,
    /// The checkpoint and the leases (a few small documents).
    meta: String,
}

/// The read model on MongoDB. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct MongoStore {
    client: Client,
    database: Database,
    posts: Collection<PostDoc>,
    versions: Collection<VersionDoc>,
    meta: Collection<Document>,
    names: Arc<Names>,
    /// Whether the server is FerretDB, once known (shared by clones and by
    /// [`staging`](ReadModelStore::staging): one client, one server).
    server: Arc<tokio::sync::OnceCell<bool>>,
}

impl MongoStore {
    /// A store on `database` at `url`, with the default collection names and
    /// [`DEFAULT_CONNECT_TIMEOUT`]. The client connects lazily, so this
    /// succeeds while MongoDB is down; only a malformed URL fails here.
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        Self::connect_with_timeout(url, database, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// As [`connect`](Self::connect), with the server-selection and connect
    /// timeouts set to `timeout` unless the URL sets them itself.
    pub async fn connect_with_timeout(url: &str, database: &str, timeout: Duration) -> Result<Self, StoreError> {
        if database.is_empty() {
            return Err(StoreError::Usage("the database name is empty".into()));
        }
        // Parsing resolves SRV records for mongodb+srv:// URLs, which could hang.
        let mut options = tokio::time::timeout(timeout.max(Duration::from_secs(1)), ClientOptions::parse(url))
            .await
            .map_err(|_| StoreError::Timeout {
                store: "MongoDB",
                op: "URL resolution",
                after: timeout,
            })?
            .map_err(labelled("URL parsing"))?;
        options.server_selection_timeout.get_or_insert(timeout);
        options.connect_timeout.get_or_insert(timeout);
        // Re-check a lost server every 2 s (default 10 s) so recovery after an
        // outage is noticed quickly.
        options.heartbeat_freq.get_or_insert(Duration::from_secs(2));
        options.app_name.get_or_insert_with(|| "postmesh".to_owned());
        let client = Client::with_options(options).map_err(labelled("client set-up"))?;
        let database = client.database(database);
        Ok(Self::build(
            client,
            database,
            Names {
                posts: POSTS.to_owned(),
                versions: POST_VERSIONS.to_owned(),
                meta: META.to_owned(),
            },
            Arc::default(),
        ))
    }

    fn build(client: Client, database: Database, names: Names, server: Arc<tokio::sync::OnceCell<bool>>) -> Self {
        Self {
            server,
            posts: database.collection(&names.posts),
            versions: database.collection(&names.versions),
            meta: database.collection(&names.meta),
            names: Arc::new(names),
            client,
            database,
        }
    }

    /// The same client and database with other collection names.
    fn with_collections(&self, names: Names) -> Self {
        Self::build(
            self.client.clone(),
            self.database.clone(),
            names,
            Arc::clone(&self.server),
        )
    }

    /// The database name.
    pub fn database_name(&self) -> &str {
        self.database.name()
    }

    /// Stores the version documents (one unordered `insert`); a duplicate
    /// key means the document is stored already.
    async fn insert_versions(&self, versions: &[VersionDoc]) -> Result<(), StoreError> {
        let documents = versions
            .iter()
            .map(|version| {
                let mut document = to_document(version).map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
                document.insert("_id", version_key(version.post_id, version.version));
                Ok(document)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let failed = self
            .write_command(
                "insert into post_versions",
                "insert",
                &self.names.versions,
                "documents",
                documents,
            )
            .await?;
        failed.into_iter().try_for_each(|error| match error {
            None => Ok(()),
            Some(WriteError {
                code: DUPLICATE_KEY, ..
            }) => Ok(()),
            Some(WriteError { code, message }) => Err(StoreError::MongoWrite {
                op: "insert into post_versions",
                code,
                message,
            }),
        })
    }

    /// The version gate for each post (see [`apply_batch`](Self::apply_batch)):
    /// whether this call wrote it, and over which stored version.
    async fn gate(&self, posts: &[PostDoc]) -> Result<Vec<Gate>, StoreError> {
        let atomic = !self.is_ferretdb().await?;
        let mut gated = vec![Gate::Stale; posts.len()];
        let mut pending: Vec<usize> = (0..posts.len()).collect();
        // A duplicate key means another writer inserted the post between our
        // read and our write: read again and decide again. Three rounds settle
        // any race (the second read finds the other writer's document); a post
        // still colliding after them collides with something the `_id` read
        // cannot see (a stray document holding its `post_id`), and is an
        // error the relay dead-letters, never a silent stale.
        let mut collision = String::new();
        for _ in 0..GATE_ROUNDS {
            if pending.is_empty() {
                break;
            }
            // Collected first: a lazily mapped stream would not be Send.
            let reads: Vec<_> = pending.iter().map(|&i| self.stored_version(posts[i].post_id)).collect();
            let stored: Vec<Option<i64>> = futures::stream::iter(reads)
                .buffered(READ_CONCURRENCY)
                .try_collect()
                .await?;
            let newer: Vec<(usize, Option<i64>)> = pending
                .iter()
                .zip(stored)
                .filter(|(&i, stored)| stored.is_none_or(|s| s < posts[i].version))
                .map(|(&i, stored)| (i, stored))
                .collect();
            pending.clear();
            if newer.is_empty() {
                break;
            }
            // Posts that were absent are inserted, not upserted: the inserts of
            // one command share one write transaction on FerretDB, where every
            // update statement is a transaction of its own, and an insert can
            // never overwrite what another writer put there since our read.
            let (absent, present): (Vec<_>, Vec<_>) = newer.into_iter().partition(|(_, before)| before.is_none());
            let document_of = |i: usize| {
                let post = &posts[i];
                let mut document = to_document(post).map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
                document.insert("_id", post_key(post.post_id));
                Ok::<_, StoreError>(document)
            };
            let inserts = absent
                .iter()
                .map(|&(i, _)| document_of(i))
                .collect::<Result<Vec<_>, _>>()?;
            let updates = present
                .iter()
                .map(|&(i, _)| {
                    let key = post_key(posts[i].post_id);
                    let filter = if atomic {
                        doc! { "_id": key, "version": { "$lt": posts[i].version } }
                    } else {
                        doc! { "_id": key }
                    };
                    Ok(doc! { "q": filter, "u": document_of(i)?, "upsert": true })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let mut failed = Vec::with_capacity(posts.len());
            if !inserts.is_empty() {
                failed.extend(
                    self.write_command("insert into posts", "insert", &self.names.posts, "documents", inserts)
                        .await?,
                );
            }
            if !updates.is_empty() {
                failed.extend(
                    self.write_command("update posts", "update", &self.names.posts, "updates", updates)
                        .await?,
                );
            }
            for ((i, before), error) in absent.into_iter().chain(present).zip(failed) {
                match error {
                    None => gated[i] = Gate::Written { before },
                    Some(WriteError {
                        code: DUPLICATE_KEY,
                        message,
                    }) => {
                        collision = message;
                        pending.push(i);
                    }
                    Some(WriteError { code, message }) => {
                        return Err(StoreError::MongoWrite {
                            op: "write posts",
                            code,
                            message,
                        })
                    }
                }
            }
        }
        if let Some(&i) = pending.first() {
            return Err(StoreError::Conflict {
                location: self.names.posts.clone(),
                reason: format!(
                    "post {} version {} still collides on a unique index after {GATE_ROUNDS} rounds of the \
                     version gate: {collision}",
                    posts[i].post_id, posts[i].version
                ),
            });
        }
        Ok(gated)
    }

    /// The version of a post's document in `posts`, by `_id`.
    async fn stored_version(&self, post_id: i64) -> Result<Option<i64>, StoreError> {
        let found = timed(
            "find in posts",
            self.posts
                .clone_with_type::<Document>()
                .find_one(doc! { "_id": post_key(post_id) })
                .projection(doc! { "version": 1 }),
        )
        .await?;
        found
            .map(|document| {
                document.get_i64("version").map_err(|_| StoreError::Corrupt {
                    location: self.names.posts.clone(),
                    reason: format!("post {post_id} has no integer version"),
                })
            })
            .transpose()
    }

    /// Runs an unordered write command (`insert` or `update`) over `items`,
    /// in as few commands as the server allows (normally one), and gives each
    /// item's write error, if any.
    ///
    /// FerretDB 1.24 ignores `ordered: false` for `update`: it stops at the
    /// first statement that fails (a stale gate) and answers for those up to
    /// it. Every executed item is either counted in `n` or has a write error,
    /// so an answer for fewer items than sent means the ones after the last
    /// error did not run: they are sent again, in a command of their own.
    async fn write_command(
        &self,
        op: &'static str,
        command: &str,
        collection: &str,
        field: &str,
        items: Vec<Document>,
    ) -> Result<Vec<Option<WriteError>>, StoreError> {
        let mut errors: Vec<Option<WriteError>> = vec![None; items.len()];
        for range in chunks(&items) {
            let mut start = range.start;
            while start < range.end {
                let sent = &items[start..range.end];
                let limit = OPERATION_TIMEOUT + WRITE_ITEM_TIMEOUT * u32::try_from(sent.len()).unwrap_or(u32::MAX);
                let reply = timed_within(
                    op,
                    limit,
                    self.database.run_command(doc! {
                        command: collection,
                        field: sent.to_vec(),
                        "ordered": false,
                    }),
                )
                .await?;
                if let Ok(concern) = reply.get_document("writeConcernError") {
                    return Err(StoreError::MongoWrite {
                        op,
                        code: concern.get_i32("code").unwrap_or_default(),
                        message: concern.get_str("errmsg").unwrap_or_default().to_owned(),
                    });
                }
                let failed = write_errors(&reply, op)?;
                let mut last_failed = None;
                for (index, error) in &failed {
                    if let Some(slot) = errors.get_mut(start + index).filter(|_| *index < sent.len()) {
                        *slot = Some(error.clone());
                        last_failed = last_failed.max(Some(*index));
                    }
                }
                let done = match reply.get("n") {
                    Some(Bson::Int32(n)) => usize::try_from(*n).unwrap_or_default(),
                    Some(Bson::Int64(n)) => usize::try_from(*n).unwrap_or_default(),
                    _ => 0,
                };
                if done + failed.len() >= sent.len() {
                    break;
                }
                match last_failed {
                    Some(index) => start += index + 1,
                    None => {
                        return Err(StoreError::MongoWrite {
                            op,
                            code: 0,
                            message: format!("the server answered for {done} of {} items", sent.len()),
                        })
                    }
                }
            }
        }
        Ok(errors)
    }

    /// True when the server is FerretDB (its `buildInfo` says so), asked once
    /// per client. An answer without `ferretdbVersion` is taken for MongoDB.
    async fn is_ferretdb(&self) -> Result<bool, StoreError> {
        self.server
            .get_or_try_init(|| async {
                let info = timed("buildInfo", self.database.run_command(doc! { "buildInfo": 1 })).await?;
                Ok(info.contains_key("ferretdbVersion"))
            })
            .await
            .copied()
    }

    /// [`settle`](Self::settle) for every post of a batch after its gate,
    /// several at a time (FerretDB serves reads side by side).
    async fn settle_all(&self, posts: &[PostDoc]) -> Result<(), StoreError> {
        let probes: Vec<_> = posts
            .iter()
            .map(|post| self.settle(post.post_id, post.version))
            .collect();
        futures::stream::iter(probes)
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// Makes sure `posts` holds the newest stored version of a post after
    /// this writer gated version `written` into it (or found it stale): looks
    /// for the versions after it in `post_versions` (by `_id`, one at a time,
    /// while they exist) and, if there are any, gates the newest of them into
    /// `posts`, and looks again after that.
    ///
    /// Why this converges: every write to `posts` is followed by its writer's
    /// probe from the written version up. Take the last write to a post's
    /// document, of version `w`. Any newer version's document was inserted
    /// before its writer's gate read `posts`; had that read come after the
    /// last write, it would have found `w`, older than its own, and written,
    /// after the last write. So every newer version is in `post_versions`
    /// when the last writer probes, and since versions are contiguous it finds
    /// them all and gates the newest, which would be a later write, unless one
    /// in between has not been applied yet (events on several streams can
    /// arrive out of order), in which case that version's writer finds the
    /// rest when it settles in turn. A writer whose probe never ran (an outage
    /// or a crash after its write) is covered because a failed batch is
    /// applied again, and a stale post settles as well. Without racing
    /// writers this costs one indexed read per post that finds nothing.
    async fn settle(&self, post_id: i64, written: i64) -> Result<(), StoreError> {
        let mut from = written;
        for _ in 0..8 {
            let mut newest = None;
            let mut next = from + 1;
            while let Some(found) = timed(
                "find in post_versions",
                self.versions.find_one(doc! { "_id": version_key(post_id, next) }),
            )
            .await?
            {
                newest = Some(found);
                next += 1;
            }
            let Some(newest) = newest else {
                return Ok(());
            };
            from = newest.version;
            self.gate(&[newest.to_post_doc()]).await?;
        }
        Ok(())
    }

    /// The `posts` document of a post, by `_id`.
    async fn get_doc(&self, post_id: i64) -> Result<Option<PostDoc>, StoreError> {
        let find = || timed("find in posts", self.posts.find_one(doc! { "_id": post_key(post_id) }));
        match find().await? {
            None if self.empty_read_again().await? => find().await,
            found => Ok(found),
        }
    }

    /// The posts `find` gives, read again when it gave none while a
    /// two-rename swap had no posts collection (see [`Self::empty_read_again`]).
    async fn find_posts(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<PostDoc>, StoreError> {
        let find = || async {
            let query = self.posts.find(filter.clone()).sort(sort.clone());
            let query = match limit {
                Some(limit) => query.limit(limit),
                None => query,
            };
            timed("find in posts", async {
                query.await?.try_collect::<Vec<PostDoc>>().await
            })
            .await
        };
        let docs = find().await?;
        if docs.is_empty() && self.empty_read_again().await? {
            return find().await;
        }
        Ok(docs)
    }

    /// Whether a read that found nothing should be made again: on FerretDB
    /// (MongoDB renames with `dropTarget`, so only its empty answers pay),
    /// where a read may have run during a swap's two renames (no posts
    /// collection, one a writer recreated, which the swap drops, or the live
    /// one renamed away under the read). While the swap is under way it
    /// waits for its end, at most [`SWAP_READ_WAIT`]; the read made again
    /// then sees the swapped-in collection.
    async fn empty_read_again(&self) -> Result<bool, StoreError> {
        if !self.is_ferretdb().await? {
            return Ok(false);
        }
        let old = swap_old_name(&self.names.posts);
        let mid_swap = || async {
            let names = timed("list collections", self.database.list_collection_names()).await?;
            Ok::<bool, StoreError>(names.contains(&old))
        };
        let deadline = tokio::time::Instant::now() + SWAP_READ_WAIT;
        while mid_swap().await? {
            if tokio::time::Instant::now() >= deadline {
                // A swap that stopped half way (a crashed rebuild): the next
                // rebuild drops what it left.
                tracing::warn!(collection = %old, "a swap of the posts collection has not finished; reading anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(true)
    }

    async fn rename(&self, from: &str, to: &str, drop_target: bool) -> Result<(), StoreError> {
        let db = self.database.name();
        let mut command = doc! {
            "renameCollection": format!("{db}.{from}"),
            "to": format!("{db}.{to}"),
        };
        // Sent only when wanted: false is the default, and the fallback path
        // must not carry an option the server just refused.
        if drop_target {
            command.insert("dropTarget", true);
        }
        timed("renameCollection", self.client.database("admin").run_command(command)).await?;
        Ok(())
    }

    /// Swaps `from` in as `to` where `renameCollection` cannot drop its
    /// target (FerretDB 1.24): renames `to` aside to `<to>_swap_old`, renames
    /// `from` into place, drops the old one. Between those two renames (one
    /// round trip) `to` is absent: a reader finds nothing, and a writer (the
    /// live relay) recreates it, which makes the second rename fail. What such
    /// a writer put there is an event the fresh model holds already or one
    /// above its checkpoint, which the catch-up applies again: so the
    /// recreated collection is dropped and the rename tried again. If it
    /// still fails, the old collection is renamed back and the error
    /// returned: the live model stays as it was, never near-empty. If the
    /// process dies in between, the old data survives as `<to>_swap_old` and
    /// the fresh collection keeps its name, so running the rebuild again
    /// completes the swap.
    async fn swap_by_two_renames(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let old = swap_old_name(to);
        self.drop_if_exists(&old).await?;
        match self.rename(to, &old, false).await {
            Ok(()) => {}
            Err(StoreError::Mongo { ref source, .. }) if is_namespace_not_found(source) => {}
            Err(other) => return Err(other),
        }
        let mut last = None;
        for attempt in 1..=SWAP_RENAME_TRIES {
            match self.rename(from, to, false).await {
                Ok(()) => {
                    self.drop_if_exists(&old).await?;
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(%from, %to, attempt, %error, "renaming the fresh collection into place failed; \
                        dropping what a writer recreated and trying again");
                    last = Some(error);
                    self.drop_if_exists(to).await?;
                }
            }
        }
        // Roll back: the live collection returns under its name.
        self.drop_if_exists(to).await?;
        if let Err(error) = self.rename(&old, to, false).await {
            tracing::error!(%old, %to, %error, "rolling the swap back failed: the live data is in {old}");
            return Err(error);
        }
        Err(last.unwrap_or_else(|| StoreError::Usage(format!("could not swap {from} in as {to}"))))
    }

    async fn drop_if_exists(&self, collection: &str) -> Result<(), StoreError> {
        match timed("drop", self.database.collection::<Document>(collection).drop()).await {
            Ok(()) => Ok(()),
            Err(StoreError::Mongo { ref source, .. }) if is_namespace_not_found(source) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn versions_matching(&self, filter: Document) -> Result<Vec<PostVersion>, StoreError> {
        let query = self.versions.find(filter).sort(doc! { "post_id": 1, "version": 1 });
        let docs: Vec<VersionDoc> = timed("find in post_versions", async { query.await?.try_collect().await }).await?;
        docs.into_iter()
            .map(|doc| doc.into_version(&self.names.versions))
            .collect()
    }
}

impl ReadModelStore for MongoStore {
    fn system(&self) -> &'static str {
        "mongodb"
    }

    /// Creates the indexes the writer and the reads rely on (MongoDB creates
    /// a collection with its first index). Idempotent.
    async fn ensure_schema(&self) -> Result<(), StoreError> {
        let unique = |name: &str| IndexOptions::builder().unique(true).name(name.to_owned()).build();
        let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
        let posts = vec![
            // The writer's version gate depends on this being unique.
            IndexModel::builder()
                .keys(doc! { "post_id": 1 })
                .options(unique("post_id_unique"))
                .build(),
            // ListPosts: newest first with a keyset cursor.
            IndexModel::builder()
                .keys(doc! { "created_at": -1, "post_id": -1 })
                .options(named("created_at_post_id"))
                .build(),
        ];
        let versions = vec![
            IndexModel::builder()
                .keys(doc! { "post_id": 1, "version": 1 })
                .options(unique("post_id_version_unique"))
                .build(),
            // The catch-up's count of a range of positions.
            IndexModel::builder()
                .keys(doc! { "position": 1 })
                .options(named("position"))
                .build(),
        ];
        // One index per command: FerretDB 1.24 panics (and drops the
        // connection) when one createIndexes names several indexes that all
        // exist already, which is exactly the idempotent re-run.
        for index in posts {
            timed("createIndexes", self.posts.create_index(index)).await?;
        }
        for index in versions {
            timed("createIndexes", self.versions.create_index(index)).await?;
        }
        // The meta collection needs no index but must exist, so a swap has
        // something to rename.
        match timed("create", self.database.create_collection(&self.names.meta)).await {
            Ok(()) => Ok(()),
            Err(StoreError::Mongo { ref source, .. }) if is_namespace_exists(source) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// One round trip to the server.
    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.database.run_command(doc! { "ping": 1 })).await?;
        Ok(())
    }

    /// Applies a batch of events (of any posts, in any order, duplicates
    /// allowed) and tells, per event and in the same order, what it did.
    ///
    /// 1. Every event is checked first, so an invalid one fails the batch
    ///    before anything is written ([`StoreError::InvalidEvent`]).
    /// 2. Unordered `insert`s (64 documents each) store every version
    ///    document in `post_versions` (a duplicate key: stored already).
    /// 3. The gate, per post, for its newest version of the batch only (the
    ///    older ones are in `post_versions`, for history and watchers): read
    ///    the stored version by `_id` (the posts' reads side by side), then
    ///    unordered `insert`s (64 documents each) of the posts that were
    ///    absent, and unordered `update`s (64 statements each) that replace,
    ///    with `upsert: true`, the document of every post whose stored
    ///    version is older. A duplicate key in either means another writer
    ///    inserted the post after our read: read and decide again (three
    ///    times at most).
    /// 4. On FerretDB, [`settle`](Self::settle) every post of the batch, the
    ///    probes side by side.
    ///
    /// So a batch costs two or three write commands per 64 events, one read per post
    /// and, on FerretDB, one probe per post, instead of four round trips per
    /// event.
    ///
    /// The filter of the gate's update is `{_id}` alone on FerretDB, the only
    /// filter FerretDB 1.24 passes to SQLite (with `version: {$lt: v}` added
    /// it decodes the whole collection for every statement). On MongoDB it is
    /// `{_id, version: {$lt: v}}`: MongoDB evaluates the filter and writes
    /// atomically per document, so a post's version in `posts` never goes
    /// back, whatever replicas race, and a stored newer version makes the
    /// upsert's insert collide on `_id` (E11000), which the re-read then
    /// finds stale. The newest version of a post is the newest of whatever
    /// batch carries it, so its gate writes it or finds it written: MongoDB
    /// converges without `settle`, which is skipped there. FerretDB reads and
    /// writes in two steps, so two writers of one post at once can leave the
    /// older version on top; `settle` repairs that (see there).
    ///
    /// An event counts as [`Applied::Applied`] when its post was written by
    /// this call and the event is newer than the version read before the
    /// write (older versions of the batch included: the post moved past them
    /// in this write), once per `(post, version)`; otherwise as
    /// [`Applied::Stale`]. An error after some writes is harmless: every step
    /// is idempotent, and a retried batch settles again.
    async fn apply_batch(&self, events: &[PostEvent]) -> Result<Vec<Applied>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let versions = events
            .iter()
            .map(|event| VersionRecord::from_event(event).map(VersionDoc::from))
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_versions(&versions).await?;
        let keys: Vec<(i64, i64)> = versions.iter().map(|v| (v.post_id, v.version)).collect();
        let plan = Plan::of(&keys);
        let posts: Vec<PostDoc> = plan.newest.iter().map(|&i| versions[i].to_post_doc()).collect();
        let gated = self.gate(&posts).await?;
        if self.is_ferretdb().await? {
            // Stale posts settle too: a stale outcome may be this writer's own
            // earlier write, whose settle an outage or a crash cut short.
            self.settle_all(&posts).await?;
        }
        Ok(plan.outcomes(&keys, &gated))
    }

    /// The latest state of a post, deleted or not.
    async fn get(&self, post_id: i64) -> Result<Option<Post>, StoreError> {
        Ok(self.get_doc(post_id).await?.map(PostDoc::into_post))
    }

    /// The stored version of a post (or `None` when that version is not stored).
    async fn version(&self, post_id: i64, version: i64) -> Result<Option<PostVersion>, StoreError> {
        let found = timed(
            "find in post_versions",
            self.versions.find_one(doc! { "_id": version_key(post_id, version) }),
        )
        .await?;
        found.map(|doc| doc.into_version(&self.names.versions)).transpose()
    }

    /// Every stored version of a post, oldest first.
    async fn history(&self, post_id: i64) -> Result<Vec<PostVersion>, StoreError> {
        self.versions_matching(doc! { "post_id": post_id }).await
    }

    /// One page of posts matching `filter`, newest first, strictly after
    /// `after` when given.
    async fn list(&self, filter: &ListFilter, after: Option<&Position>, limit: i64) -> Result<Vec<Post>, StoreError> {
        let docs = self
            .find_posts(query::to_document(filter, after), query::newest_first(), Some(limit))
            .await?;
        Ok(docs.into_iter().map(PostDoc::into_post).collect())
    }

    /// Every post, by id: for comparing the read model with the event store.
    async fn all_posts(&self) -> Result<Vec<Post>, StoreError> {
        let docs = self.find_posts(Document::new(), doc! { "post_id": 1 }, None).await?;
        Ok(docs.into_iter().map(PostDoc::into_post).collect())
    }

    /// Every version of every post, by (post_id, version).
    async fn all_versions(&self) -> Result<Vec<PostVersion>, StoreError> {
        self.versions_matching(Document::new()).await
    }

    /// One `count` on the `position` index of `post_versions`. (FerretDB
    /// 1.24 decodes the collection for it: see docs/performance.md.)
    async fn count_positions(&self, after: i64, through: i64) -> Result<u64, StoreError> {
        if through <= after {
            return Ok(0);
        }
        timed(
            "count in post_versions",
            self.versions
                .count_documents(doc! { "position": { "$gt": after, "$lte": through } }),
        )
        .await
    }

    /// The `checkpoint` document of the meta collection, by `_id`.
    async fn checkpoint(&self) -> Result<i64, StoreError> {
        let found = timed("find in meta", self.meta.find_one(doc! { "_id": CHECKPOINT_ID })).await?;
        found
            .map(|document| {
                document.get_i64("position").map_err(|_| StoreError::Corrupt {
                    location: self.names.meta.clone(),
                    reason: "the checkpoint has no integer position".into(),
                })
            })
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// An update filtered on the old position (MongoDB writes a document
    /// atomically; FerretDB 1.24 reads and writes in two steps, so two
    /// writers racing there may both succeed: each moves the checkpoint to a
    /// position it found complete, so either outcome is true, and the lower
    /// one only costs a re-check). From 0, the document may be absent: an
    /// insert, whose duplicate key means another writer got there first.
    async fn advance_checkpoint(&self, from: i64, to: i64) -> Result<bool, StoreError> {
        let moved = timed(
            "update meta",
            self.meta.update_one(
                doc! { "_id": CHECKPOINT_ID, "position": from },
                doc! { "$set": { "position": to } },
            ),
        )
        .await?;
        if moved.matched_count > 0 {
            return Ok(true);
        }
        if from != 0 {
            return Ok(false);
        }
        let inserted = timed_raw(
            "insert into meta",
            self.meta.insert_one(doc! { "_id": CHECKPOINT_ID, "position": to }),
        )
        .await?;
        match inserted {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(labelled("insert into meta")(error)),
        }
    }

    /// An upsert of `lease:<name>` filtered on "mine or expired": a lease
    /// held by another owner makes the upsert's insert collide on `_id`.
    async fn try_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = mongodb::bson::DateTime::now();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let until = mongodb::bson::DateTime::from_millis(now.timestamp_millis().saturating_add(ttl_ms));
        let taken = self
            .meta
            .update_one(
                doc! {
                    "_id": format!("lease:{name}"),
                    "$or": [ { "owner": owner }, { "expires_at": { "$lte": now } } ],
                },
                doc! { "$set": { "owner": owner, "expires_at": until } },
            )
            .upsert(true);
        match timed_raw("upsert into meta", taken).await? {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(labelled("upsert into meta")(error)),
        }
    }

    /// The collections `<posts>_<tag>`, `<post_versions>_<tag>` and
    /// `<read_model_meta>_<tag>` of the same database.
    fn staging(&self, tag: &str) -> Self {
        self.with_collections(Names {
            posts: format!("{}_{tag}", self.names.posts),
            versions: format!("{}_{tag}", self.names.versions),
            meta: format!("{}_{tag}", self.names.meta),
        })
    }

    /// Replaces this store's collections with `fresh`'s (which must be in the
    /// same database), indexes and checkpoint included, so readers never see
    /// a half-built read model.
    ///
    /// `posts` goes first, then `post_versions`, then the meta collection
    /// (the checkpoint). A relay keeps writing meanwhile; what it writes
    /// between two of these swaps lands in a generation that is then
    /// replaced, and the order makes sure the catch-up notices: it counts
    /// versions, so a version record must never be present in the model
    /// without its post write. A write between the posts and the versions
    /// swaps leaves its post in the new `posts` and its version in the old
    /// `post_versions`, which goes: the version is missing, the count comes
    /// up short, and the catch-up applies the event again. Anything missing
    /// is above the fresh model's checkpoint (the rebuild's `complete_through`),
    /// which swaps in last, so the catch-up reads from there.
    ///
    /// On MongoDB each collection is swapped by one `renameCollection` with
    /// `dropTarget: true`: a reader sees the old or the new collection, never
    /// neither. FerretDB 1.24 refuses `dropTarget` (NotImplemented); see
    /// [`swap_by_two_renames`](Self::swap_by_two_renames): between its two
    /// renames there is no posts collection, and a read that finds nothing
    /// then waits for the second rename and reads again
    /// ([`empty_read_again`](Self::empty_read_again)).
    async fn swap_in(&self, fresh: &Self) -> Result<(), StoreError> {
        if fresh.database.name() != self.database.name() {
            return Err(StoreError::Usage(format!(
                "cannot swap in collections from database {:?} into {:?}",
                fresh.database.name(),
                self.database.name()
            )));
        }
        if fresh.names == self.names {
            return Ok(());
        }
        // Creates the fresh collections if the rebuild stored nothing, so the
        // renames below have a source, and guarantees the indexes travel along.
        fresh.ensure_schema().await?;
        for (from, to) in [
            (&fresh.names.posts, &self.names.posts),
            (&fresh.names.versions, &self.names.versions),
            (&fresh.names.meta, &self.names.meta),
        ] {
            match self.rename(from, to, true).await {
                Ok(()) => {}
                Err(StoreError::Mongo { ref source, .. }) if is_not_implemented(source) => {
                    self.swap_by_two_renames(from, to).await?;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// Drops the collections. Best effort: missing collections are fine
    /// and other failures are only logged.
    async fn discard(&self) {
        for name in [&self.names.posts, &self.names.versions, &self.names.meta] {
            if let Err(error) = self.drop_if_exists(name).await {
                tracing::warn!(collection = %name, %error, "could not drop collection");
            }
        }
    }
}

/// The `_id` of a post's document in `posts`.
fn post_key(post_id: i64) -> String {
    post_id.to_string()
}

/// The `_id` of one version's document in `post_versions`.
fn version_key(post_id: i64, version: i64) -> String {
    format!("{post_id}:{version}")
}

/// One item's error in a write command's reply.
#[derive(Clone, Debug)]
struct WriteError {
    code: i32,
    message: String,
}

/// Splits write-command items into ranges of at most [`MAX_WRITE_ITEMS`]
/// items and about [`MAX_WRITE_BYTES`] bytes (always at least one item).
fn chunks(items: &[Document]) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let size = mongodb::bson::to_vec(item).map(|b| b.len()).unwrap_or(MAX_WRITE_BYTES);
        if i > start && (i - start >= MAX_WRITE_ITEMS || bytes + size > MAX_WRITE_BYTES) {
            chunks.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < items.len() {
        chunks.push(start..items.len());
    }
    chunks
}

/// The `writeErrors` of a write command's reply, by item index.
fn write_errors(reply: &Document, op: &'static str) -> Result<Vec<(usize, WriteError)>, StoreError> {
    let Ok(errors) = reply.get_array("writeErrors") else {
        return Ok(Vec::new());
    };
    errors
        .iter()
        .map(|error| {
            let corrupt = || StoreError::MongoWrite {
                op,
                code: 0,
                message: format!("malformed writeErrors entry in the reply: {error}"),
            };
            let error = error.as_document().ok_or_else(corrupt)?;
            let index = match error.get("index") {
                Some(Bson::Int32(i)) => usize::try_from(*i).ok(),
                Some(Bson::Int64(i)) => usize::try_from(*i).ok(),
                _ => None,
            }
            .ok_or_else(corrupt)?;
            let code = error.get_i32("code").map_err(|_| corrupt())?;
            let message = error.get_str("errmsg").unwrap_or_default().to_owned();
            Ok((index, WriteError { code, message }))
        })
        .collect()
}

/// Runs a driver call under [`OPERATION_TIMEOUT`], labelling its errors.
async fn timed<T>(
    op: &'static str,
    call: impl std::future::IntoFuture<Output = Result<T, mongodb::error::Error>>,
) -> Result<T, StoreError> {
    timed_within(op, OPERATION_TIMEOUT, call).await
}

/// Runs a driver call under `limit`, labelling its errors.
async fn timed_within<T>(
    op: &'static str,
    limit: Duration,
    call: impl std::future::IntoFuture<Output = Result<T, mongodb::error::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call.into_future()).await {
        Ok(result) => result.map_err(labelled(op)),
        Err(_) => Err(StoreError::Timeout {
            store: "MongoDB",
            op,
            after: limit,
        }),
    }
}

/// Runs a driver call under [`OPERATION_TIMEOUT`], handing back its own
/// error for the caller to tell apart (a duplicate key that is an answer).
async fn timed_raw<T>(
    op: &'static str,
    call: impl std::future::IntoFuture<Output = Result<T, mongodb::error::Error>>,
) -> Result<Result<T, mongodb::error::Error>, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, call.into_future())
        .await
        .map_err(|_| StoreError::Timeout {
            store: "MongoDB",
            op,
            after: OPERATION_TIMEOUT,
        })
}
