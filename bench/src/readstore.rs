//! The read-store phases of #18: the raw SQLite ceiling of the relay drain
//! (the same batched inserts and upserts straight through sea-orm, no
//! Redis, no relay), seeding the read model with many posts, and ListPosts
//! over them (first and keyset pages, by author and not, substring filters).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use postmesh_proto::v1::{post_query_client::PostQueryClient, EventType, ListPostsRequest, Post, PostEvent};
use postmesh_read_model::{ReadModelStore, ReadStore, SqliteStore};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait, Value};
use serde_json::{json, Value as Json};
use tonic::transport::Channel;

use crate::{ceilings::closed_loop, stats::Samples, workload::content};

/// Events per transaction, as the relay's default batch (RELAY_BATCH_SIZE).
const BATCH: usize = 256;
/// Rows per multi-row statement, as the store writes them.
const ROWS: usize = 64;

/// Authors of the seeded posts (each has `posts / AUTHORS`).
const AUTHORS: usize = 100;
/// Topics in the seeded titles: a topic's substring matches 1 post in this many.
const TOPICS: usize = 100;

/// The raw ceiling of the SQLite drain: `events` applied to a fresh file of
/// the store's schema (its indexes and search triggers included) in
/// transactions of 256 events, each with the multi-row insert of the
/// versions and the multi-row upsert of each post's newest, straight
/// through sea-orm. Events per second.
pub async fn raw_sqlite(dir: &std::path::Path, events: &[PostEvent]) -> anyhow::Result<f64> {
    let file = dir.join("raw-ceiling.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    // The store's schema, created by the store itself.
    SqliteStore::connect(&url).await?.ensure_schema().await?;
    let db = Database::connect(&url).await?;
    db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    db.execute_unprepared("PRAGMA synchronous=NORMAL").await?;
    let started = Instant::now();
    for batch in events.chunks(BATCH) {
        let txn = db.begin().await?;
        for rows in batch.chunks(ROWS) {
            let values: Vec<Value> = rows
                .iter()
                .flat_map(|e| {
                    let mut row = post_values(e);
                    row.push(Value::from(if e.version == 1 { "PostCreated" } else { "PostUpdated" }));
                    row.push(Value::from(e.position));
                    row
                })
                .collect();
            let sql = format!(
                "INSERT INTO post_versions (post_id, version, title, content, author_name, created_at, updated_at, \
                 deleted, event_type, position) VALUES {} ON CONFLICT DO NOTHING",
                placeholders(rows.len(), 10)
            );
            txn.execute(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
                .await?;
        }
        let mut newest: HashMap<i64, &PostEvent> = HashMap::new();
        for event in batch {
            let slot = newest.entry(event.post_id).or_insert(event);
            if event.version > slot.version {
                *slot = event;
            }
        }
        let newest: Vec<&PostEvent> = newest.into_values().collect();
        for rows in newest.chunks(ROWS) {
            let values: Vec<Value> = rows.iter().flat_map(|e| post_values(e)).collect();
            let sql = format!(
                "INSERT INTO posts (post_id, version, title, content, author_name, created_at, updated_at, deleted) \
                 VALUES {} ON CONFLICT (post_id) DO UPDATE SET version = excluded.version, title = excluded.title, \
                 content = excluded.content, author_name = excluded.author_name, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at, deleted = excluded.deleted \
                 WHERE excluded.version > posts.version",
                placeholders(rows.len(), 8)
            );
            txn.execute(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
                .await?;
        }
        txn.commit().await?;
    }
    let rate = events.len() as f64 / started.elapsed().as_secs_f64();
    db.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    Ok(rate)
}

fn post_values(event: &PostEvent) -> Vec<Value> {
    let post = event.post.clone().unwrap_or_default();
    let ms = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
    };
    vec![
        Value::from(event.post_id),
        Value::from(event.version),
        Value::from(post.title),
        Value::from(post.content),
        Value::from(post.author_name),
        Value::from(ms(&post.created_at)),
        Value::from(ms(&event.occurred_at)),
        Value::from(post.deleted),
    ]
}

fn placeholders(rows: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; rows].join(", ")
}

/// The author of seeded post `n`.
fn author(n: usize) -> String {
    format!("seed-author-{:03}", n % AUTHORS)
}

/// The topic word in seeded post `n`'s title and content.
fn topic(n: usize) -> String {
    format!("topic{:03}", n % TOPICS)
}

/// Writes `posts` created posts (ids from `first_id`, `AUTHORS` authors,
/// `TOPICS` topics, newest last) straight into the read model, in batches
/// of 256: the listing phases' data. Returns how long it took.
pub async fn seed(store: &ReadStore, first_id: i64, posts: usize, content_bytes: usize) -> anyhow::Result<Duration> {
    store.ensure_schema().await?;
    let started = Instant::now();
    let base_ms = chrono::Utc::now().timestamp_millis() - posts as i64 * 1000;
    let events: Vec<PostEvent> = (0..posts)
        .map(|n| {
            let post_id = first_id + n as i64;
            let at = postmesh_read_model::millis_to_timestamp(base_ms + n as i64 * 1000);
            PostEvent {
                position: 0,
                post_id,
                version: 1,
                event_type: EventType::PostCreated as i32,
                post: Some(Post {
                    post_id,
                    version: 1,
                    title: format!("seeded post {n} about {}", topic(n)),
                    content: format!("{} {}", topic(n), content(content_bytes, n as u64)),
                    author_name: author(n),
                    created_at: Some(at),
                    updated_at: Some(at),
                    deleted: false,
                }),
                occurred_at: Some(at),
                ..PostEvent::default()
            }
        })
        .collect();
    for batch in events.chunks(BATCH) {
        store.apply_batch(batch).await?;
    }
    // The listing phases search a fully indexed model.
    if let Some(sqlite) = store.as_sqlite() {
        sqlite.settle_search().await?;
    }
    Ok(started.elapsed())
}

/// One listing the phases time.
#[derive(Clone, Copy, Debug)]
enum Listing {
    First,
    FirstByAuthor,
    Keyset,
    KeysetByAuthor,
    Title,
    Content,
}

impl Listing {
    fn name(self) -> &'static str {
        match self {
            Self::First => "first_page",
            Self::FirstByAuthor => "first_page_by_author",
            Self::Keyset => "keyset_pages",
            Self::KeysetByAuthor => "keyset_pages_by_author",
            Self::Title => "title_substring",
            Self::Content => "content_substring",
        }
    }

    fn request(self, n: usize) -> ListPostsRequest {
        let mut request = ListPostsRequest {
            page_size: 20,
            ..ListPostsRequest::default()
        };
        match self {
            Self::First | Self::Keyset => {}
            Self::FirstByAuthor | Self::KeysetByAuthor => request.author_name = author(n),
            Self::Title => request.title = topic(n),
            Self::Content => request.content = topic(n),
        }
        request
    }

    fn keyset(self) -> bool {
        matches!(self, Self::Keyset | Self::KeysetByAuthor)
    }
}

