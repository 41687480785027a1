//! The store suite against the SQLite store, on files of its own, plus what
//! only SQLite can be asked directly: its query plans, the search index kept
//! in step, a locked file, a file that is no database, and two connections
//! (as two processes would) writing one file at once.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::future::join_all;
use postmesh_proto::v1::EventType;
use postmesh_read_model::{
    cursor::Position,
    testing::{created, event, unique, Fixture, SqliteFixture},
    Applied, ListFilter, ReadModelStore, ReadStore,
};
use sea_orm::sqlx::{self, sqlite::SqliteConnectOptions, ConnectOptions, Connection, Executor};

postmesh_read_model::store_suite!(SqliteFixture::new());

fn titled(text: &str) -> ListFilter {
    ListFilter {
        title: text.into(),
        ..ListFilter::default()
    }
}

async fn titles(store: &ReadStore, filter: &ListFilter) -> Vec<String> {
    let posts = store.list(filter, None, 100).await.unwrap();
    posts.into_iter().map(|p| p.title).collect()
}

/// The ids of every page of `filter`, `size` a page, walked by keyset.
async fn every_page(store: &ReadStore, filter: &ListFilter, size: i64) -> Vec<i64> {
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(filter, after.as_ref(), size).await.unwrap();
        let Some(last) = page.last() else { break };
        let at = last.created_at.unwrap();
        after = Some(Position {
            created_at_ms: at.seconds * 1000 + i64::from(at.nanos) / 1_000_000,
            post_id: last.post_id,
        });
        listed.extend(page.iter().map(|p| p.post_id));
    }
    listed
}

