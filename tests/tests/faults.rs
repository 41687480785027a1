//! The fault suite: each scenario drives a steady load of commands (see
//! `postmesh_tests::load`) at real processes while something breaks, lets
//! the mesh settle, and then compares the event store with the read model
//! post by post and version by version, the event store with every answer the
//! load was given, and the event store's tables with each other: nothing
//! lost, nothing extra, no post behind its last event, nothing half-applied,
//! and the dead-letter stream empty unless the scenario puts poison in it.
//!
//! command-svc and event-relay run as real processes (SIGKILL is real).
//! Redis, FerretDB and MariaDB outages use servers of the test's own, so the
//! tests sharing the main servers are unaffected. Every wait is on a
//! condition; the 15-second outages are the only fixed sleeps, because they
//! are the scenario.
//!
//! The scenarios take one lock (`faults::serial`) and so run one at a time,
//! whatever `--test-threads` says: about two minutes in all on two cores.
//! Needs `cargo build --workspace --bins` first (scripts/test.sh does it).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use postmesh_proto::v1::{
    post_command_client::PostCommandClient, post_query_client::PostQueryClient, CreatePostRequest, DeletePostRequest,
    GetPostHistoryRequest, GetPostRequest, ListPostsRequest, ReadAllRequest, ReadPostRequest, UpdatePostRequest,
    WatchPostsRequest,
};
use postmesh_read_model::ReadStore;
use postmesh_tests::{
    faults::{assert_settled, command_svc, dlq_len, event_relay, pending_of, query_svc, serial},
    load::{outbox_len, Ledger, Load, LoadOptions},
    mariadb::MariaDbProc,
    mesh::Names,
    redis, redis_url,
    servers::{free_port, FerretProc, RedisProc},
    services::{health, ServiceProc},
    stream_entries, wait_until,
    wire::{self, pb},
    Backend, ReadBackend, TestDatabase, TestReadStore,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Longest any settle may take; every wait returns as soon as its condition holds.
const SETTLE: Duration = Duration::from_secs(120);
/// Start-up of a debug binary, migrations included.
const START: Duration = Duration::from_secs(30);
/// The length of the Redis and FerretDB outages.
const OUTAGE: Duration = Duration::from_secs(15);

/// Prints what a scenario saw, for the CI log.
fn report(name: &str, started: Instant, ledger: &Ledger, events: usize) {
    eprintln!(
        "[faults] {name}: {} commands acknowledged ({} retried), {events} events, failed attempts by code {:?}, {:.1} s",
        ledger.acked.len(),
        ledger.retried(),
        ledger.failure_codes(),
        started.elapsed().as_secs_f64()
    );
}

/// command-svc and one event-relay ("relay-1") on `names`, both healthy, and
/// the read model they fill (`names.read_store`).
async fn command_and_relay(
    database_url: &str,
    redis_url: &str,
    names: &Names,
) -> (ServiceProc, ServiceProc, ReadStore) {
    let mut command = command_svc(free_port(), database_url, redis_url, names);
    command.wait_healthy(START).await;
    let mut relay = event_relay(free_port(), redis_url, &names.read_store.url, names, "relay-1");
    relay.wait_healthy(START).await;
    (command, relay, names.read_store.connect().await)
}

/// command-svc is SIGKILLed three times while commands flow, and restarted
/// each time on the same port. Commands in flight at a kill fail with a
/// transport error and are retried with their idempotency key: each is
/// applied exactly once, and events committed but not yet published before a
/// kill are published by the restarted process's outbox poller.
///
/// On both event stores: with the group committer a kill lands on a batch
/// in flight, which either committed whole or left nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_svc_killed_three_times_under_load_loses_and_duplicates_nothing() {
    killed_three_times(Backend::Mysql).await;
}

/// As above, on the embedded SQLite event store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_svc_on_sqlite_killed_three_times_under_load_loses_and_duplicates_nothing() {
    killed_three_times(Backend::Sqlite).await;
}

async fn killed_three_times(backend: Backend) {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::fresh();
    let db = TestDatabase::create(backend).await;
    let port = free_port();
    let mut command = command_svc(port, &db.url, &redis_url(), &names);
    command.wait_healthy(START).await;
    let mut relay = event_relay(free_port(), &redis_url(), &names.read_store.url, &names, "relay-1");
    relay.wait_healthy(START).await;
    let store = names.read_store.connect().await;

    // Busy workers, so that a kill usually lands on commands in flight.
    let load = Load::start(
        &command.endpoint(),
        LoadOptions {
            workers: 6,
            interval: Duration::from_millis(10),
            ..LoadOptions::default()
        },
    );
    assert!(load.wait_more_acked(100, SETTLE).await, "the load gets going");
    let mut replays = 0;
    for kill in 1..=3 {
        let before = Instant::now();
        command.kill();
        // The load notices: its next attempts fail.
        assert!(
            wait_until(SETTLE, || async { load.failures().iter().any(|f| f.at >= before) }).await,
            "kill {kill}: commands fail while command-svc is down"
        );
        command = command_svc(port, &db.url, &redis_url(), &names);
        command.wait_healthy(START).await;
        assert!(
            load.wait_more_acked(100, SETTLE).await,
            "kill {kill}: commands succeed again after the restart"
        );
        // Retries of commands that had committed before the kill are
        // answered from their idempotency key (logged as replayed).
        replays += command.logs().matches(r#""replayed":true"#).count();
    }
    let ledger = load.stop().await;
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, SETTLE).await;
    assert!(ledger.retried() > 0, "some commands were in flight at a kill");
    for failure in &ledger.failures {
        assert!(
            matches!(failure.code, Code::Unavailable | Code::Unknown | Code::Cancelled),
            "only transport errors while command-svc is down: {failure:?}"
        );
    }
    assert_eq!(dlq_len(&redis_url(), &names).await, 0);
    assert!(!relay.logs().contains("panicked"), "{}", relay.logs());
    relay.terminate();
    eprintln!(
        "[faults] command-svc SIGKILL: {replays} retried commands had committed before the kill (idempotent replays)"
    );
    report(
        &format!("command-svc SIGKILL x3 ({backend:?})"),
        started,
        &ledger,
        events,
    );
}

