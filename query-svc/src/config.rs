//! Command-line flags with environment-variable fallbacks.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser};
use postmesh_common::{
    auth::AuthArgs,
    config::{defaults, millis},
    limits::ServerLimits,
    redis_check::RedisCheckArgs,
    telemetry::LogFormat,
    tls::ServerTlsArgs,
};
use postmesh_read_model::ReadStoreArgs;

/// `query-svc`: serve PostQuery until SIGTERM/SIGINT.
#[derive(Parser, Debug)]
#[command(name = "query-svc", version, about = "postmesh read side: PostQuery")]
pub struct Cli {
    /// Service settings.
    #[command(flatten)]
    pub config: Config,
}

/// Everything query-svc needs to run.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on; port 0 picks a free one.
    #[arg(long, env = "QUERY_LISTEN_ADDR", default_value = "0.0.0.0:50052")]
    pub listen_addr: SocketAddr,
    /// The read model (READ_STORE_URL: SQLite by default, or MongoDB); a
    /// read it cannot reach in READ_STORE_TIMEOUT_MS fails with UNAVAILABLE.
    #[command(flatten)]
    pub read_store: ReadStoreArgs,
    /// How often the read store is pinged to drive the health status (milliseconds).
    #[arg(long = "health-check-ms", env = "HEALTH_CHECK_MS", default_value = "1000", value_parser = millis)]
    pub health_check: Duration,
    /// Redis carrying the relay's "applied" notifications.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The start-up PING to Redis.
    #[command(flatten)]
    pub redis_check: RedisCheckArgs,
    /// Pub/sub channel event-relay publishes `{"post_id":..,"version":..}` on.
    #[arg(long, env = "NOTIFY_CHANNEL", default_value = postmesh_events::notify::DEFAULT_CHANNEL)]
    pub notify_channel: String,
    /// Longest GetPost waits for min_version, whatever the client's deadline (milliseconds).
    #[arg(long = "max-wait-ms", env = "MAX_WAIT_MS", default_value = "5000", value_parser = millis)]
    pub max_wait: Duration,
    /// Changes queued per WatchPosts stream before a slow reader is cut off.
    #[arg(long, env = "WATCH_BUFFER", default_value_t = 256)]
    pub watch_buffer: usize,
    /// WatchPosts streams open at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_WATCHERS", default_value_t = 1000)]
    pub max_watchers: usize,
    /// Posts GetPost may serve from memory (entries); 0 turns the cache off.
    #[arg(long, env = "QUERY_CACHE_POSTS", default_value_t = 20_000)]
    pub cache_posts: usize,
    /// Memory budget of the post cache (MiB, counting each post's text plus
    /// 256 bytes of overhead); 0 turns the cache off.
    #[arg(long, env = "QUERY_CACHE_MAX_MIB", default_value_t = 32)]
    pub cache_max_mib: usize,
    /// Longest a cached post is served after it was read (milliseconds).
    #[arg(long = "cache-ttl-ms", env = "QUERY_CACHE_TTL_MS", default_value = "10000", value_parser = millis)]
    pub cache_ttl: Duration,
    /// Request timeout, concurrency, message and connection limits.
    #[command(flatten)]
    pub limits: ServerLimits,
    /// TLS / mTLS of the gRPC server (off by default).
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Bearer-token checks (reads are open unless AUTH_REQUIRE_FOR_READS).
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Log format: auto, json or pretty.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Where Prometheus metrics are served (`/metrics`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9465")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// The defaults, for an in-process instance on a free port reading the
    /// read store at `read_store_url` (`database` on MongoDB) and woken on
    /// `channel` at `redis_url`, as tests use it: JSON logs, no metrics
    /// port, a quick health ping and a short store timeout.
    pub fn for_tests(read_store_url: &str, database: &str, redis_url: &str, channel: &str) -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            read_store: ReadStoreArgs {
                timeout: Some(Duration::from_millis(1000)),
                ..ReadStoreArgs::new(read_store_url, database)
            },
            health_check: Duration::from_millis(200),
            redis_url: redis_url.to_owned(),
            notify_channel: channel.to_owned(),
            log_format: LogFormat::Json,
            metrics_addr: None,
            ..defaults()
        }
    }

    /// The post cache's memory budget in bytes.
    pub fn cache_max_bytes(&self) -> usize {
        self.cache_max_mib.saturating_mul(1024 * 1024)
    }

    /// The interval of the health ping.
    pub fn health_check_interval(&self) -> Duration {
        self.health_check.max(Duration::from_millis(10))
    }
}
