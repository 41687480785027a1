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
    /// The gate is one upsert filtered on `{post_id, version: {$lt: v}}`: it
    /// matches only an older stored version, and when nothing matches the
    /// upsert tries to insert a second document for the post, which the
    /// unique index refuses (duplicate key) exactly when an equal or newer
    /// version is stored.
    pub async fn apply(&self, event: &PostEvent) -> Result<Applied, StoreError> {
        let version = VersionDoc::from_event(event)?;
        match timed("insert into post_versions", self.versions.insert_one(&version)).await {
            Ok(_) => {}
            Err(StoreError::Mongo { ref source, .. }) if is_duplicate_key(source) => {}
            Err(other) => return Err(other),
        }
        let post = version.to_post_doc();
        // Two writers racing on a post that does not exist yet can both miss
        // the filter and both try to insert; the loser gets a duplicate key
        // even if its version is the newer one. Once that happened the
        // document exists, so a second attempt decides correctly.
        for attempt in 0..2 {
            let result = self.upsert_if_newer(&post).await;
            match result {
                Ok(_) => {
                    self.settle(post.post_id).await?;
                    return Ok(Applied::Applied);
                }
                Err(StoreError::Mongo { ref source, .. }) if is_duplicate_key(source) && attempt == 0 => continue,
                Err(StoreError::Mongo { ref source, .. }) if is_duplicate_key(source) => return Ok(Applied::Stale),
                Err(other) => return Err(other),
            }
        }
        Ok(Applied::Stale)
    }

    /// Makes sure `posts` holds the newest stored version of a post after
    /// this writer changed it.
    ///
    /// MongoDB applies a filtered update atomically, but FerretDB 1.24 reads,
    /// modifies and writes back without re-checking the filter, so two
    /// concurrent upserts of one post can leave the older version on top (a
    /// lost update). Every version document is inserted *before* its upsert,
    /// so a writer that re-reads after its own write and finds a newer version
    /// in `post_versions` re-applies it; the last writer to touch the post
    /// always performs this check after its write, hence the post converges.
    /// On MongoDB this costs two indexed reads and never loops.
    async fn settle(&self, post_id: i64) -> Result<(), StoreError> {
        for _ in 0..3 {
            let newest = timed(
                "find in post_versions",
                self.versions
                    .find_one(doc! { "post_id": post_id })
                    .sort(doc! { "version": -1 }),
            )
            .await?;
            let stored = timed("find in posts", self.posts.find_one(doc! { "post_id": post_id })).await?;
            match (newest, stored) {
                (Some(newest), Some(stored)) if stored.version < newest.version => {
                    let post = newest.to_post_doc();
                    match self.upsert_if_newer(&post).await {
                        Ok(()) => {}
                        // A newer version got there first: nothing to repair.
                        Err(StoreError::Mongo { ref source, .. }) if is_duplicate_key(source) => return Ok(()),
                        Err(other) => return Err(other),
                    }
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// The version-gated upsert; a duplicate-key error means the stored
    /// version is equal or newer (or, rarely, a racing insert; see `apply`).
    async fn upsert_if_newer(&self, post: &PostDoc) -> Result<(), StoreError> {
        let filter = doc! { "post_id": post.post_id, "version": { "$lt": post.version } };
        let update = doc! {
            "$set": to_document(post).map_err(|e| StoreError::InvalidEvent(e.to_string()))?,
        };
        timed(
            "upsert into posts",
            self.posts
                .clone_with_type::<Document>()
                .update_one(filter, update)
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
        let found = timed("find in posts", self.posts.find_one(doc! { "post_id": post_id })).await?;
        Ok(found.map(PostDoc::into_post))
    }

    /// The stored version of a post (or `None` when that version is not stored).
    pub async fn version(&self, post_id: i64, version: i64) -> Result<Option<PostVersion>, StoreError> {
        let found = timed(
            "find in post_versions",
            self.versions.find_one(doc! { "post_id": post_id, "version": version }),
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
