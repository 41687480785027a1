//! Building blocks of the fault suite (tests/tests/faults.rs): the services
//! as real processes wired to one test's names, a Redis that persists every
//! write (so it can be SIGKILLed without losing acknowledged stream entries),
//! the end-of-scenario check, and a lock that runs the scenarios one at a
//! time.

use std::time::Duration;

use crate::{
    compare::{assert_converges, read_all_events},
    load::{check_event_store, wait_outbox_empty, Ledger},
    mesh::Names,
    services::ServiceProc,
};

/// Held by each fault scenario for its whole run: every scenario starts
/// several processes and drives a load, and two at once on two cores would
/// turn timing into noise. Other test binaries are not affected (cargo runs
/// test binaries one after another).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// command-svc as a process: gRPC on `port`, events to `names.stream`.
pub fn command_svc(port: u16, database_url: &str, redis_url: &str, names: &Names) -> ServiceProc {
    ServiceProc::spawn(
        "command-svc",
        port,
        &[],
        &[
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("COMMAND_DATABASE_URL", database_url.to_owned()),
            ("COMMAND_DATABASE_TIMEOUT_SECS", "2".to_owned()),
            ("REDIS_URL", redis_url.to_owned()),
            ("STREAM_NAME", names.stream.clone()),
            ("OUTBOX_POLL_MS", "200".to_owned()),
        ],
    )
}

/// event-relay as a process, consumer `consumer`, health on `port`, writing
/// the read model at `read_store_url` (`names.database` on MongoDB).
pub fn event_relay(port: u16, redis_url: &str, read_store_url: &str, names: &Names, consumer: &str) -> ServiceProc {
    event_relay_with(port, redis_url, read_store_url, names, consumer, &[])
}

/// [`event_relay`] with its catch-up reading the event store at
/// `command_endpoint` every [`CATCH_UP_INTERVAL_MS`], and trimming every
/// second: what Redis loses reaches the read model within a few seconds.
pub fn event_relay_catching_up(
    port: u16,
    redis_url: &str,
    read_store_url: &str,
    names: &Names,
    consumer: &str,
    command_endpoint: &str,
) -> ServiceProc {
    event_relay_with(
        port,
        redis_url,
        read_store_url,
        names,
        consumer,
        &[
            ("COMMAND_ENDPOINT", command_endpoint.to_owned()),
            ("RELAY_CATCHUP_INTERVAL_MS", CATCH_UP_INTERVAL_MS.to_string()),
            ("RELAY_TRIM_INTERVAL_MS", "1000".to_owned()),
        ],
    )
}

/// The catch-up interval of [`event_relay_catching_up`].
pub const CATCH_UP_INTERVAL_MS: u64 = 1000;

/// [`event_relay`] with `extra` settings (later ones win).
pub fn event_relay_with(
    port: u16,
    redis_url: &str,
    read_store_url: &str,
    names: &Names,
    consumer: &str,
    extra: &[(&str, String)],
) -> ServiceProc {
    let mut env = vec![
        ("RELAY_HEALTH_ADDR", format!("127.0.0.1:{port}")),
        ("REDIS_URL", redis_url.to_owned()),
        ("STREAM_NAME", names.stream.clone()),
        ("READ_STORE_URL", read_store_url.to_owned()),
        ("READ_STORE_DATABASE", names.database.clone()),
        ("NOTIFY_CHANNEL", names.channel.clone()),
        ("CONSUMER_NAME", consumer.to_owned()),
        ("RELAY_BATCH_SIZE", "50".to_owned()),
        ("RELAY_CLAIM_IDLE_MS", "1500".to_owned()),
        ("RELAY_BLOCK_MS", "200".to_owned()),
        ("RELAY_RETRY_MAX_MS", "1000".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    ServiceProc::spawn("event-relay", port, &[], &env)
}

/// query-svc as a process on `port`, reading the read model at `read_store_url`.
pub fn query_svc(port: u16, redis_url: &str, read_store_url: &str, names: &Names) -> ServiceProc {
    ServiceProc::spawn(
        "query-svc",
        port,
        &[],
        &[
            ("QUERY_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("REDIS_URL", redis_url.to_owned()),
            ("READ_STORE_URL", read_store_url.to_owned()),
            ("READ_STORE_DATABASE", names.database.clone()),
            ("NOTIFY_CHANNEL", names.channel.clone()),
        ],
    )
}

/// Entries in the dead-letter stream of `names`.
pub async fn dlq_len(redis_url: &str, names: &Names) -> usize {
    crate::stream_len(redis_url, &format!("{}.dlq", names.stream)).await
}

/// Entries delivered to `consumer` of group `projector` and not yet acknowledged.
pub async fn pending_of(redis_url: &str, stream: &str, consumer: &str) -> usize {
    let mut conn = crate::redis(redis_url).await;
    let reply: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
        .arg(stream)
        .arg("projector")
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query_async(&mut conn)
        .await;
    reply.map(|r| r.len()).unwrap_or(0)
}

/// The end of every scenario: waits (on conditions only) until the outbox is
/// empty and the read model equals the event store post by post and version
/// by version, then checks the event store against the load's acknowledged
/// answers and against itself. Returns the number of events.
pub async fn assert_settled(
    command_endpoint: &str,
    database_url: &str,
    store: &postmesh_read_model::ReadStore,
    ledger: &Ledger,
    timeout: Duration,
) -> usize {
    assert!(
        wait_outbox_empty(database_url, timeout).await,
        "the outbox did not drain within {timeout:?}"
    );
    let events = assert_converges(command_endpoint, store, timeout).await;
    ledger.assert_matches(&events);
    let problems = check_event_store(database_url, ledger.acked.len()).await;
    assert!(problems.is_empty(), "event store is inconsistent: {problems:#?}");
    // Read once more: nothing arrived late.
    assert_eq!(read_all_events(command_endpoint).await.len(), events.len());
    events.len()
}
