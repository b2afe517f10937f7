//! casemesh: federated sync of signed case records between prosecutors'
//! offices, with no central server.
//!
//! # Architecture in a page
//!
//! Each office runs one node. A node keeps its office's records in an
//! embedded store and serves them over gRPC with mutual TLS (TLS 1.3, client
//! certificates always). Every record version is signed by its origin
//! office's key over a canonical encoding.
//!
//! Dependencies point one way:
//!
//! ```text
//! domain ← store ← service ← grpc ← node ← cli
//!    ↖ identity ↗
//! ```
//!
//! - [`domain`]: ids, records, versions, limits, the canonical encoding.
//!   Pure code.
//! - [`store`]: the only module that names sled: typed trees, versioned
//!   encodings, transactions, group commit.
//! - [`identity`]: office key and CA, certificate issuing, record signing,
//!   rustls configurations, certificate → [`identity::Caller`].
//! - [`bundle`]: the case bundle for court: its format, the writer and
//!   the offline verifier. Pure code.
//! - [`service`]: use cases (records, users); no tonic.
//! - [`grpc`]: generated code, conversions, the one error → status table,
//!   the authorization layer, the servers.
//! - [`sync`]: replication at run time: a puller per peer, the serving
//!   side of `Pull`, the expiry sweeper. Uses the generated wire types and
//!   the mTLS transport from [`grpc`], nothing else of it.
//! - [`node`]: the composition root: [`node::Node::start`].
//! - [`cli`]: the `casemesh` command line.
//! - [`alloc`]: the allocator of casemesh processes and its options.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alloc;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod node;
pub mod protocol;
pub mod service;
pub mod setup;
pub mod store;
pub mod sync;
