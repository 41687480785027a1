//! The relational event store: a [`Writer`] appends an event, its outbox row
//! and the post's new head state in one transaction; reads give the log back.
//!
//! The store stores: what a command decides, and whether its event is
//! published, are the caller's (see `crate::app`). A writer is one
//! transaction: read the heads it needs ([`Writer::head`]), append what was
//! decided ([`Writer::append`]), [`Writer::commit`].
//!
//! Positions (and new post ids) come from one counter row, `log_head`, that
//! the appending transaction updates and so holds locked until it ends: they
//! are handed out in commit order and a rollback gives them back, so the log
//! is dense and a reader that saw position p saw everything below it
//! ([`EventStore::head`], `GetHead`). The price is that appends commit one
//! after another, across replicas too; batching many commands into one
//! transaction pays it once per batch. docs/event-store.md has the details.

pub mod entities;
pub mod migration;

use std::{collections::HashMap, time::Duration};

use postmesh_proto::{
    v1::{EventType, PostEvent},
    PostId,
};
use sea_orm::{
    sea_query::OnConflict,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
    ActiveValue::Set,
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::{
    domain::{Decision, PostState},
    error::{is_retryable_conflict, is_unavailable, is_unique_violation, Error},
};
use entities::{idempotency_key, outbox, post_event, post_stream};

/// Who and what caused a command, stored with its event.
#[derive(Clone, Debug, Default)]
pub struct EventMeta {
    /// W3C traceparent.
    pub traceparent: String,
    /// W3C tracestate.
    pub tracestate: String,
    /// Token subject, or empty.
    pub actor: String,
}

/// An idempotency key with the fingerprint of the request it came with.
#[derive(Clone, Debug)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// SHA-256 (hex) of the rpc name and the request without its key.
    pub request_hash: String,
}

/// The result of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The post.
    pub post_id: PostId,
    /// Its version after the event.
    pub version: i64,
    /// The event's global position; 0 when an idempotent replay appended nothing.
    pub position: i64,
}

/// An outbox row with its event, ready to publish.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Outbox row id, deleted once published.
    pub outbox_id: i64,
    /// The event.
    pub event: PostEvent,
}

/// What one [`Writer::append`] wrote; durable once the writer commits.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The answer to the command.
    pub appended: Appended,
    /// The event, exactly as [`EventStore::read_all`] returns it, and its outbox row.
    pub pending: Pending,
}

/// Why a write did not go through.
#[derive(Debug)]
pub enum WriteError {
    /// A transient conflict: another writer moved the post on, a deadlock, a
    /// busy database. Nothing was written; decide again on fresh state.
    Conflict(String),
    /// Anything else.
    Failed(Error),
}

impl From<DbErr> for WriteError {
    fn from(error: DbErr) -> Self {
        if is_retryable_conflict(&error) || is_unique_violation(&error) {
            Self::Conflict(error.to_string())
        } else {
            Self::Failed(error.into())
        }
    }
}

impl From<Error> for WriteError {
    fn from(error: Error) -> Self {
        Self::Failed(error)
    }
}

/// Handle on the event store; cheap to clone.
#[derive(Clone, Debug)]
pub struct EventStore {
    /// Reads (and, on MySQL, writes too).
    db: DatabaseConnection,
    /// Where write transactions run. On SQLite a pool of one connection: the
    /// one writer SQLite allows, fed by the group committer (and the
    /// outbox's deletes), so writers queue in order here rather than in
    /// SQLite's busy handler. On MySQL the same pool as `db`.
    writes: DatabaseConnection,
}

/// How often a transaction is started again when its connection turns out
/// dead: the pool does not test connections before handing them out, so one
/// that died while idle (a database restart) fails the `BEGIN`, is discarded,
/// and the next one is tried. Nothing ran, so starting again is safe.
const MAX_BEGIN_RETRIES: usize = 2;

/// Prepared statements each connection keeps: a multi-row INSERT of n rows
/// is its own statement for each n, four tables of them.
const STATEMENT_CACHE: usize = 1024;

