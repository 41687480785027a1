//! query-svc: the read side of postmesh.
//!
//! It serves `posts.v1.PostQuery` from the MongoDB read model that
//! event-relay keeps up to date, and never writes that model itself.
//!
//! - [`store`]: the read model, with the writer event-relay applies events
//!   through ([`store::ReadStore::apply`]) and the reads served here;
//! - [`filter`] and [`cursor`]: ListPosts filters and opaque keyset page tokens;
//! - [`notify`]: the relay's Redis notifications, turned into cache
//!   invalidations, min_version wake-ups and WatchPosts streams;
//! - [`cache`]: the bounded in-process cache GetPost answers from, kept
//!   coherent by those notifications;
//! - [`grpc`]: the PostQuery handlers; [`error`]: their one error type;
//! - [`config`], [`health`] and [`startup`]: flags, the MongoDB-driven health
//!   status, and the wiring ([`startup::spawn`] starts it in-process for tests).

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod cursor;
pub mod error;
pub mod filter;
pub mod grpc;
pub mod health;
pub mod notify;
pub mod startup;
pub mod store;

pub use error::Error;