/// #14: MariaDB freezes (SIGSTOP) for 2 s under load while commands carry
/// short deadlines, so callers give up on commands whose batch is in flight
/// or still queued. One command-svc, never restarted: every command that
/// committed is published (no outbox row is left behind), every
/// acknowledged one is in the log once, and none is half-applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_abandoned_while_mariadb_is_frozen_leave_no_outbox_row_behind() {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::fresh();
    let mariadb = MariaDbProc::start().await;
    let database_url = mariadb.create_database("events").await;
    let (command, relay, store) = command_and_relay(&database_url, &redis_url(), &names).await;
    let load = Load::start(
        &command.endpoint(),
        LoadOptions {
            workers: 6,
            interval: Duration::from_millis(10),
            attempt_timeout: Duration::from_millis(250),
            ..LoadOptions::default()
        },
    );
    assert!(load.wait_more_acked(100, SETTLE).await, "the load gets going");
    let paused_at = Instant::now();
    mariadb.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    mariadb.resume();
    // The client's deadline surfaces as CANCELLED (tonic's timeout) or DEADLINE_EXCEEDED.
    let gave_up: Vec<Code> = load
        .failures()
        .iter()
        .filter(|f| f.at >= paused_at)
        .map(|f| f.code)
        .collect();
    assert!(
        gave_up
            .iter()
            .any(|code| matches!(code, Code::Cancelled | Code::DeadlineExceeded)),
        "callers gave up while MariaDB was frozen: {gave_up:?}"
    );
    assert!(load.wait_more_acked(100, SETTLE).await, "commands succeed again");
    let ledger = load.stop().await;
    // The outbox must drain by itself: no row may stay claimed by a handoff
    // that never runs (command-svc is not restarted).
    let events = assert_settled(&command.endpoint(), &database_url, &store, &ledger, SETTLE).await;
    assert_eq!(dlq_len(&redis_url(), &names).await, 0);
    assert!(!command.logs().contains("panicked"), "{}", command.logs());
    relay.terminate();
    report("MariaDB SIGSTOP 2 s, 250 ms deadlines", started, &ledger, events);
}

/// Redis is SIGKILLed, kept down for 15 s and restarted (with its
/// append-only file, as a production Redis runs). Commands keep succeeding
/// throughout: they only need the database; their events wait in the outbox
/// and are published once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_of_15_seconds_keeps_commands_succeeding_and_the_outbox_drains_after() {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::fresh();
    let mut redis_proc = RedisProc::start_durable().await;
    let db = TestDatabase::create(Backend::Mysql).await;
    let (command, relay, store) = command_and_relay(&db.url, &redis_proc.url(), &names).await;

    let load = Load::start(&command.endpoint(), LoadOptions::default());
    assert!(load.wait_more_acked(40, SETTLE).await);
    let down_at = Instant::now();
    let acked_at_kill = load.acked();
    redis_proc.stop();
    tokio::time::sleep(OUTAGE).await; // the outage itself
    let during = load.acked() - acked_at_kill;
    let backlog = outbox_len(&db.url).await.unwrap_or(0);
    redis_proc.restart().await;
    assert!(
        during >= 50,
        "commands kept succeeding during the outage ({during} acknowledged)"
    );
    assert!(backlog > 0, "events waited in the outbox during the outage");
    assert!(
        load.failures().iter().all(|f| f.at < down_at),
        "no command failed because Redis was down: {:?}",
        load.failures()
    );
    assert!(load.wait_more_acked(40, SETTLE).await);
    let ledger = load.stop().await;
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, SETTLE).await;
    assert_eq!(dlq_len(&redis_proc.url(), &names).await, 0);
    assert!(
        command.logs().contains("outbox publishing recovered"),
        "{}",
        command.logs()
    );
    command.terminate();
    relay.terminate();
    eprintln!("[faults] redis outage: {during} commands acknowledged while Redis was down, outbox backlog {backlog}");
    report("Redis down 15 s", started, &ledger, events);
}

/// FerretDB (the read model) is SIGKILLed, kept down for 15 s and restarted
/// with its data. Commands keep succeeding; the relay reports NOT_SERVING,
/// holds its place in the stream, and catches up afterwards without
/// dead-lettering anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ferretdb_outage_of_15_seconds_under_load_loses_nothing() {
    let _serial = serial().await;
    let started = Instant::now();
    let mut ferret = FerretProc::start().await;
    let names = Names::with(TestReadStore::on_mongo(&ferret.url()));
    let db = TestDatabase::create(Backend::Mysql).await;
    let (command, mut relay, store) = command_and_relay(&db.url, &redis_url(), &names).await;

    let load = Load::start(&command.endpoint(), LoadOptions::default());
    assert!(load.wait_more_acked(40, SETTLE).await);
    let acked_at_kill = load.acked();
    ferret.stop();
    let outage = Instant::now();
    let endpoint = relay.endpoint();
    let not_serving = wait_until(OUTAGE, || {
        let endpoint = endpoint.clone();
        async move { health(&endpoint, "").await == Some(ServingStatus::NotServing) }
    })
    .await;
    assert!(not_serving, "the relay reports NOT_SERVING while its store is down");
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await; // the rest of the outage
    let during = load.acked() - acked_at_kill;
    ferret.restart().await;
    assert!(during >= 50, "commands kept succeeding ({during} acknowledged)");
    assert!(load.wait_more_acked(40, SETTLE).await);
    let ledger = load.stop().await;
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, SETTLE).await;
    assert!(ledger.failures.is_empty(), "{:?}", ledger.failures);
    assert_eq!(dlq_len(&redis_url(), &names).await, 0, "an outage never fills the DLQ");
    relay.wait_healthy(START).await;
    command.terminate();
    relay.terminate();
    report("FerretDB down 15 s", started, &ledger, events);
}