impl EventStore {
    /// Connects to `url` (sqlite:// or mysql://) with a bounded pool.
    ///
    /// SQLite runs in WAL mode (readers do not block the writer) with
    /// `synchronous=NORMAL`: a commit is written to the WAL but not fsynced;
    /// the WAL is fsynced at checkpoints. An acknowledged command survives
    /// the process crashing or being killed; an OS crash or power loss may
    /// lose the last commits (never corrupting the file). `FULL` would fsync
    /// every transaction, one fsync per batch with the group committer
    /// (docs/event-store.md has the figures).
    pub async fn connect(url: &str, pool: u32, timeout: Duration) -> Result<Self, DbErr> {
        let options = |connections: u32| {
            let mut options = ConnectOptions::new(url.to_owned());
            options
                .max_connections(connections.max(1))
                .min_connections(1)
                .connect_timeout(timeout)
                .acquire_timeout(timeout)
                // sqlx would PING every connection it hands out: one more round trip
                // per transaction. A dead connection fails its BEGIN instead, which
                // `writer` retries on another connection.
                .test_before_acquire(false)
                .sqlx_logging(false)
                .map_sqlx_mysql_opts(|options| options.statement_cache_capacity(STATEMENT_CACHE))
                .map_sqlx_sqlite_opts(move |options| {
                    options
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(timeout)
                        .statement_cache_capacity(STATEMENT_CACHE)
                });
            options
        };
        let db = Database::connect(options(pool)).await?;
        let writes = match db.get_database_backend() {
            DbBackend::Sqlite => Database::connect(options(1)).await?,
            DbBackend::MySql | DbBackend::Postgres => db.clone(),
        };
        Ok(Self { db, writes })
    }

