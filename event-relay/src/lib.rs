//! event-relay owns the path from the event streams to the read model: it
//! reads Redis Streams in a consumer group (entries as `postmesh_events`
//! defines them), applies the events to a `postmesh_read_model::ReadStore`,
//! retries failures with backoff, dead-letters what keeps failing, and tells
//! query-svc what it applied. Its CLI operates the dead-letter stream and
//! rebuilds the read model from the event store; its operations console
//! (`console`, /ops on the health port) shows the streams, the dead letters
//! and the projection's progress, and replays or purges dead letters.

pub mod apply;
pub mod catchup;
pub mod config;
pub mod console;
pub mod consumer;
pub mod dlq;
pub mod log;
pub mod projector;
pub mod rebuild;
pub mod startup;
pub mod status;
pub mod trim;
