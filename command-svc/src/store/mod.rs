//! The relational event store: a [`Writer`] appends an event, its outbox row
//! and the post's new head state in one transaction; reads give the log back.
//!
//! The store stores: what a command decides, and whether its event is
//! published, are the caller's (see `crate::app`). A writer is one
//! transaction: read the heads it needs ([`Writer::head`]), append what was
//! decided ([`Writer::append`]), [`Writer::commit`].

pub mod entities;
pub mod migration;

use std::{sync::Arc, time::Duration};

use postmesh_proto::{
    v1::{EventType, PostEvent},
    PostId,
};
use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, OwnedMutexGuard};

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
    db: DatabaseConnection,
    /// SQLite allows one writer; queueing writers here instead of in SQLite's
    /// busy handler keeps latency flat and avoids SQLITE_BUSY under load.
    write_gate: Option<Arc<Mutex<()>>>,
}

/// How often a transaction is started again when its connection turns out
/// dead: the pool does not test connections before handing them out, so one
/// that died while idle (a database restart) fails the `BEGIN`, is discarded,
/// and the next one is tried. Nothing ran, so starting again is safe.
const MAX_BEGIN_RETRIES: usize = 2;

impl EventStore {
    /// Connects to `url` (sqlite:// or mysql://) with a bounded pool.
    pub async fn connect(url: &str, pool: u32, timeout: Duration) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(pool.max(1))
            .min_connections(1)
            .connect_timeout(timeout)
            .acquire_timeout(timeout)
            // sqlx would PING every connection it hands out: one more round trip
            // per transaction. A dead connection fails its BEGIN instead, which
            // `writer` retries on another connection.
            .test_before_acquire(false)
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        let write_gate = match db.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
                db.execute_unprepared("PRAGMA synchronous=NORMAL").await?;
                Some(Arc::new(Mutex::new(())))
            }
            DbBackend::MySql | DbBackend::Postgres => None,
        };
        Ok(Self { db, write_gate })
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
            return migration::Migrator::up(&self.db, None).await;
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
            let gate = match &self.write_gate {
                Some(gate) => Some(gate.clone().lock_owned().await),
                None => None,
            };
            match self.db.begin().await {
                Ok(txn) => return Ok(Writer { txn, _gate: gate }),
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

    /// The first answer to an idempotency key, None when the key is new; the
    /// key with another request is an error.
    pub async fn first_answer(&self, idem: &Idempotency) -> Result<Option<Appended>, Error> {
        let Some(first) = idempotency_key::Entity::find_by_id(idem.key.clone())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        if first.request_hash != idem.request_hash {
            return Err(Error::IdempotencyKeyReused(idem.key.clone()));
        }
        Ok(Some(Appended {
            post_id: stored_id(first.post_id)?,
            version: first.version,
            position: 0,
        }))
    }

    /// The highest position through which the log is complete (0: empty).
    /// Positions are taken in commit order without gaps (see the module
    /// doc), so this is the highest committed position.
    pub async fn head(&self) -> Result<i64, Error> {
        let max: Option<Option<i64>> = post_event::Entity::find()
            .select_only()
            .column_as(post_event::Column::Position.max(), "head")
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(max.flatten().unwrap_or(0))
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
        let _gate = match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        for chunk in ids.chunks(512) {
            outbox::Entity::delete_many()
                .filter(outbox::Column::Id.is_in(padded(chunk)))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// Number of unpublished events.
    pub async fn outbox_len(&self) -> Result<u64, Error> {
        Ok(outbox::Entity::find().count(&self.db).await?)
    }
}

/// One write transaction, holding SQLite's write gate until it ends.
/// Dropped without [`commit`](Self::commit), it rolls back.
#[derive(Debug)]
pub struct Writer {
    // Declared first, so the rollback of a dropped writer is queued before
    // the gate lets the next writer in.
    txn: DatabaseTransaction,
    _gate: Option<OwnedMutexGuard<()>>,
}

/// What [`Writer::append`] did.
#[derive(Debug)]
pub enum Append {
    /// The event, its outbox row and the new head are written.
    Recorded(Box<Recorded>),
    /// The command's idempotency key is stored already: nothing was written;
    /// the key's first answer ([`EventStore::first_answer`]) is the answer.
    KeyTaken,
}

impl Writer {
    /// A post's current state. On MySQL the row stays locked until the
    /// transaction ends: concurrent writers to one post queue here instead of
    /// failing on UNIQUE(post_id, version).
    pub async fn head(&self, post_id: PostId) -> Result<Option<PostState>, WriteError> {
        let mut query = post_stream::Entity::find_by_id(post_id.get());
        if self.txn.get_database_backend() == DbBackend::MySql {
            query = query.lock_exclusive();
        }
        Ok(query.one(&self.txn).await?.map(|row| PostState {
            version: row.version,
            title: row.title,
            content: row.content,
            author_name: row.author_name,
            deleted: row.deleted,
            created_at_us: row.created_at_us,
            updated_at_us: row.updated_at_us,
        }))
    }

    /// Writes what was decided: the post's head (a new row for a new post,
    /// which assigns its id), the idempotency key with its answer, the event
    /// and its outbox row. The event's time is the state's `updated_at_us`.
    pub async fn append(
        &self,
        decision: Decision,
        meta: &EventMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<Append, WriteError> {
        let Decision {
            post_id,
            event_type,
            state,
        } = decision;
        let now_us = state.updated_at_us;
        let post_id = match post_id {
            None => {
                let head = post_stream::ActiveModel {
                    post_id: sea_orm::ActiveValue::NotSet,
                    version: Set(state.version),
                    title: Set(state.title.clone()),
                    content: Set(state.content.clone()),
                    author_name: Set(state.author_name.clone()),
                    deleted: Set(state.deleted),
                    created_at_us: Set(state.created_at_us),
                    updated_at_us: Set(state.updated_at_us),
                };
                let id = post_stream::Entity::insert(head).exec(&self.txn).await?.last_insert_id;
                stored_id(id)?
            }
            Some(post_id) => {
                // Guarded on the version the decision started from, so a lost
                // race shows as 0 rows.
                let previous = state.version - 1;
                let updated = post_stream::Entity::update_many()
                    .col_expr(post_stream::Column::Version, Expr::value(state.version))
                    .col_expr(post_stream::Column::Title, Expr::value(state.title.clone()))
                    .col_expr(post_stream::Column::Content, Expr::value(state.content.clone()))
                    .col_expr(post_stream::Column::AuthorName, Expr::value(state.author_name.clone()))
                    .col_expr(post_stream::Column::Deleted, Expr::value(state.deleted))
                    .col_expr(post_stream::Column::UpdatedAtUs, Expr::value(state.updated_at_us))
                    .filter(post_stream::Column::PostId.eq(post_id.get()))
                    .filter(post_stream::Column::Version.eq(previous))
                    .exec(&self.txn)
                    .await?;
                if updated.rows_affected != 1 {
                    return Err(WriteError::Conflict(format!(
                        "post {post_id} moved past version {previous}"
                    )));
                }
                post_id
            }
        };

        if let Some(idem) = idempotency {
            // The key goes in with its answer, once the post id is known. A
            // concurrent duplicate blocks on it (MySQL; on SQLite writers are
            // serialised) until this transaction ends, then fails on it and
            // answers from it; a duplicate after the commit does the same.
            let key = idempotency_key::ActiveModel {
                idem_key: Set(idem.key.clone()),
                request_hash: Set(idem.request_hash.clone()),
                post_id: Set(post_id.get()),
                version: Set(state.version),
                created_at_us: Set(now_us),
            };
            if let Err(error) = idempotency_key::Entity::insert(key)
                .exec_without_returning(&self.txn)
                .await
            {
                if is_unique_violation(&error) {
                    return Ok(Append::KeyTaken);
                }
                return Err(error.into());
            }
        }

        let mut row = post_event::Model {
            position: 0,
            post_id: post_id.get(),
            version: state.version,
            event_type: event_type.event_name().to_owned(),
            title: state.title,
            content: state.content,
            author_name: state.author_name,
            deleted: state.deleted,
            created_at_us: state.created_at_us,
            occurred_at_us: now_us,
            traceparent: meta.traceparent.clone(),
            tracestate: meta.tracestate.clone(),
            actor: meta.actor.clone(),
        };
        let mut insert = row.clone().into_active_model();
        insert.position = sea_orm::ActiveValue::NotSet;
        row.position = post_event::Entity::insert(insert).exec(&self.txn).await?.last_insert_id;
        let outbox_row = outbox::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            position: Set(row.position),
            created_at_us: Set(now_us),
        };
        let outbox_id = outbox::Entity::insert(outbox_row).exec(&self.txn).await?.last_insert_id;
        Ok(Append::Recorded(Box::new(Recorded {
            appended: Appended {
                post_id,
                version: row.version,
                position: row.position,
            },
            pending: Pending {
                outbox_id,
                event: to_proto(row),
            },
        })))
    }

    /// Commits. When it fails, whether it committed is unknown.
    pub async fn commit(self) -> Result<(), WriteError> {
        Ok(self.txn.commit().await?)
    }
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
    fn id_lists_are_padded_to_a_power_of_two_with_the_last_id() {
        assert_eq!(super::padded(&[4, 5, 6]), [4, 5, 6, 6]);
        assert_eq!(super::padded(&[4]), [4]);
        assert_eq!(super::padded(&[1, 2, 3, 4]), [1, 2, 3, 4]);
        assert!(super::padded(&[]).is_empty());
    }
}