    /// Applies pending migrations. On MySQL they run under a named lock
    /// (`GET_LOCK`) on one connection, so replicas starting together (or a
    /// migration Job racing a pod) apply them once instead of colliding: the
    /// others wait, then find nothing left to apply. The lock is named after
    /// the database (hashed: lock names are at most 64 characters), so
    /// databases sharing a server do not wait for each other. A connection
    /// that dies releases it.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        if self.db.get_database_backend() != DbBackend::MySql {
            return migration::Migrator::up(&self.writes, None).await;
        }
        let conn = self.db.begin().await?;
        let locked = conn
            .query_one(sea_orm::Statement::from_string(
                DbBackend::MySql,
                "SELECT GET_LOCK(CONCAT('postmesh_migrations.', SHA1(DATABASE())), 60)",
            ))
            .await?
            .and_then(|row| row.try_get_by_index::<Option<i64>>(0).ok().flatten())
            == Some(1);
        if !locked {
            return Err(DbErr::Migration("timed out waiting for the migration lock".into()));
        }
        let result = migration::Migrator::up(&conn, None).await;
        conn.execute_unprepared("DO RELEASE_LOCK(CONCAT('postmesh_migrations.', SHA1(DATABASE())))")
            .await?;
        conn.commit().await?;
        result
    }

    /// Transactions the group committer runs at once unless told otherwise:
    /// two on MySQL (one reads and locks while the other commits), one on
    /// SQLite (one writer).
    pub fn default_commit_pipeline(&self) -> usize {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => 1,
            DbBackend::MySql | DbBackend::Postgres => 2,
        }
    }

    /// The database kind, for logs and span attributes.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::MySql => "mysql",
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgresql",
        }
    }

    /// Checks the database answers, for health.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    /// Starts a write transaction (on SQLite, after the writers before it).
    pub async fn writer(&self) -> Result<Writer, WriteError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.writes.begin().await {
                Ok(txn) => return Ok(Writer { txn }),
                Err(error)
                    if attempt <= MAX_BEGIN_RETRIES
                        && is_unavailable(&error)
                        && !matches!(error, DbErr::ConnectionAcquire(_)) =>
                {
                    tracing::debug!(attempt, %error, "dead database connection; starting again");
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The highest position through which the log is complete (0: empty):
    /// the counter's committed value. Positions are taken from it in commit
    /// order without gaps (see the module doc), so every event at or below
    /// it is committed and readable.
    pub async fn head(&self) -> Result<i64, Error> {
        let row = self
            .db
            .query_one(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT position FROM log_head WHERE id = 1",
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get_by_index::<i64>(0)?,
            None => 0,
        })
    }

    /// Events after `from_position`, in position order, at most `limit`.
    pub async fn read_all(&self, from_position: i64, limit: u64) -> Result<Vec<PostEvent>, Error> {
        let rows = post_event::Entity::find()
            .filter(post_event::Column::Position.gt(from_position))
            .order_by_asc(post_event::Column::Position)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(to_proto).collect())
    }

    /// Events of one post in version order, at most `limit` after `after_version`.
    pub async fn read_post(&self, post_id: PostId, after_version: i64, limit: u64) -> Result<Vec<PostEvent>, Error> {
        let rows = post_event::Entity::find()
            .filter(post_event::Column::PostId.eq(post_id.get()))
            .filter(post_event::Column::Version.gt(after_version))
            .order_by_asc(post_event::Column::Version)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(to_proto).collect())
    }

    /// Outbox rows after row `after_id`, oldest first, at most `limit`.
    pub async fn outbox_rows(&self, after_id: i64, limit: u64) -> Result<Vec<outbox::Model>, Error> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Id.gt(after_id))
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// The events of outbox rows, in the rows' order.
    pub async fn outbox_events(&self, rows: Vec<outbox::Model>) -> Result<Vec<Pending>, Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let positions: Vec<i64> = rows.iter().map(|row| row.position).collect();
        let events = post_event::Entity::find()
            .filter(post_event::Column::Position.is_in(positions))
            .all(&self.db)
            .await?;
        let mut by_position: std::collections::HashMap<i64, post_event::Model> =
            events.into_iter().map(|event| (event.position, event)).collect();
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            match by_position.remove(&row.position) {
                Some(event) => pending.push(Pending {
                    outbox_id: row.id,
                    event: to_proto(event),
                }),
                None => {
                    return Err(Error::Internal(format!(
                        "outbox row {} points at missing event {}",
                        row.id, row.position
                    )))
                }
            }
        }
        Ok(pending)
    }

    /// Removes published outbox rows, at most 512 per statement.
    pub async fn outbox_remove(&self, ids: &[i64]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        for chunk in ids.chunks(512) {
            outbox::Entity::delete_many()
                .filter(outbox::Column::Id.is_in(padded(chunk)))
                .exec(&self.writes)
                .await?;
        }
        Ok(())
    }

    /// Number of unpublished events.
    pub async fn outbox_len(&self) -> Result<u64, Error> {
        Ok(outbox::Entity::find().count(&self.db).await?)
    }
}

/// One write transaction; on SQLite it holds the one writer connection until
/// it ends. Dropped without [`commit`](Self::commit), it rolls back.
#[derive(Debug)]
pub struct Writer {
    txn: DatabaseTransaction,
}

/// An idempotency key stored with the answer it was first given.
#[derive(Clone, Debug)]
pub struct StoredKey {
    /// Fingerprint of the request that first came with the key.
    pub request_hash: String,
    /// Its answer (`position` 0: a replay appends nothing).
    pub answer: Appended,
}

/// One decided command for [`Writer::append`].
#[derive(Clone, Debug)]
pub struct ToAppend {
    /// What the domain decided.
    pub decision: Decision,
    /// Who and what caused it.
    pub meta: EventMeta,
    /// The key to store with its answer.
    pub idempotency: Option<Idempotency>,
}