/// Another process holds the SQLite read model's write lock for 10 s under
/// load (as a stuck writer or a backup would). The relay's batches fail as
/// outages once `busy_timeout` passes: it pauses and retries, dead-letters
/// nothing, and catches up after; query-svc keeps answering reads from the
/// same file meanwhile (WAL: readers never wait for the writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_read_model_locked_for_10_seconds_under_load_loses_nothing() {
    use postmesh_read_model::ReadModelStore;
    use sea_orm::sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection, Executor};
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::fresh();
    let db = TestDatabase::create(Backend::Mysql).await;
    let (command, relay, store) = command_and_relay(&db.url, &redis_url(), &names).await;
    let query_port = free_port();
    let mut query = query_svc(query_port, &redis_url(), &names.read_store.url, &names);
    query.wait_healthy(START).await;

    let load = Load::start(&command.endpoint(), LoadOptions::default());
    assert!(load.wait_more_acked(40, SETTLE).await);
    assert!(
        wait_until(SETTLE, || async {
            store.all_posts().await.is_ok_and(|p| !p.is_empty())
        })
        .await
    );
    let first = store.all_posts().await.unwrap()[0].post_id;
    let file = store.as_sqlite().unwrap().file().to_owned();
    let mut holder = SqliteConnectOptions::new().filename(&file).connect().await.unwrap();
    holder.execute("BEGIN IMMEDIATE").await.unwrap();
    let locked_at = Instant::now();
    let acked_at_lock = load.acked();
    let mut reads = PostQueryClient::connect(format!("http://127.0.0.1:{query_port}"))
        .await
        .unwrap();
    let mut served = 0;
    while locked_at.elapsed() < Duration::from_secs(10) {
        let post = reads
            .get_post(GetPostRequest {
                post_id: first,
                ..GetPostRequest::default()
            })
            .await;
        // An answer either way: the load deletes posts too, the first among them.
        let answered = match &post {
            Ok(_) => true,
            Err(status) => status.code() == Code::NotFound,
        };
        assert!(answered, "reads go on while the writer is locked out: {post:?}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paused = relay.logs().contains("read store unreachable; pausing consumption");
    holder.execute("ROLLBACK").await.unwrap();
    holder.close().await.unwrap();
    assert!(paused, "the relay paused on the locked file:\n{}", relay.logs());
    let during = load.acked() - acked_at_lock;
    assert!(during >= 30, "commands kept succeeding ({during} acknowledged)");
    assert!(load.wait_more_acked(40, SETTLE).await);
    let ledger = load.stop().await;
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, SETTLE).await;
    assert!(ledger.failures.is_empty(), "{:?}", ledger.failures);
    assert_eq!(
        dlq_len(&redis_url(), &names).await,
        0,
        "a locked file never fills the DLQ"
    );
    command.terminate();
    relay.terminate();
    query.terminate();
    eprintln!("[faults] sqlite locked: {during} commands acknowledged and {served} reads served while locked");
    report("SQLite read model locked 10 s", started, &ledger, events);
}

/// Two relays share the consumer group; one is SIGKILLed while it holds
/// entries it has read but not acknowledged (checked in XPENDING before and
/// after the kill). The survivor claims them with XAUTOCLAIM and the read
/// model still converges. Two writers of one read model: run on SQLite (two
/// processes on one file) and on FerretDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_relays_killed_mid_batch_loses_nothing() {
    one_of_two_relays_killed_mid_batch(ReadBackend::Sqlite).await;
}

/// The same with the read model on FerretDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_relays_killed_mid_batch_loses_nothing_on_ferretdb() {
    one_of_two_relays_killed_mid_batch(ReadBackend::Mongo).await;
}

async fn one_of_two_relays_killed_mid_batch(backend: ReadBackend) {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::on(backend);
    let db = TestDatabase::create(Backend::Mysql).await;
    let mut command = command_svc(free_port(), &db.url, &redis_url(), &names);
    command.wait_healthy(START).await;
    let mut a = event_relay(free_port(), &redis_url(), &names.read_store.url, &names, "relay-a");
    let mut b = event_relay(free_port(), &redis_url(), &names.read_store.url, &names, "relay-b");
    a.wait_healthy(START).await;
    b.wait_healthy(START).await;
    let store = names.read_store.connect().await;

    let load = Load::start(
        &command.endpoint(),
        LoadOptions {
            workers: 4,
            interval: Duration::from_millis(20),
            ..LoadOptions::default()
        },
    );
    assert!(load.wait_more_acked(40, SETTLE).await);
    // Kill A the moment it holds unacknowledged entries; if it acked them in
    // the instant between the look and the kill, start it again and retry.
    let mut orphaned = 0;
    for _attempt in 0..20 {
        let holding = wait_until(SETTLE, || async {
            pending_of(&redis_url(), &names.stream, "relay-a").await > 0
        })
        .await;
        assert!(holding, "relay A takes part:\n{}", a.logs());
        a.kill();
        orphaned = pending_of(&redis_url(), &names.stream, "relay-a").await;
        if orphaned > 0 {
            break;
        }
        a = event_relay(free_port(), &redis_url(), &names.read_store.url, &names, "relay-a");
        a.wait_healthy(START).await;
    }
    assert!(orphaned > 0, "relay A was never caught holding a batch");
    assert!(load.wait_more_acked(100, SETTLE).await);
    let ledger = load.stop().await;
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, SETTLE).await;
    let claimed = wait_until(SETTLE, || async {
        pending_of(&redis_url(), &names.stream, "relay-a").await == 0
    })
    .await;
    assert!(claimed, "relay B claimed what A left pending");
    // B logs the claim just after Redis moved the entries: wait for the line.
    let logged = wait_until(SETTLE, || async { b.logs().contains("claimed idle pending entries") }).await;
    assert!(logged, "{}", b.logs());
    assert_eq!(dlq_len(&redis_url(), &names).await, 0);
    command.terminate();
    b.terminate();
    eprintln!("[faults] relay SIGKILL: relay A died holding {orphaned} unacknowledged entries");
    report(
        &format!("relay SIGKILL mid-batch ({backend:?})"),
        started,
        &ledger,
        events,
    );
}

/// A MariaDB of the test's own is SIGKILLed under load and restarted (InnoDB
/// crash recovery included). While it is down every command fails with
/// UNAVAILABLE and none succeeds; afterwards they succeed again, and the
/// event store holds exactly the acknowledged commands (the load retries each
/// failed one with its idempotency key), with no head row, outbox row or
/// idempotency key from a transaction that did not commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_restart_under_load_answers_unavailable_and_half_applies_nothing() {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::fresh();
    let mut mariadb = MariaDbProc::start().await;
    let database_url = mariadb.create_database("events").await;
    let (command, relay, store) = command_and_relay(&database_url, &redis_url(), &names).await;

    let load = Load::start(&command.endpoint(), LoadOptions::default());
    assert!(load.wait_more_acked(40, SETTLE).await);
    let down_at = Instant::now();
    mariadb.kill();
    // Every worker is refused at least a few times...
    assert!(
        load.wait_failures(Code::Unavailable, 12, down_at, SETTLE).await,
        "commands fail with UNAVAILABLE while MariaDB is down: {:?}",
        load.failures()
    );
    // ...and nothing succeeds meanwhile (the snapshot is taken once every
    // worker has seen the outage, so no answer from before it is in flight).
    let acked_down = load.acked();
    assert!(load.wait_failures(Code::Unavailable, 24, down_at, SETTLE).await);
    assert_eq!(load.acked(), acked_down, "no command succeeds while MariaDB is down");
    let up_at = Instant::now();
    mariadb.restart().await;
    assert!(
        load.wait_more_acked(60, SETTLE).await,
        "commands succeed again after the restart"
    );
    let ledger = load.stop().await;
    let outage: Vec<_> = ledger
        .failures
        .iter()
        .filter(|f| f.at >= down_at && f.at < up_at)
        .collect();
    assert!(
        outage.iter().all(|f| f.code == Code::Unavailable),
        "every failure during the outage is UNAVAILABLE: {outage:#?}"
    );
    let events = assert_settled(&command.endpoint(), &database_url, &store, &ledger, SETTLE).await;
    assert_eq!(dlq_len(&redis_url(), &names).await, 0);
    command.terminate();
    relay.terminate();
    eprintln!("[faults] mariadb restart: {} failed attempts while down", outage.len());
    report("MariaDB SIGKILL + restart", started, &ledger, events);
}