/// A raw connection to the store's file, as another process would open it.
async fn raw_connection(store: &ReadStore) -> sqlx::SqliteConnection {
    SqliteConnectOptions::new()
        .filename(store.as_sqlite().unwrap().file())
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_and_filters_are_served_by_indexes() {
    let fixture = SqliteFixture::new();
    let store = fixture.fresh("sq_plan").await;
    let sqlite = store.as_sqlite().unwrap();
    let after = Position {
        created_at_ms: 5_000,
        post_id: 9,
    };
    let plan = |filter: ListFilter, after: Option<Position>| {
        let sqlite = sqlite.clone();
        async move { sqlite.list_plan(&filter, after.as_ref(), 20).await.unwrap().join(" | ") }
    };
    // Newest first, first and keyset pages: the (created_at, post_id) index
    // walked backwards, no sort.
    for after in [None, Some(after)] {
        let unfiltered = plan(ListFilter::default(), after).await;
        assert!(
            unfiltered.contains("USING INDEX sqlite_autoindex_posts_1"),
            "{unfiltered}"
        );
        assert!(!unfiltered.contains("TEMP B-TREE"), "{unfiltered}");
        let by_author = ListFilter {
            author_name: "ann".into(),
            ..ListFilter::default()
        };
        let by_author = plan(by_author, after).await;
        assert!(
            by_author.contains("USING INDEX sqlite_autoindex_posts_2 (author_name=?"),
            "{by_author}"
        );
        assert!(!by_author.contains("TEMP B-TREE"), "{by_author}");
    }
    // A substring of three characters or more: the trigram index, walked in
    // its key order (ListPosts'), no sort, first and keyset pages alike.
    for after in [None, Some(after)] {
        let searched = plan(titled("rust"), after).await;
        assert!(searched.starts_with("SCAN fts_posts VIRTUAL TABLE"), "{searched}");
        assert!(!searched.contains("TEMP B-TREE"), "{searched}");
    }
    fixture.dispose(store).await;
}

/// A substring search walks the index in key order and sorts the last
/// millisecond exactly; on 10,000 posts whose ids do not follow their
/// creation times, a few sharing one, some deleted, every page of every
/// selectivity, with and without an author and a short-text filter, walked
/// by keyset to the end, is exactly what a plain filter and sort of all the
/// posts gives.
#[tokio::test]
async fn substring_pages_are_exact() {
    const POSTS: i64 = 10_000;
    let fixture = SqliteFixture::new();
    let store = fixture.fresh("sq_window").await;
    // Creation times a permutation of the ids; a few posts share one.
    let created_ms = |id: i64| 1_000_000 + ((id * 7_919) % POSTS) * 10 - i64::from(id % 97 == 0) * 10;
    let title = |id: i64| {
        let mut title = format!("Post {id} common");
        if id % 50 == 0 {
            title.push_str(" every50");
        }
        if id % 300 == 0 {
            title.push_str(" mid300");
        }
        // The three oldest posts only.
        if created_ms(id) <= 1_000_020 {
            title.push_str(" zqx-Rare");
        }
        title
    };
    let author = |id: i64| if id % 3 == 0 { "bob" } else { "ann" };
    let mut events: Vec<_> = (1..=POSTS)
        .map(|id| {
            event(
                id,
                1,
                EventType::PostCreated,
                &title(id),
                &format!("body {id}"),
                author(id),
                created_ms(id),
            )
        })
        .collect();
    // Every seventh post deleted (version 2, same title and creation time).
    events.extend((1..=POSTS).filter(|id| id % 7 == 0).map(|id| {
        event(
            id,
            2,
            EventType::PostDeleted,
            &title(id),
            &format!("body {id}"),
            author(id),
            created_ms(id),
        )
    }));
    for batch in events.chunks(256) {
        store.apply_batch(batch).await.unwrap();
    }
    let mut all = store.all_posts().await.unwrap();
    all.sort_by_key(|p| std::cmp::Reverse((p.created_at.unwrap().seconds, p.created_at.unwrap().nanos, p.post_id)));
    for text in ["common", "EVERY50", "mid300", "zqx-rare", "no such text"] {
        // A content of one or two characters goes by scan, beside the index.
        for (by, short) in [("", ""), ("bob", ""), ("", "7")] {
            let filter = ListFilter {
                title: text.into(),
                author_name: by.into(),
                content: short.into(),
                include_deleted: false,
            };
            let expected: Vec<i64> = all
                .iter()
                .filter(|p| !p.deleted && p.title.to_lowercase().contains(&text.to_lowercase()))
                .filter(|p| by.is_empty() || p.author_name == by)
                .filter(|p| p.content.contains(short))
                .map(|p| p.post_id)
                .collect();
            let listed = every_page(&store, &filter, 50).await;
            assert_eq!(listed, expected, "pages of {text:?} by {by:?} with {short:?}");
        }
    }
    fixture.dispose(store).await;
}

/// Posts of one millisecond whose ids are 2^20 apart want one search key:
/// each gets its own, and pages of them are in ListPosts' order.
#[tokio::test]
async fn posts_wanting_one_search_key_each_get_one() {
    let fixture = SqliteFixture::new();
    let store = fixture.fresh("sq_keys").await;
    let ms = 5_000;
    let apart = 1 << 20;
    let ids = [3, 3 + apart, 3 + 2 * apart, 4];
    let events: Vec<_> = ids
        .iter()
        .map(|&id| event(id, 1, EventType::PostCreated, &format!("shared {id}"), "c", "ann", ms))
        .chain([event(9, 1, EventType::PostCreated, "shared older", "c", "ann", ms - 1)])
        .collect();
    store.apply_batch(&events).await.unwrap();
    let sqlite = store.as_sqlite().unwrap();
    sqlite.settle_search().await.unwrap();
    let mut newest_first: Vec<i64> = ids.to_vec();
    newest_first.sort_by_key(|&id| std::cmp::Reverse(id));
    newest_first.push(9);
    assert_eq!(every_page(&store, &titled("SHARED"), 2).await, newest_first);
    // An update moves a post's text under its own key, not a neighbour's.
    store
        .apply(&event(3 + apart, 2, EventType::PostUpdated, "moved", "c", "ann", ms))
        .await
        .unwrap();
    sqlite.settle_search().await.unwrap();
    assert_eq!(titles(&store, &titled("moved")).await, vec!["moved"]);
    assert_eq!(titles(&store, &titled("shared")).await.len(), 4);
    fixture.dispose(store).await;
}

/// A file written by an earlier version, whose search index
/// (`search_posts`) is keyed by post id (and has no keys table) or by the
/// keys in ascending order, is re-indexed when the schema is ensured: every
/// post queued, searches complete meanwhile and after, the old index gone.
#[tokio::test]
async fn a_file_with_an_earlier_search_index_is_reindexed() {
    let layouts = [
        // Keyed by post id, no keys table.
        "DROP TABLE keys_posts; DROP TABLE fts_posts; \
         CREATE VIRTUAL TABLE search_posts USING fts5(title, content, content='', tokenize='trigram'); \
         INSERT INTO search_posts (rowid, title, content) SELECT post_id, title, content FROM posts;",
        // Keyed by the keys themselves, oldest first.
        "DROP TABLE fts_posts; \
         CREATE VIRTUAL TABLE search_posts USING fts5(title, content, content='', tokenize='trigram'); \
         INSERT INTO search_posts (rowid, title, content) \
         SELECT k.key, p.title, p.content FROM posts p JOIN keys_posts k USING (post_id);",
    ];
    for (n, layout) in layouts.into_iter().enumerate() {
        let fixture = SqliteFixture::new();
        let store = fixture.fresh(&format!("sq_rekey_{n}")).await;
        store
            .apply_batch(&[created(1, "ann", 1_000), created(2, "bob", 2_000)])
            .await
            .unwrap();
        let sqlite = store.as_sqlite().unwrap();
        sqlite.settle_search().await.unwrap();
        let mut raw = raw_connection(&store).await;
        raw.execute(layout).await.unwrap();
        raw.close().await.unwrap();
        store.ensure_schema().await.unwrap();
        assert!(sqlite.unindexed().await.unwrap() <= 2);
        assert_eq!(titles(&store, &titled("TITLE")).await, vec!["title 2", "title 1"]);
        sqlite.settle_search().await.unwrap();
        assert_eq!(sqlite.unindexed().await.unwrap(), 0);
        assert_eq!(titles(&store, &titled("title 1")).await, vec!["title 1"]);
        assert_eq!(titles(&store, &titled("TITLE")).await, vec!["title 2", "title 1"]);
        let mut raw = raw_connection(&store).await;
        let legacy: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name LIKE 'search_posts%'")
            .fetch_one(&mut raw)
            .await
            .unwrap();
        raw.close().await.unwrap();
        assert_eq!(legacy, 0, "layout {n}");
        fixture.dispose(store).await;
    }
}

#[tokio::test]
async fn the_search_index_follows_every_change_and_every_swap() {
    let fixture = SqliteFixture::new();
    let store = fixture.fresh("sq_search").await;
    let ms = 1_000;
    store
        .apply_batch(&[
            event(1, 1, EventType::PostCreated, "Élan Vital", "about tokio", "ann", ms),
            event(2, 1, EventType::PostCreated, "élan again", "about rayon", "bob", ms + 1),
            event(3, 1, EventType::PostCreated, "100% _done_", "x", "bob", ms + 2),
        ])
        .await
        .unwrap();
    // Queued for the index or in it, a post is found (the index may have
    // taken it already: see the next test for the queue alone).
    assert_eq!(titles(&store, &titled("VITAL")).await, vec!["Élan Vital"]);
    let sqlite = store.as_sqlite().unwrap();
    sqlite.settle_search().await.unwrap();
    assert_eq!(sqlite.unindexed().await.unwrap(), 0);
    // Unicode case folding on the indexed path, literal % and _ everywhere.
    assert_eq!(titles(&store, &titled("ÉLAN")).await, vec!["élan again", "Élan Vital"]);
    assert_eq!(titles(&store, &titled("0% _")).await, vec!["100% _done_"]);
    assert_eq!(titles(&store, &titled("%")).await, vec!["100% _done_"]);
    assert_eq!(titles(&store, &titled("_")).await, vec!["100% _done_"]);
    assert!(titles(&store, &titled("*")).await.is_empty());
    let both = ListFilter {
        title: "élan".into(),
        content: "TOKIO".into(),
        ..ListFilter::default()
    };
    assert_eq!(titles(&store, &both).await, vec!["Élan Vital"]);
    // An update moves the post in the index; a delete hides it by default.
    store
        .apply(&event(
            1,
            2,
            EventType::PostUpdated,
            "Renamed",
            "about tokio",
            "ann",
            ms,
        ))
        .await
        .unwrap();
    assert_eq!(titles(&store, &titled("élan")).await, vec!["élan again"]);
    assert_eq!(titles(&store, &titled("named")).await, vec!["Renamed"]);
    // The same once the index has taken the change (its old text out).
    sqlite.settle_search().await.unwrap();
    assert_eq!(titles(&store, &titled("ÉLAN")).await, vec!["élan again"]);
    assert_eq!(titles(&store, &titled("named")).await, vec!["Renamed"]);
    store
        .apply(&event(
            1,
            3,
            EventType::PostDeleted,
            "Renamed",
            "about tokio",
            "ann",
            ms,
        ))
        .await
        .unwrap();
    assert!(titles(&store, &titled("named")).await.is_empty());
    let with_deleted = ListFilter {
        include_deleted: true,
        ..titled("named")
    };
    assert_eq!(titles(&store, &with_deleted).await, vec!["Renamed"]);

    // A rebuilt model brings its own index and triggers.
    let staged = store.staging(&unique("rebuild"));
    staged.ensure_schema().await.unwrap();
    staged.apply(&created(7, "cy", ms)).await.unwrap();
    store.swap_in(&staged).await.unwrap();
    assert!(titles(&store, &titled("élan")).await.is_empty());
    assert_eq!(titles(&store, &titled("title 7")).await, vec!["title 7"]);
    store
        .apply(&event(7, 2, EventType::PostUpdated, "seven", "c", "cy", ms))
        .await
        .unwrap();
    assert!(titles(&store, &titled("title 7")).await.is_empty());
    assert_eq!(titles(&store, &titled("seven")).await, vec!["seven"]);
    // Ensuring the schema after a swap adds nothing (the indexes travelled).
    store.ensure_schema().await.unwrap();
    let mut raw = raw_connection(&store).await;
    let objects: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'fts_posts_%' AND type != 'trigger' ORDER BY name",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    let names: Vec<&str> = objects.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fts_posts",
            "keys_posts",
            "meta_posts",
            "pending_posts",
            "post_versions",
            "posts",
            "sqlite_autoindex_keys_posts_1",
            "sqlite_autoindex_meta_posts_1",
            "sqlite_autoindex_post_versions_1",
            "sqlite_autoindex_post_versions_2",
            "sqlite_autoindex_posts_1",
            "sqlite_autoindex_posts_2",
        ]
    );
    let triggers: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert_eq!(
        triggers.into_iter().map(|(n,)| n).collect::<Vec<_>>(),
        ["pending_posts_delete", "pending_posts_insert", "pending_posts_update"]
    );
    raw.close().await.unwrap();
    fixture.dispose(store).await;
}