impl Writer {
    /// The current state of the posts `ids` (absent ones are left out). On
    /// MySQL the rows stay locked until the transaction ends, so concurrent
    /// writers to one post queue here; the rows are locked in id order, the
    /// same order in every transaction.
    pub async fn heads(&self, ids: &[PostId]) -> Result<HashMap<PostId, PostState>, WriteError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut query = post_stream::Entity::find()
            .filter(post_stream::Column::PostId.is_in(ids.iter().map(|id| id.get())))
            .order_by_asc(post_stream::Column::PostId);
        if self.txn.get_database_backend() == DbBackend::MySql {
            query = query.lock_exclusive();
        }
        let mut heads = HashMap::with_capacity(ids.len());
        for row in query.all(&self.txn).await? {
            heads.insert(
                stored_id(row.post_id)?,
                PostState {
                    version: row.version,
                    title: row.title,
                    content: row.content,
                    author_name: row.author_name,
                    deleted: row.deleted,
                    created_at_us: row.created_at_us,
                    updated_at_us: row.updated_at_us,
                },
            );
        }
        Ok(heads)
    }

    /// The stored idempotency keys among `keys`, with their first answers.
    pub async fn keys(&self, keys: &[&str]) -> Result<HashMap<String, StoredKey>, WriteError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = idempotency_key::Entity::find()
            .filter(idempotency_key::Column::IdemKey.is_in(keys.iter().copied()))
            .all(&self.txn)
            .await?;
        let mut stored = HashMap::with_capacity(rows.len());
        for row in rows {
            let answer = Appended {
                post_id: stored_id(row.post_id)?,
                version: row.version,
                position: 0,
            };
            stored.insert(
                row.idem_key,
                StoredKey {
                    request_hash: row.request_hash,
                    answer,
                },
            );
        }
        Ok(stored)
    }

    /// Writes what was decided, in order: positions (and the ids of new
    /// posts) from the counter, then each table in one multi-row statement:
    /// the posts' heads (new rows and changed ones), the idempotency keys
    /// with their answers, the events and their outbox rows. The event's time
    /// is its state's `updated_at_us`. Decisions on one post follow each
    /// other (each one's state is the previous one's plus its change); the
    /// head keeps the last. The caller checked the heads ([`Self::heads`])
    /// and the keys ([`Self::keys`]) in this transaction; UNIQUE(post_id,
    /// version) and the keys' primary key stay the final guard: a duplicate
    /// fails the whole statement, and nothing is written.
    pub async fn append(&self, batch: Vec<ToAppend>) -> Result<Vec<Recorded>, WriteError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let count = batch.len() as i64;
        let creates = batch.iter().filter(|a| a.decision.post_id.is_none()).count() as i64;
        let (last_position, last_post) = self.advance_head(count, creates).await?;
        let mut position = last_position - count;
        let mut new_post = last_post - creates;

        let mut heads: Vec<(usize, post_stream::ActiveModel)> = Vec::new();
        let mut head_of: HashMap<i64, usize> = HashMap::new();
        let mut keys = Vec::new();
        let mut events = Vec::with_capacity(batch.len());
        let mut outbox_rows = Vec::with_capacity(batch.len());
        let mut recorded = Vec::with_capacity(batch.len());
        for ToAppend {
            decision,
            meta,
            idempotency,
        } in batch
        {
            let Decision {
                post_id,
                event_type,
                state,
            } = decision;
            position += 1;
            let post_id = match post_id {
                Some(post_id) => post_id,
                None => {
                    new_post += 1;
                    stored_id(new_post)?
                }
            };
            let now_us = state.updated_at_us;
            let head = post_stream::ActiveModel {
                post_id: Set(post_id.get()),
                version: Set(state.version),
                title: Set(state.title.clone()),
                content: Set(state.content.clone()),
                author_name: Set(state.author_name.clone()),
                deleted: Set(state.deleted),
                created_at_us: Set(state.created_at_us),
                updated_at_us: Set(state.updated_at_us),
            };
            let text = state.title.len() + state.content.len() + state.author_name.len();
            match head_of.get(&post_id.get()) {
                Some(&index) => heads[index] = (text, head),
                None => {
                    head_of.insert(post_id.get(), heads.len());
                    heads.push((text, head));
                }
            }
            if let Some(idem) = idempotency {
                keys.push(idempotency_key::ActiveModel {
                    idem_key: Set(idem.key),
                    request_hash: Set(idem.request_hash),
                    post_id: Set(post_id.get()),
                    version: Set(state.version),
                    created_at_us: Set(now_us),
                });
            }
            let row = post_event::Model {
                position,
                post_id: post_id.get(),
                version: state.version,
                event_type: event_type.event_name().to_owned(),
                title: state.title,
                content: state.content,
                author_name: state.author_name,
                deleted: state.deleted,
                created_at_us: state.created_at_us,
                occurred_at_us: now_us,
                traceparent: meta.traceparent,
                tracestate: meta.tracestate,
                actor: meta.actor,
            };
            events.push((text, row.clone().into_active_model()));
            // The outbox row's id is its event's position: unique, in commit
            // order, and known before the INSERT, so one statement writes them all.
            outbox_rows.push(outbox::ActiveModel {
                id: Set(position),
                position: Set(position),
                created_at_us: Set(now_us),
            });
            recorded.push(Recorded {
                appended: Appended {
                    post_id,
                    version: row.version,
                    position,
                },
                pending: Pending {
                    outbox_id: position,
                    event: to_proto(row),
                },
            });
        }

        // New posts are inserted and changed ones overwritten in one upsert:
        // the changed rows are locked (MySQL) or this is the one writer (SQLite).
        let backend = self.txn.get_database_backend();
        let mut statements = Vec::new();
        for heads in by_bytes(heads) {
            statements.push(
                post_stream::Entity::insert_many(heads)
                    .on_conflict(
                        OnConflict::column(post_stream::Column::PostId)
                            .update_columns([
                                post_stream::Column::Version,
                                post_stream::Column::Title,
                                post_stream::Column::Content,
                                post_stream::Column::AuthorName,
                                post_stream::Column::Deleted,
                                post_stream::Column::UpdatedAtUs,
                            ])
                            .to_owned(),
                    )
                    .build(backend),
            );
        }
        if !keys.is_empty() {
            statements.push(idempotency_key::Entity::insert_many(keys).build(backend));
        }
        for events in by_bytes(events) {
            statements.push(post_event::Entity::insert_many(events).build(backend));
        }
        statements.push(outbox::Entity::insert_many(outbox_rows).build(backend));
        self.execute_all(statements).await?;
        Ok(recorded)
    }

    /// Runs `statements` in order. On SQLite as one script: each statement
    /// sent to sqlx's SQLite thread is a round trip between threads (two
    /// context switches, the committer's largest cost after SQLite itself),
    /// and its `?`s take the values in order across the statements. MySQL
    /// prepares one statement at a time.
    async fn execute_all(&self, statements: Vec<Statement>) -> Result<(), WriteError> {
        match self.txn.get_database_backend() {
            DbBackend::Sqlite => {
                let mut sql = String::new();
                let mut values = Vec::new();
                for statement in statements {
                    sql.push_str(&statement.sql);
                    sql.push_str(";\n");
                    values.extend(statement.values.map(|v| v.0).unwrap_or_default());
                }
                self.txn
                    .execute(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
                    .await?;
            }
            DbBackend::MySql | DbBackend::Postgres => {
                for statement in statements {
                    self.txn.execute(statement).await?;
                }
            }
        }
        Ok(())
    }

    /// Takes `events` positions and `posts` post ids from the counter row
    /// and returns the last of each. The row stays locked until the
    /// transaction ends (MySQL's row lock; on SQLite the one writer), so
    /// transactions take positions in the order they commit, and a rollback
    /// returns them: the log has no gaps and no position commits after a
    /// higher one is visible.
    async fn advance_head(&self, events: i64, posts: i64) -> Result<(i64, i64), WriteError> {
        const ADVANCE: &str = "UPDATE log_head SET position = position + ?, post_id = post_id + ? WHERE id = 1";
        let backend = self.txn.get_database_backend();
        let values = [events.into(), posts.into()];
        let row = match backend {
            // One round trip: SQLite (3.35+) returns the updated row.
            DbBackend::Sqlite | DbBackend::Postgres => {
                self.txn
                    .query_one(Statement::from_sql_and_values(
                        backend,
                        format!("{ADVANCE} RETURNING position, post_id"),
                        values,
                    ))
                    .await?
            }
            // MariaDB has no UPDATE ... RETURNING: read the locked row back.
            DbBackend::MySql => {
                self.txn
                    .execute(Statement::from_sql_and_values(backend, ADVANCE, values))
                    .await?;
                self.txn
                    .query_one(Statement::from_string(
                        backend,
                        "SELECT position, post_id FROM log_head WHERE id = 1",
                    ))
                    .await?
            }
        }
        .ok_or_else(|| Error::Internal("the log_head row is missing; run the migrations".into()))?;
        Ok((
            row.try_get_by_index::<i64>(0).map_err(Error::from)?,
            row.try_get_by_index::<i64>(1).map_err(Error::from)?,
        ))
    }

    /// Commits. When it fails, whether it committed is unknown.
    pub async fn commit(self) -> Result<(), Error> {
        Ok(self.txn.commit().await?)
    }
}

