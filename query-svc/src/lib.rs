//! query-svc: the read side of postmesh.
//!
//! It serves `posts.v1.PostQuery` from the read model that event-relay
//! keeps up to date (a [`postmesh_read_model::ReadStore`], with its filters
//! and page tokens), and never writes that model itself. It owns:
//!
//! - [`notify`]: the relay's Redis notifications (`postmesh_events::notify`),
//!   turned into cache invalidations, min_version wake-ups and WatchPosts
//!   streams;
//! - [`cache`]: the bounded in-process cache GetPost answers from, kept
//!   coherent by those notifications;
//! - [`grpc`]: the PostQuery handlers; [`error`]: their one error type;
//! - [`config`], [`health`] and [`startup`]: flags, the health status that
//!   follows the read store, and the wiring ([`startup::spawn`] starts it
//!   in-process for tests).

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod notify;
pub mod startup;

pub use error::Error;
