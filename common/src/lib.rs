//! The gRPC server platform command-svc, query-svc and event-relay run on:
//! telemetry (logs, traces, metrics), shutdown signals, settings helpers,
//! TLS and bearer tokens (with the one auth interceptor), the tower layers
//! and accept loop, and the server itself (`server`: bind, health,
//! reflection, probe port, drain, `Running`). Also the Redis start-up check.
//! No domain logic lives here (the stream topology is in postmesh-events).

pub mod auth;
pub mod config;
pub mod errors;
pub mod layers;
pub mod limits;
pub mod limits_status;
pub mod redact;
pub mod redis_check;
pub mod reload;
pub mod rpc;
pub mod serve;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;
