//! Lossless by construction (#14): the read model checks itself against the
//! event store. Each scenario drives a steady load of commands at real
//! processes, makes Redis lose what it holds (or rebuilds under load), and
//! ends, as the fault suite does, by comparing the event store with the read
//! model post by post and version by version, history included, within the
//! catch-up's bound.
//!
//! The relays run their catch-up every second (`CATCH_UP_INTERVAL_MS`) and
//! trim every second, so the suite stays short; the bound checked is the
//! default one, 30 s. Each scenario prints its figures (posts, events, time
//! to converge after the load stopped) for the CI log. One at a time
//! (`faults::serial`); needs `cargo build --workspace --bins` first.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use postmesh_read_model::{ReadModelStore, ReadStore};
use postmesh_tests::{
    faults::{assert_settled, command_svc, dlq_len, event_relay_catching_up, serial},
    load::{Ledger, Load, LoadOptions},
    mesh::Names,
    redis,
    servers::{free_port, RedisProc},
    services::{bin, ServiceProc},
    stream_len, Backend, ReadBackend, TestDatabase,
};

/// The catch-up's default bound: anything committed is in the read model
/// this long after the load stops (the outbox drained), whatever Redis lost.
const BOUND: Duration = Duration::from_secs(30);
/// Start-up of a debug binary, migrations included.
const START: Duration = Duration::from_secs(30);
/// How long the load runs on each side of the fault.
const ACKED_AROUND_FAULT: u64 = 120;

/// Prints what a scenario saw.
fn report(name: &str, ledger: &Ledger, events: usize, converged: Duration, caught_up: &str) {
    let posts: std::collections::BTreeSet<i64> = ledger.acked.iter().map(|a| a.post_id).collect();
    eprintln!(
        "[lossless] {name}: {} posts, {} commands acknowledged, {events} events, converged {:.1} s after the load \
         stopped; {caught_up}",
        posts.len(),
        ledger.acked.len(),
        converged.as_secs_f64()
    );
}

/// What the relay's log says the catch-up applied (its "catch-up applied"
/// lines, summed).
fn caught_up(relay: &ServiceProc) -> String {
    let logs = relay.logs();
    let applied: u64 = logs
        .lines()
        .filter(|l| l.contains("catch-up applied events the read model lacked"))
        .filter_map(|l| {
            let at = l.find("\"applied\":")? + "\"applied\":".len();
            l[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum();
    format!("the catch-up applied {applied} events Redis had lost")
}

/// command-svc on `database_url`, a relay catching up from it, both healthy,
/// and the read model they fill.
async fn mesh(database_url: &str, redis_url: &str, names: &Names) -> (ServiceProc, ServiceProc, ReadStore) {
    let mut command = command_svc(free_port(), database_url, redis_url, names);
    command.wait_healthy(START).await;
    let mut relay = event_relay_catching_up(
        free_port(),
        redis_url,
        &names.read_store.url,
        names,
        "relay-1",
        &command.endpoint(),
    );
    relay.wait_healthy(START).await;
    (command, relay, names.read_store.connect().await)
}

/// command-svc on MariaDB and a catching-up relay on a private Redis
/// without persistence; the load runs, `fault` strikes, the load runs on;
/// then everything acknowledged is in the read model within the bound, and
/// the catch-up applied some of it (what Redis lost).
async fn redis_loses_entries_mid_load<F, Fut>(name: &str, fault: F)
where
    F: FnOnce(RedisProc, Names) -> Fut,
    Fut: std::future::Future<Output = RedisProc>,
{
    let _serial = serial().await;
    let names = Names::fresh();
    let redis_proc = RedisProc::start().await;
    let db = TestDatabase::create(Backend::Mysql).await;
    let (command, relay, store) = mesh(&db.url, &redis_proc.url(), &names).await;

    let load = Load::start(&command.endpoint(), LoadOptions::default());
    assert!(
        load.wait_more_acked(ACKED_AROUND_FAULT, BOUND).await,
        "the load gets going"
    );
    // The relay falls behind (frozen for 2 s, the stream filling), so the
    // fault takes entries it has not applied yet.
    relay.signal("STOP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let redis_proc = fault(redis_proc, names.clone()).await;
    relay.signal("CONT");
    assert!(
        load.wait_more_acked(ACKED_AROUND_FAULT, BOUND * 2).await,
        "the load goes on"
    );
    let ledger = load.stop().await;
    let stopped = Instant::now();
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, BOUND).await;
    let converged = stopped.elapsed();
    assert!(converged <= BOUND, "converged within the bound: {converged:?}");
    assert_eq!(dlq_len(&redis_proc.url(), &names).await, 0);
    assert!(!relay.logs().contains("panicked"), "{}", relay.logs());
    let repaired = caught_up(&relay);
    assert!(
        !repaired.contains(" 0 events"),
        "Redis lost nothing the relay needed: {repaired}"
    );
    report(name, &ledger, events, converged, &repaired);
    command.terminate();
    relay.terminate();
    drop(redis_proc);
}

/// Redis is shut down without saving (SIGKILL, no persistence) and started
/// again with empty data, mid-load: the stream, the consumer group and the
/// entries not yet projected are gone. The relay recreates the group, the
/// outbox publishes what comes next, and the catch-up applies the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_load_loses_nothing() {
    redis_loses_entries_mid_load("Redis restarted empty", |mut redis_proc, _| async move {
        redis_proc.restart().await;
        redis_proc
    })
    .await;
}

/// FLUSHALL mid-load: the same loss, with Redis up throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_mid_load_loses_nothing() {
    redis_loses_entries_mid_load("FLUSHALL", |redis_proc, _| async move {
        let mut conn = redis(&redis_proc.url()).await;
        redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
        redis_proc
    })
    .await;
}

/// The stream is trimmed to its last three entries mid-load, while the
/// relay holds some pending: they are gone from the stream, counted and
/// logged as such, and the catch-up applies their events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_trimmed_to_a_few_entries_mid_load_loses_nothing() {
    redis_loses_entries_mid_load("stream trimmed to 3", |redis_proc, names| async move {
        let mut conn = redis(&redis_proc.url()).await;
        let before = stream_len(&redis_proc.url(), &names.stream).await;
        redis::cmd("XTRIM")
            .arg(&names.stream)
            .arg("MAXLEN")
            .arg(3)
            .query_async::<u64>(&mut conn)
            .await
            .unwrap();
        eprintln!("[lossless] trimmed the stream from {before} entries to 3");
        redis_proc
    })
    .await;
}

