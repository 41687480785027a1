//! sea-orm entities of the event store tables.

/// Current state of each post: the allocator of post ids (auto-increment)
/// and the row a writer locks to serialise changes to one post.
pub mod post_stream {
    use sea_orm::entity::prelude::*;

    /// One row per post.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "post_streams")]
    pub struct Model {
        /// Post id, assigned by the database.
        #[sea_orm(primary_key)]
        pub post_id: i64,
        /// Version after the latest event.
        pub version: i64,
        /// Title.
        pub title: String,
        /// Content.
        #[sea_orm(column_type = "Text")]
        pub content: String,
        /// Author.
        pub author_name: String,
        /// Deleted flag.
        pub deleted: bool,
        /// Creation time (µs since epoch).
        pub created_at_us: i64,
        /// Latest change (µs since epoch).
        pub updated_at_us: i64,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The append-only event log.
pub mod post_event {
    use sea_orm::entity::prelude::*;

    /// One row per event; `UNIQUE(post_id, version)`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "post_events")]
    pub struct Model {
        /// Global position (auto-increment).
        #[sea_orm(primary_key)]
        pub position: i64,
        /// The post.
        pub post_id: i64,
        /// Version after this event.
        pub version: i64,
        /// PostCreated, PostUpdated or PostDeleted.
        pub event_type: String,
        /// Title after the change.
        pub title: String,
        /// Content after the change.
        #[sea_orm(column_type = "Text")]
        pub content: String,
        /// Author after the change.
        pub author_name: String,
        /// Deleted flag after the change.
        pub deleted: bool,
        /// The post's creation time (µs since epoch).
        pub created_at_us: i64,
        /// When the change happened (µs since epoch).
        pub occurred_at_us: i64,
        /// W3C traceparent of the command.
        pub traceparent: String,
        /// W3C tracestate of the command.
        pub tracestate: String,
        /// Who made the change.
        pub actor: String,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Events committed but not yet published to Redis.
pub mod outbox {
    use sea_orm::entity::prelude::*;

    /// One row per unpublished event.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// Publishing order.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The event's position in post_events.
        pub position: i64,
        /// When it was written (µs since epoch), for backlog age.
        pub created_at_us: i64,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Idempotency keys and the response they were first answered with.
pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    /// One row per key.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        /// The client's key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub idem_key: String,
        /// SHA-256 (hex) of the rpc name and request.
        pub request_hash: String,
        /// Post id of the first response.
        pub post_id: i64,
        /// Version of the first response.
        pub version: i64,
        /// When the key was first used (µs since epoch).
        pub created_at_us: i64,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