/// While commands flow, entries already in the stream are copied back onto
/// it by hand, newest first and some twice: the relay sees duplicates and
/// versions out of order, and the version gate keeps the read model equal to
/// the event store. The version gate is the read store's: run on SQLite and
/// on FerretDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_reordered_entries_injected_under_load_converge() {
    duplicate_and_reordered_entries_injected(ReadBackend::Sqlite).await;
}

/// The same with the read model on FerretDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_reordered_entries_injected_under_load_converge_on_ferretdb() {
    duplicate_and_reordered_entries_injected(ReadBackend::Mongo).await;
}

async fn duplicate_and_reordered_entries_injected(backend: ReadBackend) {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::on(backend);
    let db = TestDatabase::create(Backend::Mysql).await;
    let (command, relay, store) = command_and_relay(&db.url, &redis_url(), &names).await;

    let load = Load::start(&command.endpoint(), LoadOptions::default());
    assert!(load.wait_more_acked(40, SETTLE).await);
    let mut conn = redis(&redis_url()).await;
    let mut injected = 0;
    for round in 0..20 {
        assert!(load.wait_more_acked(10, SETTLE).await);
        let entries = stream_entries(&redis_url(), &names.stream).await;
        let recent: Vec<_> = entries.iter().rev().take(15).collect();
        let copies = if round % 3 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            // Newest first: every post's versions arrive in reverse.
            for (_, fields) in &recent {
                let mut cmd = ::redis::cmd("XADD");
                cmd.arg(&names.stream).arg("*");
                for (k, v) in fields.iter() {
                    cmd.arg(k).arg(v.as_slice());
                }
                let _: String = cmd.query_async(&mut conn).await.unwrap();
                injected += 1;
            }
        }
    }
    let ledger = load.stop().await;
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, SETTLE).await;
    let stale = wait_until(SETTLE, || async {
        relay
            .logged("events applied")
            .iter()
            .any(|batch| batch["stale"].as_u64() > Some(0))
    })
    .await;
    assert!(stale, "the relay saw (and ignored) older versions");
    assert_eq!(dlq_len(&redis_url(), &names).await, 0);
    command.terminate();
    relay.terminate();
    eprintln!("[faults] duplicates: {injected} entries injected");
    report(
        &format!("duplicates + reordering ({backend:?})"),
        started,
        &ledger,
        events,
    );
}

/// Poison entries (not protobuf, no event field, a PostEvent that describes
/// no post, another message type) land in the stream between real events.
/// Each goes to the dead-letter stream at once, without retries, and every
/// real event flows past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_under_load_are_dead_lettered_and_the_rest_flow() {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::fresh();
    let db = TestDatabase::create(Backend::Mysql).await;
    let (command, relay, store) = command_and_relay(&db.url, &redis_url(), &names).await;

    let load = Load::start(&command.endpoint(), LoadOptions::default());
    assert!(load.wait_more_acked(40, SETTLE).await);
    let poisons: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![
            ("post_id", b"42".to_vec()),
            ("event", b"\xff\xfe not protobuf".to_vec()),
        ],
        vec![("note", b"no event field at all".to_vec())],
        // Decodes, but describes no post: post_id 0, no state.
        vec![("event", [pb::int(3, 1)].concat())],
        // A field of the wrong wire type.
        vec![("event", pb::bytes(2, b"not a number"))],
        // Truncated: the length says more than there is.
        vec![("event", vec![0x2a, 0x7f, 0x08])],
        vec![("event", Vec::new())],
    ];
    let mut conn = redis(&redis_url()).await;
    for poison in &poisons {
        assert!(load.wait_more_acked(10, SETTLE).await);
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(&names.stream).arg("*");
        for (k, v) in poison {
            cmd.arg(*k).arg(v.as_slice());
        }
        let _: String = cmd.query_async(&mut conn).await.unwrap();
    }
    assert!(load.wait_more_acked(40, SETTLE).await);
    let ledger = load.stop().await;
    let events = assert_settled(&command.endpoint(), &db.url, &store, &ledger, SETTLE).await;
    assert!(
        wait_until(SETTLE, || async {
            dlq_len(&redis_url(), &names).await == poisons.len()
        })
        .await,
        "each poison entry is dead-lettered once (DLQ has {})",
        dlq_len(&redis_url(), &names).await
    );
    let logs = relay.logs();
    assert_eq!(logs.matches("undecodable entry; dead-lettering").count(), poisons.len());
    assert!(!logs.contains("event apply failed"), "poison is not retried");
    let letters = stream_entries(&redis_url(), &format!("{}.dlq", names.stream)).await;
    assert!(letters.iter().all(|(_, f)| f.contains_key("dlq_error")));
    command.terminate();
    relay.terminate();
    report("poison entries", started, &ledger, events);
}

// ------------------------------------------------------------------ bad input

/// What a bad request may be answered with: a clean rejection, or success
/// when the odd value is in fact valid. Never UNKNOWN, UNAVAILABLE or a
/// dropped connection. INTERNAL only where `internal_ok`: tonic answers an
/// undecodable protobuf body with INTERNAL, as grpc-go and grpc-java do.
fn acceptable(code: Code, internal_ok: bool) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::Unimplemented
    ) || (internal_ok && code == Code::Internal)
}

/// label, method, path, headers, body.
type H2Case<'a> = (String, &'a str, String, Vec<(&'a str, &'a str)>, Option<Vec<u8>>);

struct Sweep {
    command: tonic::transport::Channel,
    query: tonic::transport::Channel,
    relay: tonic::transport::Channel,
    post_id: i64,
    requests: usize,
    problems: Vec<String>,
}

impl Sweep {
    fn check(&mut self, what: &str, result: Result<(), tonic::Status>, internal_ok: bool) {
        self.requests += 1;
        let code = result.err().map_or(Code::Ok, |s| s.code());
        if !acceptable(code, internal_ok) {
            self.problems.push(format!("{what}: {code:?}"));
        }
    }

