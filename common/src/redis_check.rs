//! Start-up check that a Redis URL really points at Redis.
//!
//! A URL pointing at some other server (say MariaDB's port) must fail fast with
//! a message naming the URL instead of hanging the first XADD forever.

use std::time::Duration;

use clap::Args;

use crate::{config::secs, redact::redact_url};

/// The start-up check's setting, the same in every service.
#[derive(Args, Clone, Debug)]
pub struct RedisCheckArgs {
    /// How long the start-up PING to each Redis URL may take (seconds).
    #[arg(
        long = "redis-check-timeout-secs",
        env = "REDIS_CHECK_TIMEOUT_SECS",
        default_value = "3",
        value_parser = secs
    )]
    pub redis_check_timeout: Duration,
}

impl RedisCheckArgs {
    /// The PING limit (at least a millisecond).
    pub fn timeout(&self) -> Duration {
        self.redis_check_timeout.max(Duration::from_millis(1))
    }
}

/// Why a Redis URL failed its start-up check.
#[derive(Debug, thiserror::Error)]
pub enum RedisCheckError {
    /// The URL could not be parsed.
    #[error("invalid Redis URL {url}: {source}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What the parser said.
        source: redis::RedisError,
    },
    /// Connecting or PING failed.
    #[error("Redis at {url} did not answer PING: {source}")]
    Failed {
        /// The URL, password redacted.
        url: String,
        /// The client error.
        source: redis::RedisError,
    },
    /// Something answered, but not with PONG.
    #[error("server at {url} answered PING with {reply:?} instead of PONG; is it Redis?")]
    NotRedis {
        /// The URL, password redacted.
        url: String,
        /// What came back.
        reply: String,
    },
    /// Nothing usable came back within the timeout.
    #[error("Redis at {url} did not answer PING within {timeout:?}; is it Redis and reachable?")]
    Timeout {
        /// The URL, password redacted.
        url: String,
        /// The limit that passed.
        timeout: Duration,
    },
}

/// Connects to `url` and expects `PONG` to `PING` within `timeout`.
pub async fn check_redis(url: &str, timeout: Duration) -> Result<redis::Client, RedisCheckError> {
    let shown = redact_url(url);
    let client = redis::Client::open(url).map_err(|source| RedisCheckError::InvalidUrl {
        url: shown.clone(),
        source,
    })?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(reply)) if reply == "PONG" => Ok(client),
        Ok(Ok(reply)) => Err(RedisCheckError::NotRedis { url: shown, reply }),
        Ok(Err(source)) => Err(RedisCheckError::Failed { url: shown, source }),
        Err(_) => Err(RedisCheckError::Timeout { url: shown, timeout }),
    }
}
