//! The MongoDB read model: the writer event-relay applies events with, and
//! the reads query-svc serves from.
//!
//! Two collections:
//! - `posts`: one document per post, the newest applied version
//!   (unique index on `post_id`);
//! - `post_versions`: one document per `(post_id, version)` (unique), for
//!   history reads and for fanning a change out to watchers.
//!
//! [`ReadStore::apply`] is idempotent and order-independent: whatever order
//! and however often events arrive, the collections converge on the state
//! in-order application gives. It uses only single-document operations, so it
//! works the same on MongoDB and on FerretDB (no transactions, no change
//! streams).
//!
//! Every document has a string `_id` derived from its key (`"<post_id>"` in
//! `posts`, `"<post_id>:<version>"` in `post_versions`), and the writer and
//! the point reads address documents by that `_id` alone. FerretDB 1.24
//! passes only an exact `{_id: <string>}` filter down to its SQLite backend;
//! any other filter (`{post_id: 7}` included) makes FerretDB read and decode
//! every document of the collection. (FerretDB 1.24 then also misses its own
//! `_id` index in SQLite, so even `_id` lookups scan, inside SQLite: see
//! docs/performance.md.) On MongoDB `_id` is the primary index. An event
//! costs four round trips, each a point operation on `_id`. The `post_id`
//! indexes stay: MongoDB uses them for history and listing, and they keep one
//! document per post.

mod document;
mod error;

use std::{sync::Arc, time::Duration};

use futures::TryStreamExt;
use mongodb::{
    bson::{doc, to_document, Document},
    options::{ClientOptions, IndexOptions},
    Client, Collection, Database, IndexModel,
};
use postmesh_proto::v1::{Post, PostEvent};

pub use document::{millis_to_timestamp, timestamp_to_millis, PostVersion};
pub use error::StoreError;

use crate::{cursor::Position, filter::ListFilter};
use document::{PostDoc, VersionDoc};
use error::{is_duplicate_key, is_namespace_not_found, is_not_implemented};

/// Default name of the latest-state collection.
pub const POSTS: &str = "posts";
/// Default name of the per-version collection.
pub const POST_VERSIONS: &str = "post_versions";

/// How long the driver may look for a usable server, and may take to open a
/// connection, before an operation fails: an outage surfaces in seconds, not
/// after the driver's default 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound for one store operation, on top of the driver's own timeouts,
/// so a server that accepts connections but never answers cannot hang a caller.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`ReadStore::apply`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The event's version is now the post's latest state.
    Applied,
    /// The store already held this or a newer version; `posts` is unchanged
    /// (its version document is stored, so history stays complete).
    Stale,
}

/// Handle on the read model. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct ReadStore {
    client: Client,
    database: Database,
    posts: Collection<PostDoc>,
    versions: Collection<VersionDoc>,
    names: Arc<(String, String)>,
}