    fn expect(&mut self, what: &str, result: Result<(), tonic::Status>, want: Code) {
        self.requests += 1;
        let code = result.as_ref().err().map_or(Code::Ok, |s| s.code());
        if code != want {
            self.problems
                .push(format!("{what}: {code:?} (wanted {want:?}) {:?}", result.err()));
        }
    }

    /// A good request to each server must succeed.
    async fn all_answer(&mut self, after: &str) {
        let mut commands = PostCommandClient::new(self.command.clone());
        if let Err(status) = commands.create_post(good_create("still up")).await {
            self.problems
                .push(format!("after {after}: command-svc CreatePost {status:?}"));
        }
        let mut queries = PostQueryClient::new(self.query.clone());
        let get = GetPostRequest {
            post_id: self.post_id,
            ..Default::default()
        };
        if let Err(status) = queries.get_post(get).await {
            self.problems
                .push(format!("after {after}: query-svc GetPost {status:?}"));
        }
        let mut relay = tonic_health::pb::health_client::HealthClient::new(self.relay.clone());
        if let Err(status) = relay.check(tonic_health::pb::HealthCheckRequest::default()).await {
            self.problems
                .push(format!("after {after}: event-relay health {status:?}"));
        }
    }
}

fn good_create(title: &str) -> CreatePostRequest {
    CreatePostRequest {
        title: title.into(),
        content: "body".into(),
        author_name: "sweeper".into(),
        idempotency_key: String::new(),
    }
}

/// Text that looks like an operator, a query, markup or a path somewhere.
const OPERATOR_LIKE: &[&str] = &[
    r#"{"$gt": ""}"#,
    "$where",
    "$ne",
    "'; DROP TABLE post_events; --",
    "\" OR \"1\"=\"1",
    "%",
    "_",
    ".*",
    "(a+)+$",
    "\\",
    "${jndi:ldap://example.invalid/a}",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "\u{202e}gnp.exe",
    "😀🏳️‍🌈",
    "a\u{0301}\u{0301}\u{0301}",
    "line\nbreak\ttab",
    "\u{feff}bom",
];

fn string_values(max_chars: usize) -> Vec<(String, String)> {
    let mut values = vec![
        ("empty".to_owned(), String::new()),
        ("blank".to_owned(), "   \t ".to_owned()),
        ("one over the limit".to_owned(), "x".repeat(max_chars + 1)),
        ("multi-byte, over the limit".to_owned(), "é".repeat(max_chars + 1)),
        ("1 MiB".to_owned(), "y".repeat(1024 * 1024)),
        ("NUL".to_owned(), "nul\0inside".to_owned()),
    ];
    for op in OPERATOR_LIKE {
        values.push((format!("operator-like {op:?}"), (*op).to_owned()));
    }
    values
}

const INTS: &[i64] = &[0, -1, i64::MIN, i64::MAX, i32::MAX as i64 + 1];

/// Every unary and streaming method, with its request field numbers.
const METHODS: &[(&str, bool, &[u32])] = &[
    ("/posts.v1.PostCommand/CreatePost", false, &[1, 2, 3, 4]),
    ("/posts.v1.PostCommand/UpdatePost", false, &[1, 2, 3, 4, 5, 6]),
    ("/posts.v1.PostCommand/DeletePost", false, &[1, 2, 3]),
    ("/posts.v1.EventStore/ReadAll", true, &[1, 2]),
    ("/posts.v1.EventStore/ReadPost", true, &[1]),
    ("/posts.v1.PostQuery/GetPost", false, &[1, 2, 3]),
    ("/posts.v1.PostQuery/ListPosts", false, &[1, 2, 3, 4, 5, 6]),
    ("/posts.v1.PostQuery/GetPostHistory", false, &[1]),
    ("/posts.v1.PostQuery/WatchPosts", true, &[1, 2]),
    ("/grpc.health.v1.Health/Check", false, &[1]),
];

