//! Schema migrations; they run on SQLite and MySQL/MariaDB alike.

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, MigrationTrait, MigratorTrait};

/// All migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateEventStore)]
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
