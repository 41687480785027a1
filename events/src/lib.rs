//! postmesh-events: the messages postmesh's services exchange through Redis,
//! each defined once and used by both ends (as mini-redis keeps its wire
//! format in `frame.rs`), so changing a field is one edit in one file.
//!
//! - [`entry`]: the stream entry command-svc's outbox writes and event-relay
//!   reads: one list of fields, encoded by [`entry::xadd`], decoded by
//!   [`entry::Entry`];
//! - [`dlq`]: the dead-letter entry event-relay writes, lists and replays;
//! - [`topology`]: which stream, on which Redis, carries an event
//!   ([`topology::Action`] is the one mapping from an event type to its
//!   action word);
//! - [`notify`]: the notification event-relay publishes after applying an
//!   event (or rebuilding) and query-svc receives.

#![warn(missing_docs)]

pub mod dlq;
pub mod entry;
pub mod notify;
pub mod topology;
