//! The embedded SQLite read store: [`SqliteStore`], in a file of its own
//! (never the event store's), through sqlx as sea-orm ships it.
//!
//! Tables (see [`schema`]): `posts` (one row per post, its newest applied
//! version), `post_versions` (one row per `(post_id, version)`) and
//! `fts_posts`, an FTS5 trigram index over the posts' title and content
//! that follows them through a queue (`pending_posts`, filled by triggers,
//! emptied by the [`indexer`] when the writer is idle), keyed by each
//! post's search key (`keys_posts`) so that it sorts as ListPosts does
//! (newest first, in the index's forward order).
//! ListPosts' filters become SQL in [`query`].
//!
//! Connections: the file is in WAL mode, so readers never wait for the
//! writer and query-svc reads while event-relay writes from another process.
//! Each store has one writer connection, which applies a batch as one
//! `BEGIN IMMEDIATE` transaction (the write lock up front, so the reads of
//! the gate see what the writes then change), and a small pool of readers.
//! Writers of other processes (another relay replica, a rebuild) queue on
//! SQLite's lock for up to `busy_timeout` (the connect timeout); past it the
//! batch fails as an outage and the relay retries it.
//!
//! Durability: `synchronous=NORMAL`. In WAL mode a power loss may lose the
//! last transactions committed before it (never corrupt the file); a crash
//! of the process loses nothing. The event store is the source of truth and
//! the projection's catch-up re-applies whatever tail the read model lost,
//! so the read model trades that window for not waiting on an fsync per
//! batch.

pub(crate) mod error;
mod indexer;
pub(crate) mod query;
mod schema;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use postmesh_proto::v1::{EventType, Post, PostEvent};
use sea_orm::sqlx::{
    self,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
    Row, SqlitePool,
};

use crate::{
    batch::{Gate, Plan},
    cursor::Position,
    millis_to_timestamp, timestamp_to_millis, Applied, ListFilter, PostVersion, ReadModelStore, StoreError,
    VersionRecord,
};
use error::{is_missing_table, labelled};
use indexer::Indexer;
use query::{Bind, Listing, Query, POST_COLUMNS};
use schema::Names;
pub use schema::{POSTS, POST_VERSIONS};

/// Default for how long a statement waits for another writer's lock
/// (`busy_timeout`) and a read for a free connection, before failing as an
/// outage.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound for one store operation, waiting for the writer included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections per store (each is a thread of SQLite work).
const READERS: u32 = 4;

/// Most rows in one multi-row statement. Batches are cut into statements of
/// 64 rows and a power of two for the rest, so a handful of statement shapes
/// (prepared once per connection and cached) serve every batch size.
const MAX_ROWS: usize = 64;

/// The columns of a version row, in the order `write_batch` binds and
/// [`version_from_row`] reads them.
const VERSION_COLUMNS: &str =
    "post_id, version, title, content, author_name, created_at, updated_at, deleted, event_type, position";

/// What a store and its staging stores share: one file, its connections.
#[derive(Debug)]
struct Shared {
    writer: SqlitePool,
    readers: SqlitePool,
    file: PathBuf,
}

/// The read model in a SQLite file. Cheap to clone; clones (and staging
/// stores) share the connections.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    names: Arc<Names>,
    indexer: Arc<Indexer>,
}