/// Text one multi-row statement carries at most: far below MySQL's
/// `max_allowed_packet` (16 MiB by default), however large the posts.
const STATEMENT_BYTES: usize = 4 * 1024 * 1024;

/// Rows `(bytes of text, row)` cut into runs of at most [`STATEMENT_BYTES`]
/// (a larger row alone), in order: one multi-row statement each.
fn by_bytes<T>(rows: Vec<(usize, T)>) -> Vec<Vec<T>> {
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for (size, row) in rows {
        match runs.last_mut() {
            Some(run) if bytes + size <= STATEMENT_BYTES => run.push(row),
            _ => {
                bytes = 0;
                runs.push(vec![row]);
            }
        }
        bytes += size;
    }
    runs
}

/// `ids` repeated at the end up to the next power of two: `id IN (...)` then
/// comes in a few shapes only, and each stays in the connection's prepared
/// statement cache instead of being prepared again for every batch size.
fn padded(ids: &[i64]) -> Vec<i64> {
    let mut padded = ids.to_vec();
    if let Some(&last) = ids.last() {
        padded.resize(ids.len().next_power_of_two(), last);
    }
    padded
}

/// A post id read back from the event store, where ids start at 1.
fn stored_id(id: i64) -> Result<PostId, Error> {
    PostId::new(id).map_err(|_| Error::Internal(format!("the event store holds post id {id}")))
}