/// The load runs at least this long before the rebuild begins...
const LOAD_BEFORE_REBUILD: Duration = Duration::from_secs(5);
/// ...and at least this long after it ended.
const LOAD_AFTER_REBUILD: Duration = Duration::from_secs(8);

/// What a rebuild scenario runs on.
#[derive(Clone, Copy, Debug)]
struct RebuildOn {
    /// The event store command-svc writes.
    events: Backend,
    /// The read model the relay fills and the rebuild swaps.
    read: ReadBackend,
    /// 2 ms of latency between command-svc and MariaDB (a TCP proxy; the
    /// SQLite event store has no TCP, so none there).
    latency: bool,
    /// Hold the load at least [`LOAD_BEFORE_REBUILD`] and
    /// [`LOAD_AFTER_REBUILD`] around the rebuild. Not on FerretDB: it
    /// applies a few hundred events a second at best (it scans collections,
    /// docs/performance.md), so a longer load leaves it a backlog that takes
    /// most of the bound to drain, which says nothing about the rebuild.
    sustained: bool,
}

/// `event-relay rebuild` while writers run: with latency injected between
/// command-svc and MariaDB, transactions overlap and commit out of the order
/// they began in. The rebuild reads to the log's complete_through, swaps in
/// (FerretDB: two renames, with the live relay writing; SQLite: one
/// transaction), and the catch-up fills the rest. Nothing is lost, the
/// history is complete, and the read model was never near-empty.
async fn rebuild_under_load_loses_nothing(name: &str, on: RebuildOn) {
    let _serial = serial().await;
    let names = Names::on(on.read);
    let db = TestDatabase::create(on.events).await;
    let proxy = if on.latency {
        assert!(matches!(on.events, Backend::Mysql), "latency needs a TCP event store");
        Some(postmesh_tests::proxy::TcpProxy::start(&mariadb_addr(&db.url)).await)
    } else {
        None
    };
    let command_url = proxy.as_ref().map_or_else(
        || db.url.clone(),
        |proxy| db.url.replacen(&mariadb_addr(&db.url), &proxy.addr.to_string(), 1),
    );
    let redis_url = postmesh_tests::redis_url();
    let (command, relay, store) = mesh(&command_url, &redis_url, &names).await;
    if let Some(proxy) = &proxy {
        proxy.set_delay(Duration::from_millis(2));
    }
    let load = Load::start(
        &command.endpoint(),
        LoadOptions {
            workers: 8,
            interval: Duration::from_millis(5),
            ..LoadOptions::default()
        },
    );
    let load_started = Instant::now();
    assert!(load.wait_more_acked(300, BOUND * 2).await, "the load gets going");
    // However fast the stores (SQLite is), the load runs as long as on
    // MariaDB with latency, on each side of the rebuild.
    if on.sustained {
        tokio::time::sleep_until((load_started + LOAD_BEFORE_REBUILD).into()).await;
    }
    // Watch the live model's size while the rebuild runs: never near-empty.
    let watching = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut smallest = usize::MAX;
            loop {
                if let Ok(posts) = store.all_posts().await {
                    smallest = smallest.min(posts.len());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                if smallest == 0 {
                    return smallest;
                }
            }
        })
    };
    let posts_before = store.all_posts().await.unwrap().len();
    let rebuild = tokio::process::Command::new(bin("event-relay"))
        .arg("rebuild")
        .env("COMMAND_ENDPOINT", command.endpoint())
        .env("REDIS_URL", &redis_url)
        .env("STREAM_NAME", &names.stream)
        .env("READ_STORE_URL", &names.read_store.url)
        .env("READ_STORE_DATABASE", &names.database)
        .env("NOTIFY_CHANNEL", &names.channel)
        .env("LOG_FORMAT", "json")
        .output()
        .await
        .unwrap();
    let rebuild_out = String::from_utf8_lossy(&rebuild.stdout).into_owned();
    assert!(
        rebuild.status.success(),
        "{rebuild_out}{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    let rebuilt = Instant::now();
    assert!(
        load.wait_more_acked(150, BOUND * 2).await,
        "the load goes on after the rebuild"
    );
    if on.sustained {
        tokio::time::sleep_until((rebuilt + LOAD_AFTER_REBUILD).into()).await;
    }
    watching.abort();
    let smallest = watching.await.unwrap_or(usize::MAX);
    let ledger = load.stop().await;
    let stopped = Instant::now();
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, BOUND).await;
    let converged = stopped.elapsed();
    assert_ne!(smallest, 0, "the read model was empty during the rebuild");
    assert_eq!(dlq_len(&redis_url, &names).await, 0);
    assert!(store.checkpoint().await.unwrap() > 0);
    eprintln!(
        "[lossless] rebuild: {} ({posts_before} posts in the model when it began)",
        rebuild_out.trim()
    );
    report(name, &ledger, events, converged, &caught_up(&relay));
    command.terminate();
    relay.terminate();
    drop(proxy);
}

