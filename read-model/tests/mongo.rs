//! The store suite against the MongoDB store, on a real MongoDB-compatible
//! server (TEST_MONGODB_URL; FerretDB in CI), plus what only MongoDB can be
//! asked directly.

#![allow(clippy::unwrap_used)]

use mongodb::bson::{doc, Document};
use postmesh_read_model::{
    testing::{Fixture, MongoFixture},
    ReadModelStore,
};

postmesh_read_model::store_suite!(MongoFixture::from_env());

/// The store's database through a driver client of its own, for writes
/// the store would never make.
async fn raw_database(store: &postmesh_read_model::ReadStore) -> mongodb::Database {
    let name = store.as_mongo().unwrap().database_name().to_owned();
    let client = mongodb::Client::with_uri_str(postmesh_read_model::testing::mongodb_url())
        .await
        .unwrap();
    client.database(&name)
}

#[tokio::test]
async fn ensure_indexes_is_idempotent_and_enforces_uniqueness() {
    let fixture = MongoFixture::from_env();
    let store = fixture.fresh("qs_indexes").await;
    store.ensure_schema().await.unwrap();
    store.ensure_schema().await.unwrap();
    let database = raw_database(&store).await;
    // A raw second document for the same post must be refused by the index.
    let posts = database.collection::<Document>("posts");
    posts
        .insert_one(doc! { "post_id": 1_i64, "version": 1_i64 })
        .await
        .unwrap();
    let duplicate = posts.insert_one(doc! { "post_id": 1_i64, "version": 2_i64 }).await;
    assert!(duplicate.is_err(), "unique index on post_id not enforced");
    let versions = database.collection::<Document>("post_versions");
    versions
        .insert_one(doc! { "post_id": 1_i64, "version": 1_i64 })
        .await
        .unwrap();
    versions
        .insert_one(doc! { "post_id": 1_i64, "version": 2_i64 })
        .await
        .unwrap();
    let duplicate = versions.insert_one(doc! { "post_id": 1_i64, "version": 1_i64 }).await;
    assert!(duplicate.is_err(), "unique index on (post_id, version) not enforced");
    fixture.dispose(store).await;
}

/// A stray document holding a post's `post_id` under another `_id` makes the
/// version gate collide on the unique index every round: the apply fails
/// with a conflict (which the relay dead-letters with the reason), never a
/// silent stale.
#[tokio::test]
async fn a_unique_post_id_collision_is_a_conflict_not_a_stale() {
    use postmesh_read_model::{testing::created, StoreError};
    let fixture = MongoFixture::from_env();
    let store = fixture.fresh("qs_collide").await;
    let posts = raw_database(&store).await.collection::<Document>("posts");
    posts
        .insert_one(doc! { "_id": "stray", "post_id": 9_i64, "version": 1_i64 })
        .await
        .unwrap();
    let error = store.apply(&created(9, "ann", 1_000)).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { reason, .. } if reason.contains("post 9")),
        "{error}"
    );
    assert!(!error.is_unavailable());
    // Other posts are unaffected.
    store.apply(&created(10, "ann", 1_000)).await.unwrap();
    fixture.dispose(store).await;
}