/// ListPosts phases over the seeded read model, each `duration` with
/// `concurrency` in flight: first pages, keyset pages (pages 2 to 5, each
/// timed, following the previous page's token), by author and not, and a
/// title and a content substring (a topic: 1 % of the posts). Per phase its
/// figures, p99 against its target (5 ms for pages, 10 ms for substrings).
/// A keyset phase's rate counts every ListPosts call it made, the first
/// page of each walk included; its latencies are of pages 2 to 5 only.
pub async fn list_phases(channel: Channel, concurrency: usize, duration: Duration) -> (Json, f64) {
    let mut out = serde_json::Map::new();
    let mut total = Samples::default();
    for listing in [
        Listing::First,
        Listing::FirstByAuthor,
        Listing::Keyset,
        Listing::KeysetByAuthor,
        Listing::Title,
        Listing::Content,
    ] {
        let channel = channel.clone();
        let mut samples = closed_loop(concurrency, duration, move |worker, deadline| {
            let mut client = PostQueryClient::new(channel.clone());
            async move {
                let mut samples = Samples::default();
                let mut n = worker * 7919;
                while Instant::now() < deadline {
                    n += 1;
                    let request = listing.request(n);
                    if listing.keyset() {
                        let Ok(first) = client.list_posts(request.clone()).await else {
                            samples.errors += 1;
                            continue;
                        };
                        samples.untimed += 1;
                        let mut token = first.into_inner().next_page_token;
                        for _ in 0..4 {
                            if token.is_empty() {
                                break;
                            }
                            let start = Instant::now();
                            match client
                                .list_posts(ListPostsRequest {
                                    page_token: token.clone(),
                                    ..request.clone()
                                })
                                .await
                            {
                                Ok(page) => {
                                    samples.push(start.elapsed());
                                    token = page.into_inner().next_page_token;
                                }
                                Err(_) => {
                                    samples.errors += 1;
                                    break;
                                }
                            }
                        }
                    } else {
                        let start = Instant::now();
                        match client.list_posts(request).await {
                            Ok(_) => samples.push(start.elapsed()),
                            Err(_) => samples.errors += 1,
                        }
                    }
                }
                samples
            }
        })
        .await;
        let target = match listing {
            Listing::Title | Listing::Content => 10.0,
            _ => 5.0,
        };
        let p99 = samples.quantile_ms(0.99);
        let mut figures = samples.figures();
        if let Some(map) = figures.as_object_mut() {
            map.insert("target_p99_ms".into(), json!(target));
            map.insert("met".into(), json!(samples.count() > 0 && p99 < target));
        }
        crate::progress(&format!("  {} {figures}", listing.name()));
        out.insert(listing.name().into(), figures);
        total.elapsed += samples.elapsed;
        total.merge(samples);
    }
    let rate = total.rate();
    (Json::Object(out), rate)
}

/// Keeps a seeded id range apart from the drain's and the commands'.
pub fn seed_first_id() -> i64 {
    2_000_000_000_000 + (chrono::Utc::now().timestamp() % 1_000_000) * 1_000_000
}
