//! Flags with environment-variable fallbacks.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use postmesh_common::{
    auth::AuthArgs,
    config::{defaults, millis},
    limits::ServerLimits,
    redis_check::RedisCheckArgs,
    telemetry::LogFormat,
    tls::{CommandClientArgs, ServerTlsArgs},
};
use postmesh_events::topology::StreamArgs;
use postmesh_read_model::ReadStoreArgs;

/// `event-relay [serve|dlq|rebuild|status]`.
#[derive(Parser, Debug)]
#[command(
    name = "event-relay",
    version,
    about = "postmesh relay: Redis Streams -> the read model (SQLite or MongoDB)"
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub config: Config,
}

/// Sub-commands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Consume the streams and serve health until SIGTERM/SIGINT.
    Serve,
    /// Inspect and operate the dead-letter stream.
    Dlq {
        /// list, replay or purge.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Rebuild the read model from command-svc's event store and swap it in.
    Rebuild,
    /// Print stream length, pending count, consumer lag and DLQ size.
    Status,
}

/// Dead-letter operations.
#[derive(Subcommand, Debug, Clone)]
pub enum DlqAction {
    /// Print the dead letters.
    List,
    /// Put dead letters back on their stream with attempts reset.
    Replay(Selection),
    /// Delete dead letters.
    Purge(Selection),
}

/// Which dead letters an operation touches.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// One dead letter, by its DLQ entry id (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
}