impl SqliteStore {
    /// A store on the file of `url` (`sqlite://path?mode=rwc` creates it and
    /// its directory) with [`DEFAULT_TIMEOUT`]. Connections open lazily, so
    /// this succeeds while the file is missing or locked; only a malformed
    /// URL fails here.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_timeout(url, DEFAULT_TIMEOUT).await
    }

    /// As [`connect`](Self::connect), waiting up to `timeout` for another
    /// writer's lock or a free reader.
    pub async fn connect_with_timeout(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::Usage(format!("bad SQLite URL {url:?}: {error}")))?;
        let file = options.get_filename().to_owned();
        if url.contains(":memory:") || file.as_os_str().is_empty() {
            return Err(StoreError::Usage(
                "an in-memory SQLite read model is private to one connection: name a file".into(),
            ));
        }
        if url.contains("mode=rwc") {
            if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                // Best effort: a failure shows as the file failing to open.
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(timeout)
            .foreign_keys(false)
            .statement_cache_capacity(256);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(OPERATION_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .acquire_timeout(timeout.max(Duration::from_millis(1)))
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Self {
            shared: Arc::new(Shared { writer, readers, file }),
            names: Arc::new(Names::live()),
            indexer: Arc::default(),
        })
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.shared.file
    }

    /// Whether [`close`](Self::close) was called.
    fn is_closed(&self) -> bool {
        self.shared.writer.is_closed()
    }

    /// Moves up to `max` queued posts (the lowest ids) into the search
    /// index, in one write transaction; returns how many it took.
    pub async fn index_search(&self, max: i64) -> Result<u64, StoreError> {
        let op = "index posts for search";
        let names = &self.names;
        timed(op, async {
            let mut tx = self.begin_write().await?;
            let bound: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT post_id FROM \"{}\" ORDER BY post_id LIMIT 1 OFFSET ?",
                names.pending
            ))
            .bind(max.max(1) - 1)
            .fetch_optional(&mut *tx)
            .await
            .map_err(labelled(op))?;
            let bound = bound.unwrap_or(i64::MAX);
            for sql in names.index_pending() {
                sqlx::query(&sql)
                    .bind(bound)
                    .execute(&mut *tx)
                    .await
                    .map_err(labelled(op))?;
            }
            // Posts of one millisecond whose ids are 2^20 apart want one key:
            // the later ones take the next free key of that millisecond.
            let unkeyed: Vec<(i64, i64)> = sqlx::query_as(&names.unkeyed())
                .bind(bound)
                .fetch_all(&mut *tx)
                .await
                .map_err(labelled(op))?;
            for (post_id, wanted) in unkeyed {
                let millisecond = wanted & !query::KEY_ID_MASK;
                let mut claimed = false;
                for step in 1..=query::KEY_ID_MASK {
                    let key = millisecond | ((wanted + step) & query::KEY_ID_MASK);
                    let done = sqlx::query(&names.claim_key())
                        .bind(post_id)
                        .bind(key)
                        .execute(&mut *tx)
                        .await
                        .map_err(labelled(op))?;
                    if done.rows_affected() == 1 {
                        claimed = true;
                        break;
                    }
                }
                if !claimed {
                    return Err(StoreError::Conflict {
                        location: names.keys.clone(),
                        reason: format!("post {post_id}: every search key of its millisecond is taken"),
                    });
                }
            }
            let mut taken = 0;
            for sql in names.index_keyed() {
                taken = sqlx::query(&sql)
                    .bind(bound)
                    .execute(&mut *tx)
                    .await
                    .map_err(labelled(op))?
                    .rows_affected();
            }
            tx.commit().await.map_err(labelled("commit"))?;
            Ok(taken)
        })
        .await
    }

    /// Merges up to about `pages` pages of the search index's segments
    /// (FTS5's `merge`, with `usermerge` 2: any level holding two); returns
    /// whether there was any to merge. Each index step adds a segment, and
    /// a search seeks every segment: unmerged after the bench's 100,000
    /// posts, a page took 13 ms; merged, 0.7 ms.
    pub async fn merge_search(&self, pages: i64) -> Result<bool, StoreError> {
        let op = "merge the search index";
        let search = &self.names.search;
        timed(op, async {
            let mut tx = self.begin_write().await?;
            let changes = "SELECT total_changes()";
            let before: i64 = sqlx::query_scalar(changes)
                .fetch_one(&mut *tx)
                .await
                .map_err(labelled(op))?;
            sqlx::query(&format!(
                "INSERT INTO \"{search}\" (\"{search}\", rank) VALUES ('merge', ?)"
            ))
            .bind(pages)
            .execute(&mut *tx)
            .await
            .map_err(labelled(op))?;
            let after: i64 = sqlx::query_scalar(changes)
                .fetch_one(&mut *tx)
                .await
                .map_err(labelled(op))?;
            tx.commit().await.map_err(labelled("commit"))?;
            // FTS5: fewer than two changes means the merge found no work.
            Ok(after - before >= 2)
        })
        .await
    }

    /// Posts queued for the search index (changed since it last took them).
    pub async fn unindexed(&self) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM \"{}\"", self.names.pending);
        let counts = self
            .read("count queued posts", &sql, Vec::new(), |row| {
                row.try_get::<i64, _>(0).map_err(labelled("count queued posts"))
            })
            .await?;
        Ok(counts.first().map_or(0, |&n| u64::try_from(n).unwrap_or(0)))
    }

    /// Indexes every queued post now and merges the index (a rebuilt model
    /// before its swap, the bench, tests).
    pub async fn settle_search(&self) -> Result<(), StoreError> {
        while self.index_search(4096).await? > 0 {}
        while self.merge_search(1000).await? {}
        Ok(())
    }

    /// Closes the connections, this store's and its clones' and staging
    /// stores' (which share them): for removing the file afterwards.
    pub async fn close(&self) {
        self.indexer.stop().await;
        self.shared.writer.close().await;
        self.shared.readers.close().await;
    }

    /// SQLite's plan for the ListPosts query of `filter` (the `detail`
    /// column of `EXPLAIN QUERY PLAN`): which indexes a page uses.
    pub async fn list_plan(
        &self,
        filter: &ListFilter,
        after: Option<&Position>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let query = query::list(&self.names, filter, after, limit);
        let sql = format!("EXPLAIN QUERY PLAN {}", query.sql);
        self.read("explain a listing", &sql, query.binds, |row| {
            row.try_get::<String, _>(3).map_err(labelled("explain a listing"))
        })
        .await
    }

    /// Runs `sql` (several statements) in one write transaction.
    async fn execute_script(&self, op: &'static str, sql: &str) -> Result<(), StoreError> {
        timed(op, async {
            let mut tx = self.begin_write().await?;
            sqlx::Executor::execute(&mut *tx, sql).await.map_err(labelled(op))?;
            tx.commit().await.map_err(labelled("commit"))
        })
        .await
    }

    /// Takes the writer connection and SQLite's write lock.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.shared
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(labelled("BEGIN IMMEDIATE"))
    }

    /// Stores the batch's versions and gates each post's newest into
    /// `posts`, in one transaction (see [`apply_batch`](ReadModelStore::apply_batch)).
    async fn write_batch(&self, records: &[VersionRecord], plan: &Plan) -> Result<Vec<Gate>, StoreError> {
        let Names { posts, versions, .. } = &*self.names;
        timed("apply a batch", async {
            let mut tx = self.begin_write().await?;
            // Each statement sent to sqlx's SQLite thread is a round trip
            // between threads, and each row it returns one more: the
            // version rows go as one script (its `?`s take the values in
            // order across its statements), the stored versions come back
            // as one JSON row, the upserts go as one script.
            let script: String = chunks(records.len())
                .into_iter()
                .map(|range| {
                    format!(
                        "INSERT INTO \"{versions}\" ({VERSION_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING;\n",
                        rows(range.len(), 10)
                    )
                })
                .collect();
            if !records.is_empty() {
                let mut statement = sqlx::query(&script);
                for record in records {
                    statement = bind_post(statement, record)
                        .bind(record.event_type.event_name())
                        .bind(record.position);
                }
                statement
                    .execute(&mut *tx)
                    .await
                    .map_err(labelled("insert into post_versions"))?;
            }
            // The versions stored before this write (the write lock is ours,
            // so nobody changes them until we commit).
            let newest: Vec<&VersionRecord> = plan.newest.iter().map(|&i| &records[i]).collect();
            let ids = serde_json::to_string(&newest.iter().map(|record| record.post_id).collect::<Vec<_>>())
                .map_err(|error| StoreError::Usage(format!("post ids as JSON: {error}")))?;
            let sql = format!(
                "SELECT json_group_array(json_array(post_id, version)) FROM \"{posts}\" \
                 WHERE post_id IN (SELECT value FROM json_each(?))"
            );
            let json: String = sqlx::query_scalar(&sql)
                .bind(ids)
                .fetch_one(&mut *tx)
                .await
                .map_err(labelled("read posts"))?;
            let stored: HashMap<i64, i64> = serde_json::from_str::<Vec<(i64, i64)>>(&json)
                .map_err(|error| StoreError::Corrupt {
                    location: posts.clone(),
                    reason: format!("stored versions read as JSON do not parse: {error}"),
                })?
                .into_iter()
                .collect();
            let newer: Vec<&VersionRecord> = newest
                .iter()
                .copied()
                .filter(|record| stored.get(&record.post_id).is_none_or(|&s| s < record.version))
                .collect();
            // One atomic statement per row: insert, or update only while
            // older. Under the write lock, with the stored versions known,
            // it writes exactly `newer` (one record per post); the gate in
            // SQL stays the final guard.
            let script: String = chunks(newer.len())
                .into_iter()
                .map(|range| {
                    format!(
                        "INSERT INTO \"{posts}\" ({POST_COLUMNS}) VALUES {} \
                         ON CONFLICT (post_id) DO UPDATE SET version = excluded.version, title = excluded.title, \
                         content = excluded.content, author_name = excluded.author_name, \
                         created_at = excluded.created_at, updated_at = excluded.updated_at, \
                         deleted = excluded.deleted WHERE excluded.version > \"{posts}\".version;\n",
                        rows(range.len(), 8)
                    )
                })
                .collect();
            if !newer.is_empty() {
                let mut statement = sqlx::query(&script);
                for &record in &newer {
                    statement = bind_post(statement, record);
                }
                statement.execute(&mut *tx).await.map_err(labelled("upsert posts"))?;
            }
            let written: HashSet<i64> = newer.iter().map(|record| record.post_id).collect();
            tx.commit().await.map_err(labelled("commit"))?;
            Ok(newest
                .iter()
                .map(|record| {
                    if written.contains(&record.post_id) {
                        Gate::Written {
                            before: stored.get(&record.post_id).copied(),
                        }
                    } else {
                        Gate::Stale
                    }
                })
                .collect())
        })
        .await
    }

    /// Runs a write; where the tables do not exist yet (a store whose
    /// schema was never ensured, a staging store after its swap), creates
    /// them and runs it again.
    async fn creating_schema<T, F: Future<Output = Result<T, StoreError>>>(
        &self,
        write: impl Fn() -> F,
    ) -> Result<T, StoreError> {
        match write().await {
            Err(error) if is_missing_table(&error) => {
                self.ensure_schema().await?;
                write().await
            }
            other => other,
        }
    }

    /// One statement on the writer connection (autocommit): its rows.
    async fn write_one(&self, op: &'static str, sql: &str, binds: &[Bind]) -> Result<Vec<SqliteRow>, StoreError> {
        self.creating_schema(|| {
            timed(op, async {
                bound(sqlx::query(sql), binds.to_vec())
                    .fetch_all(&self.shared.writer)
                    .await
                    .map_err(labelled(op))
            })
        })
        .await
    }

    /// Rows of a read on the reader pool; a missing table reads as empty.
    async fn read<T>(
        &self,
        op: &'static str,
        sql: &str,
        binds: Vec<Bind>,
        decode: impl Fn(&SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = timed(op, async {
            bound(sqlx::query(sql), binds)
                .fetch_all(&self.shared.readers)
                .await
                .map_err(labelled(op))
        })
        .await;
        match rows {
            Ok(rows) => rows.iter().map(decode).collect(),
            Err(error) if is_missing_table(&error) => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// The posts `sql` (a SELECT of [`POST_COLUMNS`]) selects, in `order`
    /// (over its output columns), read as one row: a JSON array of them.
    /// sqlx hands each row of a result from its SQLite thread to the caller
    /// separately, with its values copied one by one; a page of 20 posts in
    /// one row costs a third of that (docs/performance.md).
    async fn read_posts(
        &self,
        op: &'static str,
        sql: &str,
        binds: Vec<Bind>,
        order: &str,
    ) -> Result<Vec<Post>, StoreError> {
        let sql = as_one_row(sql, order);
        let mut rows = self.read(op, &sql, binds, |row| posts_from_json(row, 0, op)).await?;
        Ok(rows.pop().unwrap_or_default())
    }

    /// A substring page whose last millisecond goes on past it: in one read
    /// transaction (one snapshot), the walk, every indexed match of that
    /// millisecond (see [`Listing::indexed`]) and the queued posts.
    async fn list_exact(
        &self,
        listing: &Listing<'_>,
        after: Option<&Position>,
        limit: i64,
    ) -> Result<Vec<Post>, StoreError> {
        let op = "list posts";
        let page = usize::try_from(limit).unwrap_or(0);
        let listed = timed(op, async {
            let mut tx = self.shared.readers.begin().await.map_err(labelled(op))?;
            // One more than the page: the walk's order within a millisecond
            // is not ListPosts', so the page is exact (once sorted) unless its
            // last millisecond goes on past it; then all of that one is read.
            let mut rows = fetch_in(&mut tx, listing.indexed(after, None, limit.saturating_add(1))).await?;
            if page > 0 && rows.len() > page {
                let buckets = rows
                    .iter()
                    .map(|row| Ok(query::search_key(row.try_get(5).map_err(labelled(op))?, 0)))
                    .collect::<Result<Vec<i64>, StoreError>>()?;
                let cut = buckets[page];
                if buckets[page - 1] == cut {
                    let mut bucket = buckets.iter();
                    rows.retain(|_| bucket.next() != Some(&cut));
                    let range = (cut, cut | query::KEY_ID_MASK);
                    rows.extend(fetch_in(&mut tx, listing.indexed(after, Some(range), limit)).await?);
                } else {
                    rows.truncate(page);
                }
            }
            rows.extend(fetch_in(&mut tx, listing.queued(after, limit)).await?);
            tx.commit().await.map_err(labelled(op))?;
            Ok(rows)
        })
        .await;
        let rows = match listed {
            Ok(rows) => rows,
            Err(error) if is_missing_table(&error) => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut posts = rows.iter().map(post_from_row).collect::<Result<Vec<_>, _>>()?;
        sort_page(&mut posts, page);
        Ok(posts)
    }

    async fn posts_where(&self, condition: &str, binds: Vec<Bind>) -> Result<Vec<Post>, StoreError> {
        let sql = format!("SELECT {POST_COLUMNS} FROM \"{}\" {condition}", self.names.posts);
        self.read("read posts", &sql, binds, post_from_row).await
    }

    async fn versions_where(&self, condition: &str, binds: Vec<Bind>) -> Result<Vec<PostVersion>, StoreError> {
        let table = self.names.versions.clone();
        let sql = format!("SELECT {VERSION_COLUMNS} FROM \"{table}\" {condition}");
        self.read("read post_versions", &sql, binds, |row| version_from_row(row, &table))
            .await
    }
}

impl ReadModelStore for SqliteStore {
    fn system(&self) -> &'static str {
        "sqlite"
    }

    /// Creates the tables, their indexes, the search index and its triggers
    /// where missing. Idempotent.
    async fn ensure_schema(&self) -> Result<(), StoreError> {
        let op = "create the schema";
        let reindexing = timed(op, async {
            let mut tx = self.begin_write().await?;
            // A file from an earlier version: its index is keyed otherwise.
            let old: i64 = sqlx::query_scalar(&self.names.has_legacy_search())
                .fetch_one(&mut *tx)
                .await
                .map_err(labelled(op))?;
            let script = if old > 0 {
                tracing::info!(file = %self.shared.file.display(), "re-indexing the posts for search (an earlier version's index)");
                self.names.create_reindexing()
            } else {
                self.names.create()
            };
            sqlx::Executor::execute(&mut *tx, script.as_str())
                .await
                .map_err(labelled(op))?;
            tx.commit().await.map_err(labelled("commit"))?;
            Ok(old > 0)
        })
        .await?;
        if reindexing {
            Indexer::wake(self);
        }
        Ok(())
    }

    /// Reads the schema: fails when the file is missing, locked exclusively,
    /// or not a database.
    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", async {
            sqlx::query("SELECT count(*) FROM sqlite_master")
                .fetch_one(&self.shared.readers)
                .await
                .map_err(labelled("ping"))
        })
        .await?;
        Ok(())
    }

    /// Applies a batch in one write transaction:
    ///
    /// 1. every event is checked first, so an invalid one fails the batch
    ///    before anything is written;
    /// 2. every version goes into `post_versions`, insert-or-ignore, in
    ///    multi-row statements of up to 64 rows;
    /// 3. per post, its newest version of the batch is gated into `posts`:
    ///    the stored versions are read (one `IN` query per 64 posts), then
    ///    the newer ones are written by `INSERT … ON CONFLICT (post_id) DO
    ///    UPDATE … WHERE excluded.version > posts.version RETURNING post_id`,
    ///    one atomic statement per 64 posts whose RETURNING names the posts
    ///    it wrote.
    ///
    /// The transaction begins `IMMEDIATE`, holding SQLite's one write lock
    /// from the start, so the versions read in step 3 are still the stored
    /// ones when the upsert runs: whatever other writers (processes) race,
    /// each `(post, version)` counts as [`Applied::Applied`] once. A batch
    /// on a store whose tables do not exist yet creates them and writes again.
    async fn apply_batch(&self, events: &[PostEvent]) -> Result<Vec<Applied>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let records = events
            .iter()
            .map(VersionRecord::from_event)
            .collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<(i64, i64)> = records.iter().map(|r| (r.post_id, r.version)).collect();
        let plan = Plan::of(&keys);
        self.indexer.write_begins();
        let gated = self.creating_schema(|| self.write_batch(&records, &plan)).await;
        self.indexer.write_ends(records.len());
        let gated = gated?;
        Indexer::wake(self);
        Ok(plan.outcomes(&keys, &gated))
    }

    async fn get(&self, post_id: i64) -> Result<Option<Post>, StoreError> {
        Ok(self
            .posts_where("WHERE post_id = ?", vec![Bind::Int(post_id)])
            .await?
            .pop())
    }

    async fn version(&self, post_id: i64, version: i64) -> Result<Option<PostVersion>, StoreError> {
        Ok(self
            .versions_where(
                "WHERE post_id = ? AND version = ?",
                vec![Bind::Int(post_id), Bind::Int(version)],
            )
            .await?
            .pop())
    }

    async fn history(&self, post_id: i64) -> Result<Vec<PostVersion>, StoreError> {
        self.versions_where("WHERE post_id = ? ORDER BY version", vec![Bind::Int(post_id)])
            .await
    }

    /// One statement. For a substring through the search index, one that
    /// reads the indexed posts in key order up to one more than the page's
    /// size and the posts queued for the index tested by their text; the
    /// page is the newest `limit` of both in ListPosts' order. When the
    /// page's last millisecond goes on past it, [`Self::list_exact`].
    async fn list(&self, filter: &ListFilter, after: Option<&Position>, limit: i64) -> Result<Vec<Post>, StoreError> {
        let listing = Listing::new(&self.names, filter);
        if !listing.searches() {
            let query = listing.page(after, limit);
            return self.read_posts("list posts", &query.sql, query.binds, PAGE_ORDER).await;
        }
        let op = "list posts";
        let page = usize::try_from(limit).unwrap_or(0);
        // The walk (one more than the page: its order within a millisecond
        // is not ListPosts') and the queued posts in one statement: one
        // snapshot without a transaction's two round trips, each read as
        // one JSON row.
        let walk = listing.indexed(after, None, limit.saturating_add(1));
        let queued = listing.queued(after, limit);
        let sql = format!(
            "SELECT ({}), ({})",
            as_one_row(&walk.sql, WALK_ORDER),
            as_one_row(&queued.sql, PAGE_ORDER)
        );
        let binds = walk.binds.into_iter().chain(queued.binds).collect();
        let read = self
            .read(op, &sql, binds, |row| {
                Ok((posts_from_json(row, 0, op)?, posts_from_json(row, 1, op)?))
            })
            .await?;
        let Some((mut posts, queued)) = read.into_iter().next() else {
            return Ok(Vec::new());
        };
        if page > 0 && posts.len() > page {
            let bucket = |post: &Post| query::search_key(post.created_at.as_ref().map_or(0, timestamp_to_millis), 0);
            if bucket(&posts[page - 1]) == bucket(&posts[page]) {
                return self.list_exact(&listing, after, limit).await;
            }
            posts.truncate(page);
        }
        posts.extend(queued);
        sort_page(&mut posts, page);
        Ok(posts)
    }

    async fn all_posts(&self) -> Result<Vec<Post>, StoreError> {
        self.posts_where("ORDER BY post_id", Vec::new()).await
    }

    async fn all_versions(&self) -> Result<Vec<PostVersion>, StoreError> {
        self.versions_where("ORDER BY post_id, version", Vec::new()).await
    }

    /// One count over the `(position, …)` index of `post_versions`.
    async fn count_positions(&self, after: i64, through: i64) -> Result<u64, StoreError> {
        if through <= after {
            return Ok(0);
        }
        let sql = format!(
            "SELECT count(*) FROM \"{}\" WHERE position > ? AND position <= ?",
            self.names.versions
        );
        let counts = self
            .read(
                "count post_versions",
                &sql,
                vec![Bind::Int(after), Bind::Int(through)],
                |row| row.try_get::<i64, _>(0).map_err(labelled("count post_versions")),
            )
            .await?;
        Ok(counts.first().map_or(0, |&n| u64::try_from(n).unwrap_or(0)))
    }

    /// The `checkpoint` row of the meta table (0 when there is none).
    async fn checkpoint(&self) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT position FROM \"{}\" WHERE key = '{CHECKPOINT}'",
            self.names.meta
        );
        let found = self
            .read("read the checkpoint", &sql, Vec::new(), |row| {
                row.try_get::<Option<i64>, _>(0)
                    .map_err(labelled("read the checkpoint"))
            })
            .await?;
        Ok(found.into_iter().flatten().next().unwrap_or(0))
    }

    /// One statement on the writer: an update filtered on the old position,
    /// or, from 0 (none kept), an insert that only overwrites a 0.
    async fn advance_checkpoint(&self, from: i64, to: i64) -> Result<bool, StoreError> {
        let meta = &self.names.meta;
        let sql = if from == 0 {
            format!(
                "INSERT INTO \"{meta}\" (key, position) VALUES ('{CHECKPOINT}', ?) \
                 ON CONFLICT (key) DO UPDATE SET position = excluded.position \
                 WHERE coalesce(\"{meta}\".position, 0) = ? RETURNING 1"
            )
        } else {
            format!("UPDATE \"{meta}\" SET position = ? WHERE key = '{CHECKPOINT}' AND position = ? RETURNING 1")
        };
        let moved = self
            .write_one("advance the checkpoint", &sql, &[Bind::Int(to), Bind::Int(from)])
            .await?;
        Ok(!moved.is_empty())
    }

    /// One upsert of `lease:<name>` that only overwrites a lease of the same
    /// owner or an expired one; RETURNING tells whether it wrote.
    async fn try_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_millis();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let meta = &self.names.meta;
        let sql = format!(
            "INSERT INTO \"{meta}\" (key, owner, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
             WHERE \"{meta}\".owner = excluded.owner OR \"{meta}\".expires_at <= ? RETURNING 1"
        );
        let binds = [
            Bind::Text(format!("lease:{name}")),
            Bind::Text(owner.to_owned()),
            Bind::Int(until),
            Bind::Int(now),
        ];
        Ok(!self.write_one("take a lease", &sql, &binds).await?.is_empty())
    }

    /// The tables `posts_<tag>`, `post_versions_<tag>`, `fts_posts_<tag>`,
    /// `meta_posts_<tag>`, `pending_posts_<tag>` and `keys_posts_<tag>` of
    /// the same file.
    fn staging(&self, tag: &str) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            names: Arc::new(self.names.staging(tag)),
            indexer: Arc::default(),
        }
    }

    /// Replaces this store's tables with `staged`'s in one transaction: the
    /// live tables are dropped and the staged ones renamed into place, their
    /// indexes and checkpoint with them, and the search triggers recreated
    /// under the live names. Readers see the old model or the new one, never neither, and
    /// a failure (or a crash) anywhere leaves the old one.
    async fn swap_in(&self, staged: &Self) -> Result<(), StoreError> {
        if !Arc::ptr_eq(&self.shared, &staged.shared) && self.shared.file != staged.shared.file {
            return Err(StoreError::Usage(format!(
                "cannot swap in tables from {} into {}",
                staged.shared.file.display(),
                self.shared.file.display()
            )));
        }
        if staged.names == self.names {
            return Ok(());
        }
        // Creates the staged tables if the rebuild stored nothing, so the
        // renames have a source; the model goes in indexed for search.
        staged.ensure_schema().await?;
        staged.settle_search().await?;
        self.execute_script("swap in the rebuilt model", &self.names.swap_in(&staged.names))
            .await
    }

    /// Drops this store's tables. Best effort: failures are only logged.
    async fn discard(&self) {
        if let Err(error) = self.execute_script("drop the model", &self.names.drop_all()).await {
            tracing::warn!(table = %self.names.posts, %error, "could not drop the read model's tables");
        }
    }
}

