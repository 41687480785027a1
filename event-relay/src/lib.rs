//! event-relay owns the path from the event streams to the read model: it
//! reads Redis Streams in a consumer group, applies each event through
//! query-svc's store writer, retries failures with backoff, dead-letters what
//! keeps failing, and tells query-svc what it applied. Its CLI operates the
//! dead-letter stream and rebuilds the read model from the event store.

pub mod config;
pub mod consumer;
pub mod dlq;
pub mod entry;
pub mod projector;
pub mod rebuild;
pub mod startup;
pub mod status;
