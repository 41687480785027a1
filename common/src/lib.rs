//! Plumbing shared by command-svc, query-svc and event-relay: log set-up,
//! shutdown signals, the Redis start-up check and the tower layers every
//! gRPC server is built from. No domain logic lives here (the stream
//! topology is in postmesh-events).

pub mod auth;
pub mod layers;
pub mod limits_status;
pub mod redact;
pub mod redis_check;
pub mod reload;
pub mod rpc;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;
