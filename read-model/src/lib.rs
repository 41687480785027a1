//! postmesh-read-model: the read model, whatever stores it.
//!
//! event-relay writes it (applying events, rebuilding) and query-svc reads
//! it; both hold a [`ReadStore`], chosen by URL, and neither knows which
//! implementation is behind it. This crate owns:
//!
//! - the contract, [`ReadModelStore`]: apply a batch gated on version, the
//!   point, history and list reads, the whole-model reads, schema, the
//!   rebuild's staging store and swap, and the catch-up's positions,
//!   checkpoint and leases;
//! - [`ReadStore`], the type callers hold, delegating to an implementation,
//!   and [`ReadStoreArgs`], the settings that choose it (`READ_STORE_URL`);
//! - the implementations: [`sqlite`] (an embedded file, the default) and
//!   [`mongo`] (MongoDB, FerretDB);
//! - what all of them share: [`Applied`], [`PostVersion`], the event checks
//!   of [`VersionRecord`], the ListPosts [`ListFilter`] and the keyset page
//!   tokens of [`cursor`], and one error type, [`StoreError`];
//! - the store test suite every implementation passes (`testing`, behind the
//!   `testing` feature).

#![warn(missing_docs)]

pub mod args;
mod batch;
mod contract;
pub mod cursor;
mod error;
pub mod filter;
mod model;
pub mod mongo;
pub mod sqlite;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use args::ReadStoreArgs;
pub use contract::ReadModelStore;
pub use error::StoreError;
pub use filter::ListFilter;
pub use model::{millis_to_timestamp, timestamp_to_millis, Applied, PostVersion, VersionRecord};
pub use mongo::MongoStore;
pub use sqlite::SqliteStore;
pub use store::ReadStore;