impl ReadStore {
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
                op: "URL resolution",
                after: timeout,
            })?
            .map_err(StoreError::mongo("URL parsing"))?;
        options.server_selection_timeout.get_or_insert(timeout);
        options.connect_timeout.get_or_insert(timeout);
        // Re-check a lost server every 2 s (default 10 s) so recovery after an
        // outage is noticed quickly.
        options.heartbeat_freq.get_or_insert(Duration::from_secs(2));
        options.app_name.get_or_insert_with(|| "postmesh".to_owned());
        let client = Client::with_options(options).map_err(StoreError::mongo("client set-up"))?;
        let database = client.database(database);
        Ok(Self::build(client, database, POSTS, POST_VERSIONS))
    }

    fn build(client: Client, database: Database, posts: &str, versions: &str) -> Self {
        Self {
            posts: database.collection(posts),
            versions: database.collection(versions),
            names: Arc::new((posts.to_owned(), versions.to_owned())),
            client,
            database,
        }
    }

    /// The same client and database with other collection names: per-test
    /// names, or the fresh pair a rebuild fills before [`swap_in`](Self::swap_in).
    pub fn with_collections(&self, posts: &str, versions: &str) -> Self {
        Self::build(self.client.clone(), self.database.clone(), posts, versions)
    }

    /// The database name.
    pub fn database_name(&self) -> &str {
        self.database.name()
    }

    /// The names of the `posts` and `post_versions` collections.
    pub fn collection_names(&self) -> (&str, &str) {
        (&self.names.0, &self.names.1)
    }

    /// Creates the indexes the writer and the reads rely on. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
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
        let versions = vec![IndexModel::builder()
            .keys(doc! { "post_id": 1, "version": 1 })
            .options(unique("post_id_version_unique"))
            .build()];
        // One index per command: FerretDB 1.24 panics (and drops the
        // connection) when one createIndexes names several indexes that all
        // exist already, which is exactly the idempotent re-run.
        for index in posts {
            timed("createIndexes", self.posts.create_index(index)).await?;
        }
        for index in versions {
            timed("createIndexes", self.versions.create_index(index)).await?;
        }
        Ok(())
    }

    /// Applies one event: stores its version document (a duplicate is fine)
    /// and makes it the post's latest state if it is newer than what is stored.
    ///
    /// The gate reads the post by `_id`, compares versions, and replaces the
    /// document by `_id` when the event is newer. Read and replace are two
    /// operations, so two writers of one post at once (several relay
    /// replicas) can leave the older of their versions on top; MongoDB would
    /// make a filtered update atomic, FerretDB does not even then. Every
    /// version document is inserted *before* its writer reads `posts`, and
    /// every writer re-checks after writing ([`settle`](Self::settle)), so the
    /// last writer of a post always repairs what a race left behind.
    pub async fn apply(&self, event: &PostEvent) -> Result<Applied, StoreError> {
        let version = VersionDoc::from_event(event)?;
        let mut document = to_document(&version).map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
        document.insert("_id", version_key(version.post_id, version.version));
        match timed(
            "insert into post_versions",
            self.versions.clone_with_type::<Document>().insert_one(document),
        )
        .await
        {
            Ok(_) => {}
            Err(StoreError::Mongo { ref source, .. }) if is_duplicate_key(source) => {}
            Err(other) => return Err(other),
        }
        let post = version.to_post_doc();
        // A duplicate key here means another writer inserted the post between
        // our read and our write: read again and decide again.
        for _ in 0..3 {
            let stored = self.get_doc(post.post_id).await?;
            if stored.is_some_and(|s| s.version >= post.version) {
                return Ok(Applied::Stale);
            }
            match self.replace(&post).await {
                Ok(()) => {
                    self.settle(post.post_id, post.version).await?;
                    return Ok(Applied::Applied);
                }
                Err(StoreError::Mongo { ref source, .. }) if is_duplicate_key(source) => continue,
                Err(other) => return Err(other),
            }
        }
        Ok(Applied::Stale)
    }

    /// Makes sure `posts` holds the newest stored version of a post after
    /// this writer wrote `written` into it: looks for the versions after it in
    /// `post_versions` (by `_id`, one at a time, while they exist) and, if
    /// there are any, writes the newest of them, and looks again after that.
    ///
    /// Why this converges: take the last write to a post's document, of
    /// version `w`. Any newer version's document was inserted before its
    /// writer read `posts`; had that insert come after this writer's probe,
    /// its writer would have read `w`, found its own version newer and written
    /// it, after the last write. So every newer version is in `post_versions`
    /// when the last writer probes, and since versions are contiguous it finds
    /// them all and writes the newest, unless one in between has not been
    /// applied yet (events on several streams can arrive out of order), in
    /// which case that version's writer finds the rest when it settles in
    /// turn. A writer whose version was overwritten by an older one after it
    /// wrote is covered too: the overwriter probes from its own version up.
    /// Without racing writers this costs one indexed read that finds nothing.
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
            match self.replace(&newest.to_post_doc()).await {
                Ok(()) => {}
                Err(StoreError::Mongo { ref source, .. }) if is_duplicate_key(source) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// The `posts` document of a post, by `_id`.
    async fn get_doc(&self, post_id: i64) -> Result<Option<PostDoc>, StoreError> {
        timed("find in posts", self.posts.find_one(doc! { "_id": post_key(post_id) })).await
    }

    /// Writes `post` as the post's document (by `_id`, inserting it when absent).
    async fn replace(&self, post: &PostDoc) -> Result<(), StoreError> {
        let mut document = to_document(post).map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
        let key = post_key(post.post_id);
        document.insert("_id", key.clone());
        timed(
            "replace in posts",
            self.posts
                .clone_with_type::<Document>()
                .replace_one(doc! { "_id": key }, document)
                .upsert(true),
        )
        .await?;
        Ok(())
    }

    /// One round trip to the server.
    pub async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.database.run_command(doc! { "ping": 1 })).await?;
        Ok(())
    }

    /// Replaces this store's collections with `fresh`'s (which must be in the
    /// same database), indexes included, so readers never see a half-built
    /// read model.
    ///
    /// On MongoDB each collection is swapped by one `renameCollection` with
    /// `dropTarget: true`: a reader sees the old or the new collection, never
    /// neither. FerretDB 1.24 refuses `dropTarget` (NotImplemented), so there
    /// the equivalent is: rename the live collection to `<name>_swap_old`,
    /// rename the fresh one into place, drop the old one. Between those two
    /// renames (one round trip, milliseconds) the collection is absent and a
    /// read finds nothing. If the process dies in that window, the old data
    /// survives as `<name>_swap_old` and the fresh collection keeps its name,
    /// so running the rebuild again completes the swap.
    ///
    /// `post_versions` is swapped before `posts`; for the instant between the
    /// two, a history read may come from the new generation while a
    /// latest-state read still comes from the old one.
    pub async fn swap_in(&self, fresh: &ReadStore) -> Result<(), StoreError> {
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
        fresh.ensure_indexes().await?;
        for (from, to) in [(&fresh.names.1, &self.names.1), (&fresh.names.0, &self.names.0)] {
            match self.rename(from, to, true).await {
                Ok(()) => {}
                Err(StoreError::Mongo { ref source, .. }) if is_not_implemented(source) => {
                    let old = format!("{to}_swap_old");
                    self.drop_if_exists(&old).await?;
                    match self.rename(to, &old, false).await {
                        Ok(()) => {}
                        Err(StoreError::Mongo { ref source, .. }) if is_namespace_not_found(source) => {}
                        Err(other) => return Err(other),
                    }
                    self.rename(from, to, false).await?;
                    self.drop_if_exists(&old).await?;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
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

    async fn drop_if_exists(&self, collection: &str) -> Result<(), StoreError> {
        match timed("drop", self.database.collection::<Document>(collection).drop()).await {
            Ok(()) => Ok(()),
            Err(StoreError::Mongo { ref source, .. }) if is_namespace_not_found(source) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Drops both collections, for test clean-up. Best effort: missing
    /// collections are fine and other failures are only logged, since a
    /// leftover test collection must not fail the test that made it.
    pub async fn drop_collections(&self) {
        for name in [&self.names.0, &self.names.1] {
            if let Err(error) = self.drop_if_exists(name).await {
                tracing::warn!(collection = %name, %error, "could not drop collection");
            }
        }
    }

    /// The latest state of a post, deleted or not.
    pub async fn get(&self, post_id: i64) -> Result<Option<Post>, StoreError> {
        Ok(self.get_doc(post_id).await?.map(PostDoc::into_post))
    }

    /// The stored version of a post (or `None` when that version is not stored).
    pub async fn version(&self, post_id: i64, version: i64) -> Result<Option<PostVersion>, StoreError> {
        let found = timed(
            "find in post_versions",
            self.versions.find_one(doc! { "_id": version_key(post_id, version) }),
        )
        .await?;
        found.map(|doc| doc.into_version(&self.names.1)).transpose()
    }

    /// Every stored version of a post, oldest first.
    pub async fn history(&self, post_id: i64) -> Result<Vec<PostVersion>, StoreError> {
        self.versions_matching(doc! { "post_id": post_id }).await
    }

    /// One page of posts matching `filter`, newest first, strictly after
    /// `after` when given.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&Position>,
        limit: i64,
    ) -> Result<Vec<Post>, StoreError> {
        let query = self
            .posts
            .find(filter.to_document(after))
            .sort(crate::filter::newest_first())
            .limit(limit);
        let docs: Vec<PostDoc> = timed("find in posts", async { query.await?.try_collect().await }).await?;
        Ok(docs.into_iter().map(PostDoc::into_post).collect())
    }

    /// Every post, by id: for comparing the read model with the event store.
    pub async fn all_posts(&self) -> Result<Vec<Post>, StoreError> {
        let query = self.posts.find(Document::new()).sort(doc! { "post_id": 1 });
        let docs: Vec<PostDoc> = timed("find in posts", async { query.await?.try_collect().await }).await?;
        Ok(docs.into_iter().map(PostDoc::into_post).collect())
    }

    /// Every version of every post, by (post_id, version).
    pub async fn all_versions(&self) -> Result<Vec<PostVersion>, StoreError> {
        self.versions_matching(Document::new()).await
    }

    async fn versions_matching(&self, filter: Document) -> Result<Vec<PostVersion>, StoreError> {
        let query = self.versions.find(filter).sort(doc! { "post_id": 1, "version": 1 });
        let docs: Vec<VersionDoc> = timed("find in post_versions", async { query.await?.try_collect().await }).await?;
        docs.into_iter().map(|doc| doc.into_version(&self.names.1)).collect()
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

/// Runs a driver call under [`OPERATION_TIMEOUT`], labelling its errors.
async fn timed<T>(
    op: &'static str,
    call: impl std::future::IntoFuture<Output = Result<T, mongodb::error::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, call.into_future()).await {
        Ok(result) => result.map_err(StoreError::mongo(op)),
        Err(_) => Err(StoreError::Timeout {
            op,
            after: OPERATION_TIMEOUT,
        }),
    }
}