/// Ranges of at most [`MAX_ROWS`] covering `0..n`: full ones, then powers of
/// two for the rest (few distinct statement shapes to prepare).
fn chunks(n: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < n {
        let rest = n - start;
        let size = if rest >= MAX_ROWS {
            MAX_ROWS
        } else {
            1 << (usize::BITS - 1 - rest.leading_zeros())
        };
        ranges.push(start..start + size);
        start += size;
    }
    ranges
}

/// `statement` with a record's [`POST_COLUMNS`] bound, in order.
fn bind_post<'q>(
    statement: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    record: &'q VersionRecord,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    statement
        .bind(record.post_id)
        .bind(record.version)
        .bind(record.title.as_str())
        .bind(record.content.as_str())
        .bind(record.author_name.as_str())
        .bind(record.created_at_ms)
        .bind(record.updated_at_ms)
        .bind(record.deleted)
}

/// `statement` with `binds` bound in order.
fn bound<'q>(
    statement: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    binds.into_iter().fold(statement, |statement, bind| match bind {
        Bind::Int(value) => statement.bind(value),
        Bind::Text(value) => statement.bind(value),
    })
}

/// `(?, …), …`: `count` rows of `width` placeholders.
fn rows(count: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; count].join(", ")
}

/// The rows of a listing's statement in a read transaction.
async fn fetch_in(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, query: Query) -> Result<Vec<SqliteRow>, StoreError> {
    bound(sqlx::query(&query.sql), query.binds)
        .fetch_all(&mut **tx)
        .await
        .map_err(labelled("list posts"))
}

