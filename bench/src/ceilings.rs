//! The ceilings: what the same machine does without postmesh in the way.
//!
//! - raw database: the very transaction command-svc runs for each command
//!   (head row, event row, outbox row; a locked read of the head first for
//!   updates and deletes), as plain prepared statements through sea-orm's
//!   sqlx pool, same pool size, same concurrency, same mix, no gRPC;
//! - raw Redis: pipelined XADD of entries shaped like the outbox's (batches
//!   of 500, as the publisher sends), and XREADGROUP + XACK in batches of
//!   256 (the relay's default);
//! - raw MongoDB: an upsert by `_id` of a post document, one at a time (as
//!   one relay consumer applies) and with the bench's concurrency;
//! - bare tonic: `grpc.health.v1.Health/Check` served by tonic-health from a
//!   tiny server in this process (its own two-thread runtime), over loopback.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use mongodb::bson::{doc, DateTime, Document};
use postmesh_proto::v1::{EventType, Post, PostEvent};
use rand::{rngs::StdRng, SeedableRng};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value,
};

use crate::{
    stats::Samples,
    workload::{content, title, Mix, Op, Owned},
};

/// Runs `concurrency` copies of `worker` until `duration` has passed and merges their samples.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, worker: F) -> Samples
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = Samples> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..concurrency).map(|n| tokio::spawn(worker(n, deadline))).collect();
    let mut all = Samples::default();
    for handle in handles {
        if let Ok(samples) = handle.await {
            all.merge(samples);
        }
    }
    all.elapsed = started.elapsed();
    all
}

// ------------------------------------------------------------------ database

const INSERT_HEAD: &str = "INSERT INTO `post_streams` (`version`, `title`, `content`, `author_name`, `deleted`, \
     `created_at_us`, `updated_at_us`) VALUES (?, ?, ?, ?, ?, ?, ?)";
const SELECT_HEAD: &str = "SELECT `post_id`, `version`, `title`, `content`, `author_name`, `deleted`, \
     `created_at_us`, `updated_at_us` FROM `post_streams` WHERE `post_id` = ? LIMIT 1 FOR UPDATE";
const UPDATE_HEAD: &str = "UPDATE `post_streams` SET `version` = ?, `title` = ?, `content` = ?, `author_name` = ?, \
     `deleted` = ?, `updated_at_us` = ? WHERE `post_id` = ? AND `version` = ?";
const INSERT_EVENT: &str = "INSERT INTO `post_events` (`post_id`, `version`, `event_type`, `title`, `content`, \
     `author_name`, `deleted`, `created_at_us`, `occurred_at_us`, `traceparent`, `tracestate`, `actor`) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_OUTBOX: &str = "INSERT INTO `outbox` (`position`, `created_at_us`) VALUES (?, ?)";

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::MySql, sql, values)
}

