//! Command-line flags with environment-variable fallbacks.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use postmesh_common::{
    auth::AuthArgs,
    config::{defaults, millis, secs},
    limits::ServerLimits,
    redis_check::RedisCheckArgs,
    telemetry::LogFormat,
    tls::ServerTlsArgs,
};
use postmesh_events::topology::StreamArgs;

/// `command-svc [serve|migrate]`.
#[derive(Parser, Debug)]
#[command(
    name = "command-svc",
    version,
    about = "postmesh write side: PostCommand and EventStore"
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Service settings.
    #[command(flatten)]
    pub config: Config,
}

/// Sub-commands.
#[derive(Subcommand, Debug, Clone, Copy)]
pub enum Command {
    /// Run migrations (unless disabled) and serve gRPC until SIGTERM/SIGINT.
    Serve,
    /// Apply database migrations and exit (for a Kubernetes Job or init container).
    Migrate,
}

/// Everything command-svc needs to run.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on; port 0 picks a free one.
    #[arg(long, env = "COMMAND_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,
    /// Event store: `sqlite://FILE?mode=rwc` (created on first start) or `mysql://user:pass@host/db`.
    #[arg(
        long,
        env = "COMMAND_DATABASE_URL",
        default_value = "sqlite://postmesh-events.db?mode=rwc"
    )]
    pub database_url: String,
    /// Connections in the database pool.
    #[arg(long, env = "COMMAND_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: u32,
    /// How long to wait for a database connection before answering UNAVAILABLE (seconds).
    #[arg(
        long = "database-timeout-secs",
        env = "COMMAND_DATABASE_TIMEOUT_SECS",
        default_value = "3",
        value_parser = secs
    )]
    pub database_timeout: Duration,
    /// Transactions the group committer runs at once (0: 2 on MySQL, 1 on
    /// SQLite, whose one writer takes one at a time anyway).
    #[arg(long, env = "COMMAND_COMMIT_PIPELINE", default_value_t = 0)]
    pub commit_pipeline: usize,
    /// Apply migrations at start-up; turn off when a Job runs `command-svc migrate`.
    #[arg(long, env = "COMMAND_AUTO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_migrate: bool,
    /// Streams and Redis URLs.
    #[command(flatten)]
    pub streams: StreamArgs,
    /// The start-up PING to Redis.
    #[command(flatten)]
    pub redis_check: RedisCheckArgs,
    /// How often the outbox poller looks for rows left unpublished (milliseconds).
    #[arg(long = "outbox-poll-ms", env = "OUTBOX_POLL_MS", default_value = "1000", value_parser = millis)]
    pub outbox_poll: Duration,
    /// Request timeout, concurrency, message and connection limits.
    #[command(flatten)]
    pub limits: ServerLimits,
    /// TLS / mTLS of the gRPC server (off by default).
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Bearer-token checks (off by default; writes need a token once on).
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Log format: auto, json or pretty.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Where Prometheus metrics are served (`/metrics`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// The defaults, for an in-process instance on a free port writing to
    /// `database_url` and publishing to `stream` on `redis_url`, as tests use
    /// it: JSON logs, no metrics port, a fast outbox poll.
    pub fn for_tests(database_url: impl Into<String>, redis_url: &str, stream: &str) -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            streams: StreamArgs::new(redis_url, stream),
            outbox_poll: Duration::from_millis(200),
            log_format: LogFormat::Json,
            metrics_addr: None,
            ..defaults()
        }
    }

    /// The database acquire/connect limit.
    pub fn database_timeout(&self) -> Duration {
        self.database_timeout.max(Duration::from_millis(1))
    }
}
