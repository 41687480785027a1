//! [`ServerLimits`]: the limits every gRPC server applies, configurable per
//! service. The accept loop (`serve`) and the tower stack (`layers`) read them.

use std::time::Duration;

use clap::Args;

use crate::config::{defaults, nonzero, secs};

/// Limits applied to every gRPC server, configurable per service.
#[derive(Args, Clone, Debug)]
pub struct ServerLimits {
    /// Longest a request may run before it is cancelled (seconds); a client
    /// deadline shorter than this wins.
    #[arg(long = "request-timeout-secs", env = "REQUEST_TIMEOUT_SECS", default_value = "10", value_parser = secs)]
    pub request_timeout: Duration,
    /// Requests handled at once; beyond this, new requests get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams one connection may open at once.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// Largest request message accepted (bytes).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest block of request headers (metadata) accepted (bytes).
    #[arg(long, env = "MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024)]
    pub max_header_list_bytes: u32,
    /// Connections open at once; further connections are closed as soon as
    /// they are accepted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed
    /// (seconds; 0: never). Also ends connections that never send a request.
    #[arg(
        long = "connection-idle-timeout-secs",
        env = "CONNECTION_IDLE_TIMEOUT_SECS",
        default_value = "300",
        value_parser = secs
    )]
    pub connection_idle_timeout: Duration,
    /// Connections older than this are asked to go away (HTTP/2 GOAWAY) so
    /// clients re-balance across replicas (seconds; 0: never).
    #[arg(long = "max-connection-age-secs", env = "MAX_CONNECTION_AGE_SECS", default_value = "0", value_parser = secs)]
    pub max_connection_age: Duration,
    /// Interval of HTTP/2 PINGs that detect dead peers (seconds; 0: off).
    #[arg(
        long = "http2-keepalive-interval-secs",
        env = "HTTP2_KEEPALIVE_INTERVAL_SECS",
        default_value = "30",
        value_parser = secs
    )]
    pub http2_keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed (seconds).
    #[arg(
        long = "http2-keepalive-timeout-secs",
        env = "HTTP2_KEEPALIVE_TIMEOUT_SECS",
        default_value = "10",
        value_parser = secs
    )]
    pub http2_keepalive_timeout: Duration,
    /// TCP keep-alive idle time on accepted sockets (seconds; 0: off).
    #[arg(long = "tcp-keepalive-secs", env = "TCP_KEEPALIVE_SECS", default_value = "60", value_parser = secs)]
    pub tcp_keepalive: Duration,
    /// After SIGTERM, how long in-flight requests may take to finish (seconds).
    #[arg(long = "shutdown-grace-secs", env = "SHUTDOWN_GRACE_SECS", default_value = "10", value_parser = secs)]
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        defaults()
    }
}

impl ServerLimits {
    /// The per-request timeout (at least a millisecond).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout.max(Duration::from_millis(1))
    }

    /// The idle-connection timeout, None when off.
    pub fn idle_timeout(&self) -> Option<Duration> {
        nonzero(self.connection_idle_timeout)
    }

    /// The TCP keep-alive time, None when off.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        nonzero(self.tcp_keepalive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_those_of_the_flags() {
        let limits = ServerLimits::default();
        assert_eq!(limits.request_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_concurrent_requests, 512);
        assert_eq!(limits.idle_timeout(), Some(Duration::from_secs(300)));
        assert_eq!(nonzero(limits.max_connection_age), None);
    }
}