/// MariaDB +2 ms, FerretDB read model: the store whose swap has a gap a live
/// writer can fall into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_under_load_on_mariadb_with_latency_loses_nothing() {
    rebuild_under_load_loses_nothing(
        "rebuild under load, MariaDB +2 ms, FerretDB read model",
        RebuildOn {
            events: Backend::Mysql,
            read: ReadBackend::Mongo,
            latency: true,
            sustained: false,
        },
    )
    .await;
}

/// MariaDB +2 ms, the SQLite read model (the default store: its swap is one
/// transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_under_load_on_mariadb_with_latency_and_sqlite_read_model_loses_nothing() {
    rebuild_under_load_loses_nothing(
        "rebuild under load, MariaDB +2 ms, SQLite read model",
        RebuildOn {
            events: Backend::Mysql,
            read: ReadBackend::Sqlite,
            latency: true,
            sustained: true,
        },
    )
    .await;
}

/// The SQLite event store and the SQLite read model (the embedded default;
/// no proxy: SQLite has no TCP, its commits are serialized by its one writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_under_load_on_sqlite_loses_nothing() {
    rebuild_under_load_loses_nothing(
        "rebuild under load, SQLite event store, SQLite read model",
        RebuildOn {
            events: Backend::Sqlite,
            read: ReadBackend::Sqlite,
            latency: false,
            sustained: true,
        },
    )
    .await;
}

/// host:port of a mysql:// URL.
fn mariadb_addr(url: &str) -> String {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_at.split('/').next().unwrap_or(after_at).to_owned()
}

/// A minute of steady load: the relay trims the stream to what the group has
/// acknowledged, so its length and Redis's memory stay bounded while the
/// events grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_steady_load_keeps_the_stream_and_redis_memory_bounded() {
    let _serial = serial().await;
    let names = Names::fresh();
    let redis_proc = RedisProc::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let (command, relay, store) = mesh(&db.url, &redis_proc.url(), &names).await;
    let mut conn = redis(&redis_proc.url()).await;
    let used_memory = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let load = Load::start(&command.endpoint(), LoadOptions::default());
    let started = Instant::now();
    let mut samples: Vec<(f64, usize, u64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let length = stream_len(&redis_proc.url(), &names.stream).await;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
        samples.push((started.elapsed().as_secs_f64(), length, used_memory(info)));
    }
    let ledger = load.stop().await;
    let stopped = Instant::now();
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, BOUND).await;
    let converged = stopped.elapsed();
    let longest = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let memory_after_20s = samples.iter().find(|s| s.0 >= 20.0).map_or(0, |s| s.2);
    let memory_at_end = samples.last().map_or(0, |s| s.2);
    eprintln!("[lossless] steady load: (s, XLEN, used_memory) {samples:?}");
    report(
        "a minute of steady load",
        &ledger,
        events,
        converged,
        &caught_up(&relay),
    );
    // Every event went through the stream; the stream kept only a tail.
    assert!(events > 1000, "{events} events: the load ran");
    assert!(
        longest < 1000 && longest * 4 < events,
        "the stream stays short: at most {longest} entries of {events} events"
    );
    assert!(
        memory_at_end < memory_after_20s + 4 * 1024 * 1024,
        "Redis memory stays flat: {memory_after_20s} bytes after 20 s, {memory_at_end} at the end"
    );
    command.terminate();
    relay.terminate();
}