/// Posts queued for the search index (written here by another connection,
/// so this store's indexer is not woken) are searched by their text: found
/// at once, ASCII case folded, and their old text no longer matches; once
/// indexed, Unicode case folding too. A queue a stopped process left is
/// taken by the next write.
#[tokio::test]
async fn queued_posts_are_searched_by_their_text_until_indexed() {
    let fixture = SqliteFixture::new();
    let store = fixture.fresh("sq_queue").await;
    let sqlite = store.as_sqlite().unwrap();
    let mut raw = raw_connection(&store).await;
    raw.execute(
        "INSERT INTO posts (post_id, version, title, content, author_name, created_at, updated_at, deleted) \
         VALUES (1, 1, 'Old Ärger', 'x', 'ann', 1000, 1000, 0)",
    )
    .await
    .unwrap();
    // Indexed by hand (no write through the store: its indexer sleeps).
    sqlite.settle_search().await.unwrap();
    raw.execute("UPDATE posts SET version = 2, title = 'New Ärger' WHERE post_id = 1")
        .await
        .unwrap();
    raw.execute(
        "INSERT INTO posts (post_id, version, title, content, author_name, created_at, updated_at, deleted) \
         VALUES (2, 1, 'Ünique Words', 'y', 'bob', 2000, 2000, 0)",
    )
    .await
    .unwrap();
    assert_eq!(sqlite.unindexed().await.unwrap(), 2);
    assert_eq!(titles(&store, &titled("NEW Ä")).await, vec!["New Ärger"]);
    assert!(titles(&store, &titled("old")).await.is_empty());
    assert_eq!(titles(&store, &titled("ique WORDS")).await, vec!["Ünique Words"]);
    assert_eq!(titles(&store, &titled("Ärger")).await, vec!["New Ärger"]);
    // Until indexed, non-ASCII letters match only in their own case.
    assert!(titles(&store, &titled("ärger")).await.is_empty());
    // The next write through the store wakes its indexer, which takes the
    // queue once the writer is idle.
    store.apply(&created(3, "cy", 3_000)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlite.unindexed().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the indexer took the queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(titles(&store, &titled("ärger")).await, vec!["New Ärger"]);
    assert!(titles(&store, &titled("old")).await.is_empty());
    assert_eq!(titles(&store, &titled("üNIQUE")).await, vec!["Ünique Words"]);
    raw.close().await.unwrap();
    fixture.dispose(store).await;
}

#[tokio::test]
async fn a_locked_file_is_an_outage_within_the_timeout_and_reads_go_on() {
    let fixture = SqliteFixture::new();
    let url = fixture.url("sq_locked");
    let store = ReadStore::connect_with_timeout(&url, "unused", Duration::from_millis(300))
        .await
        .unwrap();
    store.ensure_schema().await.unwrap();
    store.apply(&created(1, "ann", 1_000)).await.unwrap();
    // Another process holds the write lock.
    let mut holder = raw_connection(&store).await;
    holder.execute("BEGIN IMMEDIATE").await.unwrap();
    let started = Instant::now();
    let error = store.apply(&created(2, "ann", 2_000)).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // WAL: readers do not wait for the writer.
    assert_eq!(store.get(1).await.unwrap().unwrap().post_id, 1);
    store.ping().await.unwrap();
    holder.execute("ROLLBACK").await.unwrap();
    assert_eq!(store.apply(&created(2, "ann", 2_000)).await.unwrap(), Applied::Applied);

    // A process that locks the file exclusively (once it is the only one
    // with the file open) shuts readers out too.
    store.as_sqlite().unwrap().close().await;
    holder.execute("PRAGMA locking_mode = EXCLUSIVE").await.unwrap();
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    holder.execute("DELETE FROM post_versions WHERE 0").await.unwrap();
    holder.execute("COMMIT").await.unwrap();
    let fresh = ReadStore::connect_with_timeout(&url, "unused", Duration::from_millis(300))
        .await
        .unwrap();
    let error = fresh.ping().await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    let error = fresh.get(1).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    holder.close().await.unwrap();
    fresh.ping().await.unwrap();
    fixture.dispose(fresh).await;
    fixture.dispose(store).await;
}

#[tokio::test]
async fn a_file_that_is_no_database_is_an_outage() {
    let fixture = SqliteFixture::new();
    let url = fixture.url("sq_garbage");
    let path = url
        .trim_start_matches("sqlite://")
        .trim_end_matches("?mode=rwc")
        .to_owned();
    std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0x42_u8; 8192]).unwrap();
    let store = ReadStore::connect(&url, "unused").await.unwrap();
    let error = store.ping().await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    let error = store.apply(&created(1, "ann", 1_000)).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    fixture.dispose(store).await;
}