/// Opens `url` with command-svc's pool settings and creates its schema.
pub async fn prepare_database(url: &str, pool: u32) -> anyhow::Result<DatabaseConnection> {
    let store = command_svc::store::EventStore::connect(url, pool, Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot open {url}"))?;
    store.migrate().await.context("migrations")?;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(pool)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        // As command-svc: no PING before each transaction.
        .test_before_acquire(false)
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// One command as command-svc's store runs it, in one transaction.
async fn raw_command(
    db: &DatabaseConnection,
    op: Op,
    owned: &Owned,
    title: &str,
    body: &str,
) -> anyhow::Result<(i64, i64)> {
    let now = chrono::Utc::now().timestamp_micros();
    let txn = db.begin().await?;
    let (post_id, version, event_type, deleted) = match op {
        Op::Create => {
            let head = txn
                .execute(stmt(
                    INSERT_HEAD,
                    vec![
                        1i64.into(),
                        title.into(),
                        body.into(),
                        "bench".into(),
                        false.into(),
                        now.into(),
                        now.into(),
                    ],
                ))
                .await?;
            (head.last_insert_id() as i64, 1, EventType::PostCreated, false)
        }
        Op::Update(index) | Op::Delete(index) => {
            let (post_id, version) = owned.posts[index];
            txn.query_one(stmt(SELECT_HEAD, vec![post_id.into()]))
                .await?
                .context("head row missing")?;
            let deleted = matches!(op, Op::Delete(_));
            let updated = txn
                .execute(stmt(
                    UPDATE_HEAD,
                    vec![
                        (version + 1).into(),
                        title.into(),
                        body.into(),
                        "bench".into(),
                        deleted.into(),
                        now.into(),
                        post_id.into(),
                        version.into(),
                    ],
                ))
                .await?;
            anyhow::ensure!(updated.rows_affected() == 1, "lost the version race");
            let kind = if deleted {
                EventType::PostDeleted
            } else {
                EventType::PostUpdated
            };
            (post_id, version + 1, kind, deleted)
        }
    };
    let event = txn
        .execute(stmt(
            INSERT_EVENT,
            vec![
                post_id.into(),
                version.into(),
                event_type.event_name().into(),
                title.into(),
                body.into(),
                "bench".into(),
                deleted.into(),
                now.into(),
                now.into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                "".into(),
                "".into(),
            ],
        ))
        .await?;
    txn.execute(stmt(
        INSERT_OUTBOX,
        vec![(event.last_insert_id() as i64).into(), now.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok((post_id, version))
}

/// Transactions per second of [`raw_command`] at `concurrency`.
pub async fn raw_database(
    db: DatabaseConnection,
    concurrency: usize,
    duration: Duration,
    mix: Mix,
    content_bytes: usize,
) -> Samples {
    let db = Arc::new(db);
    closed_loop(concurrency, duration, |n, deadline| {
        let db = db.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(n as u64);
            let mut owned = Owned::default();
            let mut samples = Samples::default();
            let mut seq = 0;
            while Instant::now() < deadline {
                seq += 1;
                let op = owned.next(mix, &mut rng);
                let (t, c) = (title(n, seq), content(content_bytes, seq));
                let start = Instant::now();
                match raw_command(&db, op, &owned, &t, &c).await {
                    Ok((post_id, version)) => {
                        samples.push(start.elapsed());
                        owned.done(op, post_id, version);
                    }
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        }
    })
    .await
}

/// command-svc's own command path (validation, decide, sea-orm entities)
/// without gRPC or a publisher: splits the gap between the raw ceiling and
/// the service.
pub async fn store_direct(
    url: &str,
    concurrency: usize,
    duration: Duration,
    mix: Mix,
    content_bytes: usize,
) -> Samples {
    use command_svc::{app::Commands, domain, outbox::Handoff};
    let Ok(store) = command_svc::store::EventStore::connect(url, 16, Duration::from_secs(5)).await else {
        return Samples::default();
    };
    if store.migrate().await.is_err() {
        return Samples::default();
    }
    let commands = Commands::new(store, Handoff::unpublished());
    closed_loop(concurrency, duration, |n, deadline| {
        let commands = commands.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(1000 + n as u64);
            let mut owned = Owned::default();
            let mut samples = Samples::default();
            let meta = command_svc::store::EventMeta::default();
            let mut seq = 0;
            while Instant::now() < deadline {
                seq += 1;
                let op = owned.next(mix, &mut rng);
                let command = match op {
                    Op::Create => domain::validate_create(title(n, seq), content(content_bytes, seq), "bench".into()),
                    Op::Update(i) => domain::validate_update(
                        owned.posts[i].0,
                        owned.posts[i].1,
                        Some(title(n, seq)),
                        Some(content(content_bytes, seq)),
                        None,
                    ),
                    Op::Delete(i) => domain::validate_delete(owned.posts[i].0, owned.posts[i].1),
                };
                let Ok(command) = command else {
                    samples.errors += 1;
                    continue;
                };
                let start = Instant::now();
                match commands.execute(&command, &meta, None).await {
                    Ok(appended) => {
                        samples.push(start.elapsed());
                        owned.done(op, appended.post_id.get(), appended.version);
                    }
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        }
    })
    .await
}

// ------------------------------------------------------------------ events

/// A PostEvent like command-svc's for post `post_id` at `version`.
pub fn event(post_id: i64, version: i64, content_bytes: usize) -> PostEvent {
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    let event_type = if version == 1 {
        EventType::PostCreated
    } else {
        EventType::PostUpdated
    };
    PostEvent {
        position: post_id * 10 + version,
        post_id,
        version,
        event_type: event_type as i32,
        post: Some(Post {
            post_id,
            version,
            title: title(0, version as u64),
            content: content(content_bytes, version as u64),
            author_name: "bench".into(),
            created_at: Some(now),
            updated_at: Some(now),
            deleted: false,
        }),
        occurred_at: Some(now),
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        tracestate: String::new(),
        actor: String::new(),
    }
}

/// The stream entry command-svc's outbox writes for `event`.
pub fn xadd(stream: &str, event: &PostEvent) -> redis::Cmd {
    postmesh_events::entry::xadd(stream, event, &event.traceparent, "")
}

/// Events for `posts` posts with `versions` versions each, version-major
/// (every post's v1, then every v2, ...), ids from `first_id`.
pub fn backlog(first_id: i64, posts: i64, versions: i64, content_bytes: usize) -> Vec<PostEvent> {
    let mut events = Vec::with_capacity((posts * versions) as usize);
    for version in 1..=versions {
        for n in 0..posts {
            events.push(event(first_id + n, version, content_bytes));
        }
    }
    events
}

/// Pipelines `events` onto `stream` in batches of `batch`; entries per second.
pub async fn pipelined_xadd(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    events: &[PostEvent],
    batch: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        let mut pipe = redis::pipe();
        for event in chunk {
            pipe.add_command(xadd(stream, event)).ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

/// Raw Redis: XADD rate (pipelines of 500) and XREADGROUP + XACK rate
/// (batches of 256), over `count` outbox-shaped entries on a scratch stream.
pub async fn raw_redis(url: &str, stream: &str, count: usize, content_bytes: usize) -> anyhow::Result<(f64, f64)> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let events = backlog(1, count as i64, 1, content_bytes);
    let xadd_rate = pipelined_xadd(&mut conn, stream, &events, 500).await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("bench")
        .arg("0")
        .query_async(&mut conn)
        .await?;
    let started = Instant::now();
    let mut read = 0;
    loop {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("bench")
            .arg("c1")
            .arg("COUNT")
            .arg(256)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids.into_iter().map(|i| i.id))
            .collect();
        if ids.is_empty() {
            break;
        }
        read += ids.len();
        let _: i64 = redis::cmd("XACK")
            .arg(stream)
            .arg("bench")
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
    }
    let read_rate = read as f64 / started.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL").arg(stream).query_async(&mut conn).await?;
    Ok((xadd_rate, read_rate))
}

// ------------------------------------------------------------------ MongoDB

fn post_doc(post_id: i64, version: i64, body: &str) -> Document {
    let now = DateTime::now();
    doc! {
        "post_id": post_id,
        "version": version,
        "title": title(0, version as u64),
        "content": body,
        "author_name": "bench",
        "created_at": now,
        "updated_at": now,
        "deleted": false,
    }
}

/// An upsert by `_id` of a post document like the read model's, on a scratch
/// collection with the read model's unique `post_id` index: ops per second
/// one at a time, and with `concurrency` in flight.
pub async fn raw_mongo(
    url: &str,
    database: &str,
    concurrency: usize,
    duration: Duration,
    content_bytes: usize,
    ferretdb_sqlite_dir: Option<&str>,
) -> anyhow::Result<(Samples, Samples)> {
    let client = mongodb::Client::with_uri_str(url).await?;
    let db = client.database(database);
    let posts = db.collection::<Document>("posts");
    posts
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "post_id": 1 })
                .options(mongodb::options::IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await?;
    if let Some(dir) = ferretdb_sqlite_dir {
        ferretdb_id_index(dir, database)?;
    }
    let body = Arc::new(content(content_bytes, 0));
    let run = |concurrency: usize, base: i64| {
        let posts = posts.clone();
        let body = body.clone();
        closed_loop(concurrency, duration, move |n, deadline| {
            let posts = posts.clone();
            let body = body.clone();
            async move {
                let mut samples = Samples::default();
                let mut i: i64 = 0;
                while Instant::now() < deadline {
                    // Like a backlog: new posts, then newer versions of them.
                    let post_id = base + (n as i64) * 10_000_000 + i % 2000;
                    let version = i / 2000 + 1;
                    i += 1;
                    let start = Instant::now();
                    // An upsert by primary key, as the store writes `posts`.
                    let mut document = post_doc(post_id, version, &body);
                    document.insert("_id", post_id.to_string());
                    let result = posts
                        .replace_one(doc! { "_id": post_id.to_string() }, document)
                        .upsert(true)
                        .await;
                    match result {
                        Ok(_) => samples.push(start.elapsed()),
                        Err(_) => samples.errors += 1,
                    }
                }
                samples
            }
        })
    };
    let sequential = run(1, 1).await;
    let concurrent = run(concurrency, 1_000_000_000).await;
    let _ = db.drop().await;
    Ok((sequential, concurrent))
}

// ------------------------------------------------------------------ tonic

/// A bare tonic server (tonic-health) on its own two-thread runtime in its
/// own OS thread; returns its address and a guard that stops it.
pub fn echo_server() -> anyhow::Result<(std::net::SocketAddr, EchoGuard)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let (_reporter, service) = tonic_health::server::health_reporter();
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tokio_stream_wrap(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Ok((
        addr,
        EchoGuard {
            stop: Some(stop),
            thread: Some(thread),
        },
    ))
}

fn tokio_stream_wrap(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// Stops the echo server when dropped.
pub struct EchoGuard {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Health/Check calls per second against the echo server, one channel as
/// the bench's other phases use.
pub async fn echo(addr: std::net::SocketAddr, concurrency: usize, duration: Duration) -> anyhow::Result<Samples> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(closed_loop(concurrency, duration, |_, deadline| {
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline {
                let start = Instant::now();
                match client.check(tonic_health::pb::HealthCheckRequest::default()).await {
                    Ok(_) => samples.push(start.elapsed()),
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        }
    })
    .await)
}

/// Latency of one-document reads on the read model after the drain: by the
/// string `_id` the store uses, and by `post_id` as a filter (what the store
/// did before). On FerretDB 1.24/SQLite only the first is pushed down to an
/// index; the second reads the whole collection. Returns (by_id,
/// by_post_id, the number of posts).
pub async fn point_reads(
    url: &str,
    database: &str,
    post_ids: &[i64],
    rounds: usize,
) -> anyhow::Result<(Samples, Samples, u64)> {
    let client = mongodb::Client::with_uri_str(url).await?;
    let posts = client.database(database).collection::<Document>("posts");
    let count = posts.estimated_document_count().await?;
    let mut by_id = Samples::default();
    let mut by_post_id = Samples::default();
    for (i, post_id) in post_ids.iter().cycle().take(rounds).enumerate() {
        let start = Instant::now();
        posts.find_one(doc! { "_id": post_id.to_string() }).await?;
        by_id.push(start.elapsed());
        if i < rounds / 10 + 1 {
            let start = Instant::now();
            posts.find_one(doc! { "post_id": post_id }).await?;
            by_post_id.push(start.elapsed());
        }
    }
    Ok((by_id, by_post_id, count))
}

/// FerretDB 1.24's SQLite backend creates the `_id` index on
/// `_ferretdb_sjson->"_id"` but queries `_ferretdb_sjson->'$._id'`; SQLite
/// matches expression indexes by their text, so no read ever uses an index
/// and every `{_id: ...}` lookup scans the table. This adds an index on the
/// expression the queries use, in every collection of `database`, with the
/// sqlite3 shell on FerretDB's file (FerretDB does not see extra SQLite
/// indexes; its data is unchanged). Returns the tables indexed.
pub fn ferretdb_id_index(sqlite_dir: &str, database: &str) -> anyhow::Result<Vec<String>> {
    let file = std::path::Path::new(sqlite_dir).join(format!("{database}.sqlite"));
    anyhow::ensure!(file.exists(), "{} does not exist", file.display());
    let output = std::process::Command::new("sqlite3")
        .arg(&file)
        .arg("SELECT table_name FROM _ferretdb_collections")
        .output()
        .context("the sqlite3 shell is needed for the FerretDB index workaround")?;
    anyhow::ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tables: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
        .collect();
    for table in &tables {
        let sql = format!(
            "PRAGMA busy_timeout = 10000; CREATE INDEX IF NOT EXISTS \"{table}_pm_id_path\" ON \"{table}\" (_ferretdb_sjson->'$._id');"
        );
        let status = std::process::Command::new("sqlite3").arg(&file).arg(sql).output()?;
        anyhow::ensure!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    }
    Ok(tables)
}

// ------------------------------------------------------------ batched store

/// The group committer's own statements without it, gRPC or the domain's
/// queue: batches of `batch` commands of the mix, decided up front, appended
/// through command-svc's store writer one transaction per batch, back to
/// back (heads locked and read, the counter, one multi-row statement per
/// table, COMMIT). What group commit could do at most with `batch` commands
/// in flight on this database; each command's latency is its batch's.
pub async fn raw_batched(url: &str, batch: usize, duration: Duration, mix: Mix, content_bytes: usize) -> Samples {
    use command_svc::{
        domain,
        store::{EventMeta, EventStore, ToAppend},
    };
    let mut samples = Samples::default();
    let Ok(store) = EventStore::connect(url, 2, Duration::from_secs(5)).await else {
        return samples;
    };
    if store.migrate().await.is_err() {
        return samples;
    }
    let mut rng = StdRng::seed_from_u64(99);
    let mut owned = Owned::default();
    let mut states = std::collections::HashMap::new();
    let started = Instant::now();
    let deadline = started + duration;
    let mut seq = 0;
    while Instant::now() < deadline {
        let start = Instant::now();
        let now_us = chrono::Utc::now().timestamp_micros();
        let mut ops = Vec::with_capacity(batch);
        let mut appends = Vec::with_capacity(batch);
        let mut touched = Vec::new();
        for _ in 0..batch {
            seq += 1;
            let mut op = owned.next(mix, &mut rng);
            // One command per post per batch, so each decision stands alone.
            if let Op::Update(i) | Op::Delete(i) = op {
                if touched.contains(&owned.posts[i].0) {
                    op = Op::Create;
                }
            }
            let command = match op {
                Op::Create => domain::validate_create(title(0, seq), content(content_bytes, seq), "bench".into()),
                Op::Update(i) => domain::validate_update(
                    owned.posts[i].0,
                    owned.posts[i].1,
                    Some(title(0, seq)),
                    Some(content(content_bytes, seq)),
                    None,
                ),
                Op::Delete(i) => domain::validate_delete(owned.posts[i].0, owned.posts[i].1),
            };
            let Ok(command) = command else { continue };
            let current = command.post_id().and_then(|id| states.get(&id));
            let Ok(decision) = domain::decide(current, &command, now_us) else {
                continue;
            };
            if let Some(id) = command.post_id() {
                touched.push(id.get());
            }
            ops.push(op);
            appends.push(ToAppend {
                decision,
                meta: EventMeta::default(),
                idempotency: None,
            });
        }
        let ids: Vec<_> = appends.iter().filter_map(|a| a.decision.post_id).collect();
        let result = async {
            let writer = store.writer().await.ok()?;
            writer.heads(&ids).await.ok()?;
            let recorded = writer.append(appends.clone()).await.ok()?;
            writer.commit().await.ok()?;
            Some(recorded)
        }
        .await;
        let Some(recorded) = result else {
            samples.errors += 1;
            continue;
        };
        let elapsed = start.elapsed();
        let mut answers: Vec<_> = ops
            .into_iter()
            .zip(appends)
            .zip(recorded)
            .map(|((op, append), recorded)| {
                let post_id = recorded.appended.post_id;
                states.insert(post_id, append.decision.state);
                samples.push(elapsed);
                (op, post_id.get(), recorded.appended.version)
            })
            .collect();
        // Deletes last, highest index first: each removal then leaves the
        // indices the others refer to in place.
        answers.sort_by_key(|(op, _, _)| match op {
            Op::Delete(index) => (1, usize::MAX - index),
            Op::Create | Op::Update(_) => (0, 0),
        });
        for (op, post_id, version) in answers {
            owned.done(op, post_id, version);
        }
    }
    samples.elapsed = started.elapsed();
    samples
}
