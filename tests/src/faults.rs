//! Building blocks of the fault suite (tests/tests/faults.rs): the services
//! as real processes wired to one test's names, a Redis that persists every
//! write (so it can be SIGKILLed without losing acknowledged stream entries),
//! the end-of-scenario check, and a lock that runs the scenarios one at a
//! time.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    compare::{assert_converges, read_all_events},
    load::{check_event_store, wait_outbox_empty, Ledger},
    mesh::Names,
    servers::free_port,
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

/// event-relay as a process, consumer `consumer`, health on `port`.
pub fn event_relay(port: u16, redis_url: &str, mongodb_url: &str, names: &Names, consumer: &str) -> ServiceProc {
    ServiceProc::spawn(
        "event-relay",
        port,
        &[],
        &[
            ("RELAY_HEALTH_ADDR", format!("127.0.0.1:{port}")),
            ("REDIS_URL", redis_url.to_owned()),
            ("STREAM_NAME", names.stream.clone()),
            ("MONGODB_URL", mongodb_url.to_owned()),
            ("MONGODB_DATABASE", names.database.clone()),
            ("NOTIFY_CHANNEL", names.channel.clone()),
            ("CONSUMER_NAME", consumer.to_owned()),
            ("RELAY_BATCH_SIZE", "50".to_owned()),
            ("RELAY_CLAIM_IDLE_MS", "1500".to_owned()),
            ("RELAY_BLOCK_MS", "200".to_owned()),
            ("RELAY_RETRY_MAX_MS", "1000".to_owned()),
        ],
    )
}

/// query-svc as a process on `port`.
pub fn query_svc(port: u16, redis_url: &str, mongodb_url: &str, names: &Names) -> ServiceProc {
    ServiceProc::spawn(
        "query-svc",
        port,
        &[],
        &[
            ("QUERY_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("REDIS_URL", redis_url.to_owned()),
            ("MONGODB_URL", mongodb_url.to_owned()),
            ("MONGODB_DATABASE", names.database.clone()),
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
    store: &query_svc::store::ReadStore,
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

/// A redis-server of the test's own with an append-only file fsynced on
/// every write: SIGKILL loses nothing Redis acknowledged, as with a
/// production Redis configured for durability. (A Redis without persistence
/// loses every stream entry not yet projected when it dies; `event-relay
/// rebuild` is the repair for that.)
pub struct DurableRedis {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl DurableRedis {
    /// Starts it and waits for PING.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data, and waits for PING.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: scripts/install-deps.sh");
        self.child = Some(child);
        let url = self.url();
        let up = crate::wait_until(Duration::from_secs(15), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                // LOADING while the AOF is replayed; PONG once it serves.
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        })
        .await;
        assert!(up, "redis-server on port {} did not start", self.port);
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
