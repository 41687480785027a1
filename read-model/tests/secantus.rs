//! The MongoDB store suite against SecantusDB (PyPI `secantusdb`, a
//! MongoDB-compatible server on WiredTiger; TEST_SECANTUS_URL, started by
//! `scripts/servers.sh up secantus`). FerretDB, the suite's other server,
//! never takes the store's MongoDB-only code paths; SecantusDB answers as
//! MongoDB does, so here they run: the version gate's `{_id, version: {$lt:
//! v}}` upsert answered by E11000 when a newer version is stored (no
//! `settle`), and `renameCollection` with `dropTarget` in `swap_in`. The
//! answers those paths rely on are checked raw below.

#![allow(clippy::unwrap_used)]

use mongodb::bson::{doc, Document};
use postmesh_read_model::testing::{secantus_url, unique, MongoFixture};

postmesh_read_model::store_suite!(MongoFixture::at(&secantus_url()));

/// The error code of a failed driver call, wherever the driver put it.
fn code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::Command(command) => Some(command.code),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(write)) => Some(write.code),
        _ => None,
    }
}

#[tokio::test]
async fn secantus_answers_the_mongodb_only_paths_as_mongodb_does() {
    let client = mongodb::Client::with_uri_str(secantus_url()).await.unwrap();
    let name = unique("qs_secantus");
    let database = client.database(&name);
    // Taken for MongoDB: the store decides by buildInfo's ferretdbVersion.
    let info = database.run_command(doc! { "buildInfo": 1 }).await.unwrap();
    assert!(!info.contains_key("ferretdbVersion"), "{info}");

    // The gate: an upsert filtered on an older version collides on _id
    // with the newer document instead of overwriting it...
    let posts = database.collection::<Document>("posts");
    posts.insert_one(doc! { "_id": "1", "version": 3_i64 }).await.unwrap();
    let stale = posts
        .update_one(
            doc! { "_id": "1", "version": { "$lt": 2_i64 } },
            doc! { "$set": { "version": 2_i64 } },
        )
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(code(&stale), Some(11000), "{stale}");
    // ...and replaces an older one in place.
    let newer = posts
        .update_one(
            doc! { "_id": "1", "version": { "$lt": 4_i64 } },
            doc! { "$set": { "version": 4_i64 } },
        )
        .upsert(true)
        .await
        .unwrap();
    assert_eq!((newer.matched_count, newer.modified_count), (1, 1));

    // The swap: a plain rename onto an existing collection is refused
    // (NamespaceExists, 48); with dropTarget it replaces it in one step.
    let fresh = database.collection::<Document>("posts_fresh");
    fresh.insert_one(doc! { "_id": "9", "version": 1_i64 }).await.unwrap();
    let admin = client.database("admin");
    let rename = |drop_target: bool| {
        let mut command = doc! {
            "renameCollection": format!("{name}.posts_fresh"),
            "to": format!("{name}.posts"),
        };
        if drop_target {
            command.insert("dropTarget", true);
        }
        admin.run_command(command)
    };
    let refused = rename(false).await.unwrap_err();
    assert_eq!(code(&refused), Some(48), "{refused}");
    rename(true).await.unwrap();
    let ids: Vec<Document> = futures::TryStreamExt::try_collect(posts.find(doc! {}).await.unwrap())
        .await
        .unwrap();
    assert_eq!(ids, vec![doc! { "_id": "9", "version": 1_i64 }]);
    let names = database.list_collection_names().await.unwrap();
    assert!(!names.contains(&"posts_fresh".to_owned()), "{names:?}");
    database.drop().await.unwrap();
}