/// Everything the relay needs.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address of the gRPC health server; port 0 picks a free one.
    #[arg(long, env = "RELAY_HEALTH_ADDR", default_value = "0.0.0.0:50053")]
    pub health_addr: SocketAddr,
    /// Streams and Redis URLs (same flags as command-svc).
    #[command(flatten)]
    pub streams: StreamArgs,
    /// The read model (READ_STORE_URL: SQLite by default, or MongoDB).
    #[command(flatten)]
    pub read_store: ReadStoreArgs,
    /// Consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "projector")]
    pub group: String,
    /// Consumer name; defaults to POD_NAME, else host-pid. Must be unique per process.
    #[arg(long, env = "CONSUMER_NAME")]
    pub consumer: Option<String>,
    /// Entries read per XREADGROUP.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 256)]
    pub batch_size: usize,
    /// Posts applied side by side when a batch goes entry by entry because
    /// the store rejected it as a whole (each post's entries stay in order).
    /// A batch the store accepts is applied with one batch apply, whatever
    /// this is.
    #[arg(long, env = "RELAY_APPLY_CONCURRENCY", default_value_t = 1)]
    pub apply_concurrency: usize,
    /// Attempts before an entry goes to the dead-letter stream.
    #[arg(long, env = "RELAY_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// First retry delay (milliseconds); doubles per attempt, with jitter.
    #[arg(long = "retry-base-ms", env = "RELAY_RETRY_BASE_MS", default_value = "100", value_parser = millis)]
    pub retry_base: Duration,
    /// Longest retry delay (milliseconds), also the cap of outage backoff.
    #[arg(long = "retry-max-ms", env = "RELAY_RETRY_MAX_MS", default_value = "5000", value_parser = millis)]
    pub retry_max: Duration,
    /// Pending entries idle this long (milliseconds) are claimed from dead consumers.
    #[arg(long = "claim-idle-ms", env = "RELAY_CLAIM_IDLE_MS", default_value = "30000", value_parser = millis)]
    pub claim_idle: Duration,
    /// Longest XREADGROUP block (milliseconds).
    #[arg(long = "block-ms", env = "RELAY_BLOCK_MS", default_value = "1000", value_parser = millis)]
    pub block: Duration,
    /// About how many dead letters the dead-letter stream keeps (`XADD
    /// MAXLEN ~`): the oldest go first. Their events stay in the event store.
    #[arg(long, env = "RELAY_DLQ_MAX_LEN", default_value_t = 10_000)]
    pub dlq_max_len: u64,
    /// How often (milliseconds) the relay trims its streams to what every
    /// consumer group has acknowledged and removes idle consumers. 0: never.
    #[arg(long = "trim-interval-ms", env = "RELAY_TRIM_INTERVAL_MS", default_value = "10000", value_parser = millis)]
    pub trim_interval: Duration,
    /// A consumer of the group idle this long (milliseconds) with nothing
    /// pending is a relay that is gone: it is removed from the group.
    #[arg(long = "consumer-idle-max-ms", env = "RELAY_CONSUMER_IDLE_MAX_MS", default_value = "3600000", value_parser = millis)]
    pub consumer_idle_max: Duration,
    /// Pub/sub channel announcing applied events to query-svc.
    #[arg(long, env = "NOTIFY_CHANNEL", default_value = postmesh_events::notify::DEFAULT_CHANNEL)]
    pub notify_channel: String,
    /// command-svc endpoint: the event store the catch-up and `rebuild` read.
    #[arg(long, env = "COMMAND_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub command_endpoint: String,
    /// How often (milliseconds) the catch-up compares the read model's
    /// checkpoint with the event log's head and applies what Redis lost:
    /// anything committed reaches the read model within about twice this
    /// (plus the time to apply it). 0 turns the catch-up off.
    #[arg(long = "catch-up-interval-ms", env = "RELAY_CATCHUP_INTERVAL_MS", default_value = "5000", value_parser = millis)]
    pub catch_up_interval: Duration,
    /// TLS, mTLS and token for calls to command-svc.
    #[command(flatten)]
    pub command_client: CommandClientArgs,
    /// The start-up PING to Redis.
    #[command(flatten)]
    pub redis_check: RedisCheckArgs,
    /// Limits of the health server, and the shutdown grace period.
    #[command(flatten)]
    pub limits: ServerLimits,
    /// TLS / mTLS of the health server (off by default).
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Token checks of the operations console (/ops on the health port), the
    /// same settings as the services': with AUTH_JWT_KEY_FILE set, replaying
    /// or purging dead letters needs the write scope, and looking needs the
    /// read scope when AUTH_REQUIRE_FOR_READS is on.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Log format: auto, json or pretty.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Where Prometheus metrics are served (`/metrics`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9466")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// The defaults, for an in-process relay in tests: a free port, small
    /// batches, fast retries and claims, JSON logs, no metrics port, and no
    /// catch-up (the default endpoint would be nobody's event store, or
    /// another test's: a test that wants it sets `command_endpoint` and
    /// `catch_up_interval`).
    /// `read_store_url` is the read model (`database` names it on MongoDB).
    pub fn for_tests(redis_url: &str, stream: &str, read_store_url: &str, database: &str, channel: &str) -> Self {
        Self {
            health_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            streams: StreamArgs::new(redis_url, stream),
            read_store: ReadStoreArgs::new(read_store_url, database),
            batch_size: 64,
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(500),
            claim_idle: Duration::from_millis(2000),
            block: Duration::from_millis(200),
            notify_channel: channel.to_owned(),
            catch_up_interval: Duration::ZERO,
            log_format: LogFormat::Json,
            metrics_addr: None,
            ..defaults()
        }
    }

    /// This process's consumer name.
    pub fn consumer_name(&self) -> String {
        if let Some(name) = self.consumer.clone().filter(|n| !n.is_empty()) {
            return name;
        }
        if let Ok(pod) = std::env::var("POD_NAME") {
            if !pod.is_empty() {
                return pod;
            }
        }
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "relay".to_owned());
        let salt: u16 = rand::random();
        format!("{host}-{}-{salt:04x}", std::process::id())
    }

    /// The first retry delay and the cap of all delays (at least 1 ms each).
    pub fn retry_delays(&self) -> (Duration, Duration) {
        let floor = Duration::from_millis(1);
        (self.retry_base.max(floor), self.retry_max.max(floor))
    }
}