/// ListPosts' order over the output columns of a page's SELECT.
const PAGE_ORDER: &str = "created_at DESC, post_id DESC";

/// The search index's order (newest key first) over the output columns of
/// [`Listing::indexed`].
const WALK_ORDER: &str = "walk_key DESC";

/// The newest `page` of `posts` in ListPosts' order.
fn sort_page(posts: &mut Vec<Post>, page: usize) {
    posts.sort_by_key(|post| std::cmp::Reverse((post.created_at.map(|t| (t.seconds, t.nanos)), post.post_id)));
    posts.truncate(page);
}

/// `sql`, a SELECT of [`POST_COLUMNS`], as a SELECT of one row and one
/// column: the JSON array of its rows' column arrays, in `order`.
fn as_one_row(sql: &str, order: &str) -> String {
    format!("SELECT json_group_array(json_array({POST_COLUMNS}) ORDER BY {order}) FROM ({sql})")
}

/// The posts of column `column` of a row of [`as_one_row`].
fn posts_from_json(row: &SqliteRow, column: usize, op: &'static str) -> Result<Vec<Post>, StoreError> {
    /// A post's columns in [`POST_COLUMNS`] order.
    type Columns = (i64, i64, String, String, String, i64, i64, i64);
    let json: &str = row.try_get(column).map_err(labelled(op))?;
    let rows: Vec<Columns> = serde_json::from_str(json).map_err(|error| StoreError::Corrupt {
        location: op.to_owned(),
        reason: format!("a page read as JSON does not parse: {error}"),
    })?;
    Ok(rows
        .into_iter()
        .map(
            |(post_id, version, title, content, author_name, created_at, updated_at, deleted)| Post {
                post_id,
                version,
                title,
                content,
                author_name,
                created_at: Some(millis_to_timestamp(created_at)),
                updated_at: Some(millis_to_timestamp(updated_at)),
                deleted: deleted != 0,
            },
        )
        .collect())
}