/// Bodies that are not a valid message of any of the methods above.
fn invalid_protobuf() -> Vec<(&'static str, Vec<u8>)> {
    let mut nested = Vec::new();
    for _ in 0..200 {
        nested = pb::bytes(15, &nested);
    }
    vec![
        (
            "random bytes",
            (0..512u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
        ("truncated varint", vec![0x08, 0xff, 0xff]),
        ("length beyond the body", vec![0x0a, 0x7f, b'a']),
        ("field number 0", vec![0x00, 0x01]),
        ("wire type 6", vec![0x0e, 0x01]),
        ("start group never ended", vec![0x0b, 0x08, 0x01]),
        ("unmatched end group", vec![0x0c]),
        (
            "ten-byte varint overflow",
            vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
        ("200 nested unknown messages", nested),
        ("JSON", br#"{"title":"json","post_id":1}"#.to_vec()),
    ]
}

/// Every field of every rpc, with empty, oversized, wrong-type and
/// operator-like values, invalid protobuf bodies, HTTP/2 requests that are
/// not gRPC, and raw garbage on every port: each request gets a clean answer,
/// every server stays up and answers the next good request, and odd but
/// valid text (operators, NUL, emoji, markup) survives the whole mesh
/// byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_field_and_port_is_refused_and_every_server_stays_up() {
    let _serial = serial().await;
    let started = Instant::now();
    let names = Names::fresh();
    let db = TestDatabase::create(Backend::Mysql).await;
    let (command_port, query_port, relay_port) = (free_port(), free_port(), free_port());
    let metrics_ports = [free_port(), free_port(), free_port()];
    let mut command = ServiceProc::spawn(
        "command-svc",
        command_port,
        &[],
        &[
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{command_port}")),
            ("COMMAND_DATABASE_URL", db.url.clone()),
            ("REDIS_URL", redis_url()),
            ("STREAM_NAME", names.stream.clone()),
            ("METRICS_ADDR", format!("127.0.0.1:{}", metrics_ports[0])),
        ],
    );
    let mut query = ServiceProc::spawn(
        "query-svc",
        query_port,
        &[],
        &[
            ("QUERY_LISTEN_ADDR", format!("127.0.0.1:{query_port}")),
            ("REDIS_URL", redis_url()),
            ("READ_STORE_URL", names.read_store.url.clone()),
            ("READ_STORE_DATABASE", names.database.clone()),
            ("NOTIFY_CHANNEL", names.channel.clone()),
            ("METRICS_ADDR", format!("127.0.0.1:{}", metrics_ports[1])),
        ],
    );
    let mut relay = ServiceProc::spawn(
        "event-relay",
        relay_port,
        &[],
        &[
            ("RELAY_HEALTH_ADDR", format!("127.0.0.1:{relay_port}")),
            ("REDIS_URL", redis_url()),
            ("STREAM_NAME", names.stream.clone()),
            ("READ_STORE_URL", names.read_store.url.clone()),
            ("READ_STORE_DATABASE", names.database.clone()),
            ("NOTIFY_CHANNEL", names.channel.clone()),
            ("METRICS_ADDR", format!("127.0.0.1:{}", metrics_ports[2])),
        ],
    );
    command.wait_healthy(START).await;
    query.wait_healthy(START).await;
    relay.wait_healthy(START).await;
    let channel = |port: u16| {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    };
    let mut commands = PostCommandClient::new(channel(command_port)).max_encoding_message_size(64 << 20);
    let mut queries = PostQueryClient::new(channel(query_port)).max_encoding_message_size(64 << 20);
    let reply = commands.create_post(good_create("anchor")).await.unwrap().into_inner();
    let mut sweep = Sweep {
        command: channel(command_port),
        query: channel(query_port),
        relay: channel(relay_port),
        post_id: reply.post_id,
        requests: 0,
        problems: Vec::new(),
    };
    // The anchor must be readable before the good-request checks use it.
    queries
        .get_post(GetPostRequest {
            post_id: reply.post_id,
            min_version: 1,
            include_deleted: false,
        })
        .await
        .unwrap();

    // 1. String fields of the commands: empty, blank and oversized are
    //    INVALID_ARGUMENT naming the field; other odd text is stored as is.
    let mut accepted = Vec::new();
    for (field, max) in [
        ("title", 200),
        ("content", 100_000),
        ("author_name", 100),
        ("idempotency_key", 200),
    ] {
        for (label, value) in string_values(max) {
            let mut create = good_create("sweep");
            let mut update = UpdatePostRequest {
                post_id: sweep.post_id,
                title: Some("sweep".into()),
                ..Default::default()
            };
            match field {
                "title" => {
                    create.title = value.clone();
                    update.title = Some(value.clone());
                }
                "content" => {
                    create.content = value.clone();
                    update.content = Some(value.clone());
                }
                "author_name" => {
                    create.author_name = value.clone();
                    update.author_name = Some(value.clone());
                }
                _ => {
                    create.idempotency_key = value.clone();
                    update.idempotency_key = value.clone();
                }
            }
            let too_long = value.len() > max && (field == "content" || value.chars().count() > max);
            let must_refuse = (field != "idempotency_key" && value.trim().is_empty()) || too_long;
            let what = format!("CreatePost.{field} {label}");
            match commands.create_post(create.clone()).await {
                Ok(reply) if !must_refuse => accepted.push((field, value.clone(), reply.into_inner().post_id)),
                Ok(_) => sweep.problems.push(format!("{what}: accepted")),
                Err(status) if must_refuse => {
                    let named = tonic_types::StatusExt::get_details_bad_request(&status)
                        .is_some_and(|b| b.field_violations.iter().any(|v| v.field == field));
                    if status.code() != Code::InvalidArgument || !named {
                        sweep.problems.push(format!("{what}: {status:?}"));
                    }
                }
                Err(status) => sweep.problems.push(format!("{what}: refused {status:?}")),
            }
            sweep.requests += 1;
            let result = commands.update_post(update).await.map(|_| ());
            sweep.check(&format!("UpdatePost.{field} {label}"), result, false);
            if field == "idempotency_key" {
                let result = commands
                    .delete_post(DeletePostRequest {
                        post_id: i64::MAX,
                        expected_version: 0,
                        idempotency_key: value.clone(),
                    })
                    .await
                    .map(|_| ());
                sweep.check(&format!("DeletePost.idempotency_key {label}"), result, false);
            }
        }
        sweep.all_answer(&format!("the {field} sweep")).await;
    }

    // 2. Integer fields of every rpc.
    for &n in INTS {
        let label = |rpc: &str| format!("{rpc} = {n}");
        let r = commands
            .update_post(UpdatePostRequest {
                post_id: n,
                expected_version: n,
                title: Some("t".into()),
                ..Default::default()
            })
            .await
            .map(|_| ());
        sweep.check(&label("UpdatePost.post_id/expected_version"), r, false);
        let r = commands
            .delete_post(DeletePostRequest {
                post_id: n,
                expected_version: n,
                idempotency_key: String::new(),
            })
            .await
            .map(|_| ());
        sweep.check(&label("DeletePost.post_id/expected_version"), r, false);
        let mut events = postmesh_proto::v1::event_store_client::EventStoreClient::new(sweep.command.clone());
        let r = match events
            .read_all(ReadAllRequest {
                from_position: n,
                max_count: n,
            })
            .await
        {
            Ok(stream) => drain(stream.into_inner()).await,
            Err(status) => Err(status),
        };
        sweep.check(&label("ReadAll.from_position/max_count"), r, false);
        let r = match events.read_post(ReadPostRequest { post_id: n }).await {
            Ok(stream) => drain(stream.into_inner()).await,
            Err(status) => Err(status),
        };
        sweep.check(&label("ReadPost.post_id"), r, false);
        let mut get = tonic::Request::new(GetPostRequest {
            post_id: n,
            min_version: n,
            include_deleted: true,
        });
        get.set_timeout(Duration::from_secs(2));
        let r = queries.get_post(get).await.map(|_| ());
        // A min_version nothing has reached is "not caught up yet": UNAVAILABLE
        // once the wait (bounded by the deadline) is over.
        let want = if n > 0 {
            Code::Unavailable
        } else {
            Code::InvalidArgument
        };
        sweep.expect(&label("GetPost.post_id/min_version"), r, want);
        let r = queries
            .get_post_history(GetPostHistoryRequest { post_id: n })
            .await
            .map(|_| ());
        sweep.check(&label("GetPostHistory.post_id"), r, false);
        let r = queries
            .list_posts(ListPostsRequest {
                page_size: n as i32,
                ..Default::default()
            })
            .await
            .map(|_| ());
        sweep.check(&label("ListPosts.page_size (as i32)"), r, false);
        let r = match queries
            .watch_posts(WatchPostsRequest {
                post_id: Some(n),
                author_name: None,
            })
            .await
        {
            Ok(_) if n <= 0 => Err(tonic::Status::unknown("a watch on a non-positive id was accepted")),
            Ok(_) => Ok(()),
            Err(status) => Err(status),
        };
        sweep.check(&label("WatchPosts.post_id"), r, false);
    }
    for page_size in [i32::MIN, -1, 101, i32::MAX] {
        let r = queries
            .list_posts(ListPostsRequest {
                page_size,
                ..Default::default()
            })
            .await
            .map(|_| ());
        sweep.expect(&format!("ListPosts.page_size = {page_size}"), r, Code::InvalidArgument);
    }
    sweep.all_answer("the integer sweep").await;

    // 3. Query string fields: filters, page tokens, watch filters.
    for (label, value) in string_values(1000) {
        for field in ["author_name", "title", "content", "page_token"] {
            let mut request = ListPostsRequest::default();
            match field {
                "author_name" => request.author_name = value.clone(),
                "title" => request.title = value.clone(),
                "content" => request.content = value.clone(),
                _ => request.page_token = value.clone(),
            }
            let r = queries.list_posts(request).await;
            if field != "page_token" && OPERATOR_LIKE.contains(&value.as_str()) {
                // A filter is literal text: an operator never matches everything.
                if let Ok(page) = &r {
                    let leaked: Vec<_> = page
                        .get_ref()
                        .posts
                        .iter()
                        .filter(|p| {
                            let text = match field {
                                "author_name" => &p.author_name,
                                "title" => &p.title,
                                _ => &p.content,
                            };
                            !text.to_lowercase().contains(&value.to_lowercase())
                        })
                        .map(|p| p.post_id)
                        .collect();
                    if !leaked.is_empty() {
                        sweep.problems.push(format!(
                            "ListPosts.{field} {label} matched posts without it: {leaked:?}"
                        ));
                    }
                }
            }
            sweep.check(&format!("ListPosts.{field} {label}"), r.map(|_| ()), false);
        }
        let r = match queries
            .watch_posts(WatchPostsRequest {
                post_id: None,
                author_name: Some(value.clone()),
            })
            .await
        {
            Ok(_) if value.is_empty() => Err(tonic::Status::unknown("empty author filter accepted")),
            Ok(_) => Ok(()),
            Err(status) => Err(status),
        };
        sweep.check(&format!("WatchPosts.author_name {label}"), r, false);
        let mut health = tonic_health::pb::health_client::HealthClient::new(sweep.relay.clone());
        for (who, mut client) in [
            ("event-relay", health.clone()),
            (
                "command-svc",
                tonic_health::pb::health_client::HealthClient::new(sweep.command.clone()),
            ),
            (
                "query-svc",
                tonic_health::pb::health_client::HealthClient::new(sweep.query.clone()),
            ),
        ] {
            let r = client
                .check(tonic_health::pb::HealthCheckRequest { service: value.clone() })
                .await
                .map(|_| ());
            let expected_ok = value.is_empty();
            if expected_ok {
                sweep.check(&format!("{who} Health.Check.service {label}"), r, false);
            } else {
                sweep.expect(&format!("{who} Health.Check.service {label}"), r, Code::NotFound);
            }
        }
        let _ = health.check(tonic_health::pb::HealthCheckRequest::default()).await;
    }
    sweep.all_answer("the query string sweep").await;

    // 4. Wrong wire types, invalid UTF-8 and invalid protobuf on every method.
    for &(path, streaming, fields) in METHODS {
        let channel = if path.contains("PostQuery") {
            sweep.query.clone()
        } else if path.contains("Health") {
            sweep.relay.clone()
        } else {
            sweep.command.clone()
        };
        let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();
        for &field in fields {
            // Numbers far above any post id: a body that happens to be a
            // valid request must not change the posts the sweep checks.
            bodies.push((format!("field {field} as a varint"), pb::int(field, 1 << 60)));
            bodies.push((format!("field {field} as bytes"), pb::bytes(field, b"seven")));
            bodies.push((format!("field {field} as fixed64"), pb::fixed64(field, 1 << 60)));
            bodies.push((
                format!("field {field} invalid UTF-8"),
                pb::bytes(field, b"\xc3\x28\xff"),
            ));
        }
        bodies.push(("unknown field 99".into(), pb::bytes(99, b"whatever")));
        for (label, body) in invalid_protobuf() {
            bodies.push((label.to_owned(), body));
        }
        for (label, body) in bodies {
            let status = if streaming {
                let status = wire::raw_streaming(&channel, path, body, 5).await;
                if status.code() == Code::Ok {
                    Ok(())
                } else {
                    Err(status)
                }
            } else {
                wire::raw_unary(&channel, path, body).await.map(|_| ())
            };
            sweep.check(&format!("{path} {label}"), status, true);
        }
        sweep.all_answer(&format!("raw bodies to {path}")).await;
    }

    // 5. HTTP/2 requests that are not well-formed gRPC calls.
    for (port, service) in [
        (command_port, "posts.v1.PostCommand/CreatePost"),
        (query_port, "posts.v1.PostQuery/GetPost"),
        (relay_port, "grpc.health.v1.Health/Check"),
    ] {
        let addr = format!("127.0.0.1:{port}");
        let path = format!("/{service}");
        let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
        let cases: Vec<H2Case> = vec![
            ("GET /".into(), "GET", "/".into(), vec![], None),
            ("GET the method path".into(), "GET", path.clone(), vec![], None),
            (
                "POST as JSON".into(),
                "POST",
                path.clone(),
                vec![("content-type", "application/json")],
                Some(b"{}".to_vec()),
            ),
            (
                "POST as text".into(),
                "POST",
                path.clone(),
                vec![("content-type", "text/plain")],
                Some(b"hello".to_vec()),
            ),
            (
                "unknown method".into(),
                "POST",
                "/nope.v1.Nope/Nothing".into(),
                grpc.to_vec(),
                Some(vec![0, 0, 0, 0, 0]),
            ),
            (
                "path traversal".into(),
                "POST",
                "/../../etc/passwd".into(),
                grpc.to_vec(),
                Some(vec![0, 0, 0, 0, 0]),
            ),
            (
                "compressed flag without encoding".into(),
                "POST",
                path.clone(),
                grpc.to_vec(),
                Some(vec![1, 0, 0, 0, 2, 8, 1]),
            ),
            (
                "unsupported grpc-encoding".into(),
                "POST",
                path.clone(),
                [grpc.as_slice(), &[("grpc-encoding", "gzip")]].concat(),
                Some(vec![1, 0, 0, 0, 2, 8, 1]),
            ),
            (
                "frame length beyond the body".into(),
                "POST",
                path.clone(),
                grpc.to_vec(),
                Some(vec![0, 0, 0, 3, 0xe8, 8, 1]),
            ),
            (
                "frame length of 4 GiB".into(),
                "POST",
                path.clone(),
                grpc.to_vec(),
                Some(vec![0, 0xff, 0xff, 0xff, 0xff]),
            ),
            (
                "two messages to a unary method".into(),
                "POST",
                path.clone(),
                grpc.to_vec(),
                Some(vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            ),
            (
                "half a frame header".into(),
                "POST",
                path.clone(),
                grpc.to_vec(),
                Some(vec![0, 0]),
            ),
            (
                "garbage grpc-timeout".into(),
                "POST",
                path.clone(),
                [grpc.as_slice(), &[("grpc-timeout", "99999999999H")]].concat(),
                Some(vec![0, 0, 0, 0, 0]),
            ),
        ];
        for (label, method, path, headers, body) in cases {
            sweep.requests += 1;
            // Any HTTP answer is fine, and so is a reset stream or a closed
            // connection (what matters is the next good request); a gRPC
            // status, if sent, must be a clean rejection.
            if let Ok((status, Some(grpc_status))) = wire::h2_request(&addr, method, &path, &headers, body).await {
                let code = grpc_status.parse::<i32>().map_or(Code::Unknown, Code::from);
                if !acceptable(code, true) {
                    sweep
                        .problems
                        .push(format!("h2 {label} on {port}: HTTP {status}, grpc-status {code:?}"));
                }
            }
        }
        sweep.all_answer(&format!("HTTP/2 non-gRPC requests on {port}")).await;
    }

    // 6. Raw garbage on every port: the three gRPC ports and the three metrics ports.
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("1 KiB of noise", (0..1024u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect()),
        ("HTTP/1.1 GET", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("HTTP/1.1 upgrade to h2c", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".to_vec()),
        ("TLS ClientHello", vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]),
        ("64 KiB of NUL", vec![0; 64 * 1024]),
        ("preface then noise", [wire::H2_PREFACE, b"\x00\x00\x04\xff\xff\xff\xff\xff\xff\xffnoise"].concat()),
        ("preface then a 16 MiB DATA frame header", [wire::H2_PREFACE, &[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]].concat()),
        ("preface then SETTINGS of bad length", [wire::H2_PREFACE, &wire::h2_frame(4, 0, 0, &[1, 2, 3])].concat()),
        ("preface then HEADERS with broken HPACK", [wire::H2_PREFACE, &wire::h2_frame(4, 0, 0, &[]), &wire::h2_frame(1, 5, 1, &[0xff, 0xff, 0xff, 0xff, 0x7f])].concat()),
        ("preface then DATA on stream 0", [wire::H2_PREFACE, &wire::h2_frame(4, 0, 0, &[]), &wire::h2_frame(0, 1, 0, b"data")].concat()),
        ("half a preface", wire::H2_PREFACE[..10].to_vec()),
    ];
    let ports: Vec<(u16, &str)> = vec![
        (command_port, "command-svc gRPC"),
        (query_port, "query-svc gRPC"),
        (relay_port, "event-relay health"),
        (metrics_ports[0], "command-svc metrics"),
        (metrics_ports[1], "query-svc metrics"),
        (metrics_ports[2], "event-relay metrics"),
    ];
    for (port, what) in &ports {
        for (label, junk) in &garbage {
            sweep.requests += 1;
            let addr = format!("127.0.0.1:{port}");
            if let Err(error) = wire::poke(&addr, junk, Duration::from_millis(300)).await {
                sweep
                    .problems
                    .push(format!("{what}: cannot connect for {label}: {error}"));
            }
        }
        // Many idle half-open connections at once.
        let mut idle = Vec::new();
        for _ in 0..50 {
            if let Ok(stream) = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await {
                idle.push(stream);
            }
        }
        sweep.all_answer(&format!("garbage on {what}")).await;
        if port == &metrics_ports[0] || port == &metrics_ports[1] || port == &metrics_ports[2] {
            let poke = wire::poke(
                &format!("127.0.0.1:{port}"),
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Duration::from_secs(2),
            )
            .await
            .unwrap();
            if !poke.reply.starts_with(b"HTTP/1.1 200") {
                sweep.problems.push(format!(
                    "{what}: /metrics after garbage: {:?}",
                    String::from_utf8_lossy(&poke.reply[..poke.reply.len().min(80)])
                ));
            }
        }
        drop(idle);
    }

    // 7. Odd but valid text went through the whole mesh unchanged.
    for (field, value, post_id) in &accepted {
        if *field == "idempotency_key" {
            continue;
        }
        let mut get = tonic::Request::new(GetPostRequest {
            post_id: *post_id,
            min_version: 1,
            include_deleted: false,
        });
        get.set_timeout(Duration::from_secs(10));
        match queries.get_post(get).await {
            Ok(reply) => {
                let post = reply.into_inner().post.unwrap();
                let got = match *field {
                    "title" => &post.title,
                    "content" => &post.content,
                    _ => &post.author_name,
                };
                if got != value {
                    sweep.problems.push(format!("{field} {value:?} came back as {got:?}"));
                }
            }
            Err(status) => sweep
                .problems
                .push(format!("{field} {value:?} never reached the read model: {status:?}")),
        }
    }
    sweep.all_answer("the end").await;
    for proc in [&mut command, &mut query, &mut relay] {
        let logs = proc.logs();
        if logs.contains("panicked") {
            sweep.problems.push(format!("{} panicked:\n{logs}", proc.name));
        }
        if proc.wait_exit(Duration::ZERO).await.is_some() {
            sweep.problems.push(format!("{} exited", proc.name));
        }
    }
    let dead = dlq_len(&redis_url(), &names).await;
    if dead != 0 {
        let letters = stream_entries(&redis_url(), &format!("{}.dlq", names.stream)).await;
        let errors: Vec<_> = letters
            .iter()
            .map(|(_, f)| String::from_utf8_lossy(f.get("dlq_error").map_or(&[][..], |v| v)).into_owned())
            .collect();
        sweep.problems.push(format!("{dead} events dead-lettered: {errors:?}"));
    }
    assert!(
        sweep.problems.is_empty(),
        "{} of {} bad requests were mishandled: {:#?}",
        sweep.problems.len(),
        sweep.requests,
        sweep.problems
    );
    eprintln!(
        "[faults] bad input sweep: {} requests, {} odd-but-valid values round-tripped, {:.1} s",
        sweep.requests,
        accepted.len(),
        started.elapsed().as_secs_f64()
    );
}

async fn drain<T>(mut stream: tonic::Streaming<T>) -> Result<(), tonic::Status> {
    let mut n = 0;
    while let Some(item) = stream.message().await.transpose() {
        item?;
        n += 1;
        if n > 10_000 {
            break;
        }
    }
    Ok(())
}