/// Microseconds since the epoch to a protobuf timestamp.
pub fn timestamp(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

fn to_proto(row: post_event::Model) -> PostEvent {
    let event_type = EventType::from_event_name(&row.event_type).unwrap_or(EventType::Unspecified);
    PostEvent {
        position: row.position,
        post_id: row.post_id,
        version: row.version,
        event_type: event_type as i32,
        post: Some(postmesh_proto::v1::Post {
            post_id: row.post_id,
            version: row.version,
            title: row.title,
            content: row.content,
            author_name: row.author_name,
            created_at: Some(timestamp(row.created_at_us)),
            updated_at: Some(timestamp(row.occurred_at_us)),
            deleted: row.deleted,
        }),
        occurred_at: Some(timestamp(row.occurred_at_us)),
        traceparent: row.traceparent,
        tracestate: row.tracestate,
        actor: row.actor,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_are_cut_into_runs_by_bytes() {
        let mb = 1024 * 1024;
        let runs = super::by_bytes(vec![(mb, 1), (2 * mb, 2), (2 * mb, 3), (9 * mb, 4), (1, 5)]);
        assert_eq!(runs, [vec![1, 2], vec![3], vec![4], vec![5]]);
        assert!(super::by_bytes(Vec::<(usize, ())>::new()).is_empty());
    }

    #[test]
    fn id_lists_are_padded_to_a_power_of_two_with_the_last_id() {
        assert_eq!(super::padded(&[4, 5, 6]), [4, 5, 6, 6]);
        assert_eq!(super::padded(&[4]), [4]);
        assert_eq!(super::padded(&[1, 2, 3, 4]), [1, 2, 3, 4]);
        assert!(super::padded(&[]).is_empty());
    }
}