/// A post from a row of [`POST_COLUMNS`].
fn post_from_row(row: &SqliteRow) -> Result<Post, StoreError> {
    let decode = || -> Result<Post, sqlx::Error> {
        Ok(Post {
            post_id: row.try_get(0)?,
            version: row.try_get(1)?,
            title: row.try_get(2)?,
            content: row.try_get(3)?,
            author_name: row.try_get(4)?,
            created_at: Some(millis_to_timestamp(row.try_get(5)?)),
            updated_at: Some(millis_to_timestamp(row.try_get(6)?)),
            deleted: row.try_get(7)?,
        })
    };
    decode().map_err(labelled("read a post"))
}

/// A version from a row of [`VERSION_COLUMNS`]: a post's columns, then its
/// event type and log position.
fn version_from_row(row: &SqliteRow, table: &str) -> Result<PostVersion, StoreError> {
    let post = post_from_row(row)?;
    let event_type: String = row.try_get(8).map_err(labelled("read post_versions"))?;
    let event_type = EventType::from_event_name(&event_type).ok_or_else(|| StoreError::Corrupt {
        location: table.to_owned(),
        reason: format!(
            "post {} version {} has unknown event_type {event_type:?}",
            post.post_id, post.version
        ),
    })?;
    let position = row.try_get(9).map_err(labelled("read post_versions"))?;
    Ok(PostVersion {
        post,
        event_type,
        position,
    })
}

/// The key of the checkpoint row in the meta table.
const CHECKPOINT: &str = "checkpoint";

/// The caller's clock, in milliseconds since the epoch (leases, indexer).
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs a store call under [`OPERATION_TIMEOUT`].
async fn timed<T>(op: &'static str, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, call)
        .await
        .unwrap_or(Err(StoreError::Timeout {
            store: "SQLite",
            op,
            after: OPERATION_TIMEOUT,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_full_then_powers_of_two() {
        let sizes = |n| chunks(n).iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(64), vec![64]);
        assert_eq!(sizes(256 + 7), vec![64, 64, 64, 64, 4, 2, 1]);
        assert_eq!(chunks(100).last().map(|r| r.end), Some(100));
    }
}