#[tokio::test]
async fn two_writers_of_one_file_apply_each_version_once() {
    let fixture = SqliteFixture::new();
    let url = fixture.url("sq_two_writers");
    // Two stores with pools of their own: two relay replicas.
    let stores = [
        ReadStore::connect(&url, "unused").await.unwrap(),
        ReadStore::connect(&url, "unused").await.unwrap(),
    ];
    stores[0].ensure_schema().await.unwrap();
    let events: Vec<_> = (1..=40)
        .flat_map(|id| {
            (1..=5).map(move |version| {
                event(
                    id,
                    version,
                    if version == 1 {
                        EventType::PostCreated
                    } else {
                        EventType::PostUpdated
                    },
                    &format!("t{id} v{version}"),
                    "c",
                    "ann",
                    1_000 * id,
                )
            })
        })
        .collect();
    // Each writer gets every event, in batches of 16, in opposite orders.
    let mut reversed = events.clone();
    reversed.reverse();
    let runs = [events.clone(), reversed]
        .into_iter()
        .zip(stores.clone())
        .map(|(events, store)| async move {
            let mut applied = Vec::new();
            for batch in events.chunks(16) {
                let outcomes = store.apply_batch(batch).await.unwrap();
                applied.extend(
                    batch
                        .iter()
                        .zip(outcomes)
                        .filter(|(_, outcome)| *outcome == Applied::Applied)
                        .map(|(e, _)| (e.post_id, e.version)),
                );
            }
            applied
        });
    let applied: Vec<(i64, i64)> = join_all(runs).await.into_iter().flatten().collect();
    let unique: std::collections::HashSet<_> = applied.iter().collect();
    assert_eq!(unique.len(), applied.len(), "a version was applied twice");
    let posts = stores[1].all_posts().await.unwrap();
    assert_eq!(posts.len(), 40);
    assert!(posts.iter().all(|p| p.version == 5 && p.title.ends_with("v5")));
    assert_eq!(stores[1].all_versions().await.unwrap().len(), 200);
    fixture.dispose(stores[1].clone()).await;
    fixture.dispose(stores[0].clone()).await;
}
