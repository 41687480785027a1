//! Schema migrations; they run on SQLite and MySQL/MariaDB alike.
//!
//! Upgrading a store from before `log_head` (positions from AUTO_INCREMENT)
//! needs every old writer stopped first: an old writer would take positions
//! the counter hands out too, and fail on them.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::{prelude::*, MigrationTrait, MigratorTrait};

/// All migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateEventStore), Box::new(LogHead)]
    }
}

struct CreateEventStore;

impl MigrationName for CreateEventStore {
    fn name(&self) -> &str {
        "m20261127_000001_create_event_store"
    }
}

/// Content may be 100,000 bytes, beyond MySQL's 64 KiB TEXT.
fn content_column(backend: DbBackend) -> ColumnDef {
    let mut column = ColumnDef::new(Alias::new("content"));
    match backend {
        DbBackend::MySql => column.custom(Alias::new("MEDIUMTEXT")),
        DbBackend::Sqlite | DbBackend::Postgres => column.text(),
    };
    column.not_null();
    column
}

fn id_column(name: &str) -> ColumnDef {
    let mut column = ColumnDef::new(Alias::new(name));
    column.big_integer().not_null().auto_increment().primary_key();
    column
}

fn big(name: &str) -> ColumnDef {
    let mut column = ColumnDef::new(Alias::new(name));
    column.big_integer().not_null();
    column
}

fn text(name: &str, len: u32) -> ColumnDef {
    let mut column = ColumnDef::new(Alias::new(name));
    column.string_len(len).not_null();
    column
}

fn flag(name: &str) -> ColumnDef {
    let mut column = ColumnDef::new(Alias::new(name));
    column.boolean().not_null();
    column
}

#[async_trait::async_trait]
impl MigrationTrait for CreateEventStore {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("post_streams"))
                    .if_not_exists()
                    .col(id_column("post_id"))
                    .col(big("version"))
                    .col(text("title", 255))
                    .col(content_column(backend))
                    .col(text("author_name", 255))
                    .col(flag("deleted"))
                    .col(big("created_at_us"))
                    .col(big("updated_at_us"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("post_events"))
                    .if_not_exists()
                    .col(id_column("position"))
                    .col(big("post_id"))
                    .col(big("version"))
                    .col(text("event_type", 32))
                    .col(text("title", 255))
                    .col(content_column(backend))
                    .col(text("author_name", 255))
                    .col(flag("deleted"))
                    .col(big("created_at_us"))
                    .col(big("occurred_at_us"))
                    .col(text("traceparent", 64))
                    .col(text("tracestate", 512))
                    .col(text("actor", 255))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_post_events_post_version")
                    .table(Alias::new("post_events"))
                    .col(Alias::new("post_id"))
                    .col(Alias::new("version"))
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("outbox"))
                    .if_not_exists()
                    .col(id_column("id"))
                    .col(big("position"))
                    .col(big("created_at_us"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("idempotency_keys"))
                    .if_not_exists()
                    .col(text("idem_key", 255).primary_key())
                    .col(text("request_hash", 64))
                    .col(big("post_id"))
                    .col(big("version"))
                    .col(big("created_at_us"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["idempotency_keys", "outbox", "post_events", "post_streams"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The counter row that hands out positions and post ids in commit order
/// (see `crate::store`). A store written before it may have gaps in its
/// positions (AUTO_INCREMENT values of rolled-back transactions): they are
/// renumbered densely here, the outbox following its events (an outbox
/// row's id becomes its event's position), so the log is
/// dense from position 1. Events already published keep their old position
/// on the stream; a read model that stored positions is rebuilt after this.
struct LogHead;

impl MigrationName for LogHead {
    fn name(&self) -> &str {
        "m20261202_000001_log_head"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LogHead {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("log_head"))
                    .if_not_exists()
                    .col(big("id").primary_key())
                    .col(big("position"))
                    .col(big("post_id"))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let gaps = db
            .query_one(Statement::from_string(
                manager.get_database_backend(),
                "SELECT COALESCE(MAX(position), 0) - COUNT(*) FROM post_events",
            ))
            .await?
            .map(|row| row.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        if gaps > 0 {
            // Negated first, so no new position meets an old one on the
            // primary key while the rows are rewritten in any order.
            for sql in [
                "CREATE TABLE log_renumber (old_position BIGINT NOT NULL PRIMARY KEY, new_position BIGINT NOT NULL)",
                "INSERT INTO log_renumber (old_position, new_position) \
                 SELECT position, ROW_NUMBER() OVER (ORDER BY position) FROM post_events",
                "UPDATE post_events SET position = \
                 -(SELECT new_position FROM log_renumber WHERE old_position = post_events.position)",
                "UPDATE post_events SET position = -position WHERE position < 0",
                "UPDATE outbox SET position = \
                 (SELECT new_position FROM log_renumber WHERE old_position = outbox.position)",
                "DROP TABLE log_renumber",
            ] {
                db.execute_unprepared(sql).await?;
            }
        }
        // An outbox row's id is now its event's position (written in one
        // statement with the batch's events); the old rows follow suit.
        // Negated first, as above.
        db.execute_unprepared("UPDATE outbox SET id = -position").await?;
        db.execute_unprepared("UPDATE outbox SET id = -id").await?;
        db.execute_unprepared(
            "INSERT INTO log_head (id, position, post_id) \
             SELECT 1, (SELECT COALESCE(MAX(position), 0) FROM post_events), \
             (SELECT COALESCE(MAX(post_id), 0) FROM post_streams)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("log_head")).if_exists().to_owned())
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sea_orm::{ConnectionTrait, Database, Statement};
    use sea_orm_migration::MigratorTrait;

    use super::Migrator;

    async fn column(db: &sea_orm::DatabaseConnection, sql: &str) -> Vec<i64> {
        let rows = db
            .query_all(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap();
        rows.iter().map(|row| row.try_get_by_index::<i64>(0).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_store_with_gaps_is_renumbered_densely_and_the_counter_starts_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let db = Database::connect(&url).await.unwrap();
        Migrator::up(&db, Some(1)).await.unwrap();
        // An old store: positions 3, 7, 8 (rolled-back transactions took the
        // rest), the event at 8 not yet published.
        db.execute_unprepared(
            "INSERT INTO post_streams VALUES (4, 3, 't', 'c', 'a', 0, 1, 1); \
             INSERT INTO post_events VALUES (3, 4, 1, 'PostCreated', 't', 'c', 'a', 0, 1, 1, '', '', ''), \
             (7, 4, 2, 'PostUpdated', 't', 'c', 'a', 0, 1, 1, '', '', ''), \
             (8, 4, 3, 'PostUpdated', 't', 'c', 'a', 0, 1, 1, '', '', ''); \
             INSERT INTO outbox VALUES (1, 8, 1);",
        )
        .await
        .unwrap();
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(
            column(&db, "SELECT position FROM post_events ORDER BY version").await,
            [1, 2, 3]
        );
        assert_eq!(column(&db, "SELECT position FROM outbox").await, [3]);
        assert_eq!(column(&db, "SELECT id FROM outbox").await, [3]);
        assert_eq!(column(&db, "SELECT position FROM log_head WHERE id = 1").await, [3]);
        assert_eq!(column(&db, "SELECT post_id FROM log_head WHERE id = 1").await, [4]);
    }
}
