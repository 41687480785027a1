//! query-svc: the read side of postmesh.
//!
//! - [`store`]: the MongoDB read model, with the writer event-relay applies
//!   events through and the reads this service serves;
//! - [`filter`] and [`cursor`]: ListPosts filters and page tokens.

pub mod cursor;
pub mod filter;
pub mod store;
