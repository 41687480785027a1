//! command-svc owns the write side of postmesh: it validates commands, decides
//! the resulting event, appends it with its outbox row in one SQL transaction,
//! and publishes the outbox to Redis Streams. It also serves the event log
//! (`EventStore`) so read models can be rebuilt from it.
//!
//! A command flows one way: `grpc` (validate) -> `app` (the use case) ->
//! `domain` (decide) -> `store` (append, commit) -> `outbox` (publish), the
//! middle three in batches run by the group committer (`committer`).

pub mod app;
pub mod committer;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod outbox;
pub mod startup;
pub mod store;

pub use error::Error;
