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
//! Dependencies point one way, down this map (`tests/suite/layers.rs`
//! fails on a `use` that points up or sideways):
//!
//! ```text
//! cli                      the command line and the demo
//! cluster                  offices on this machine (demo, tests, bench)
//! node                     composition root
//! web                      metrics and the status page (read only)
//! grpc                     servers, authorization, error → status
//! sync · setup             replication at run time · creating an office
//! service                  use cases
//! protocol · error        wire types and transport · the use cases' error
//!   · search               · the search index, derived from the store
//! store · bundle           the only code that names sled · the court bundle
//! identity · config        keys, certificates, TLS · casemesh.toml
//! domain · alloc · metrics pure values and rules · the allocator · counters
//! ```
//!
//! - [`domain`]: ids, records, versions, limits, the canonical encoding,
//!   node addresses, times. Pure code.
//! - [`identity`]: office key and CA, certificate issuing, record signing,
//!   rustls configurations, certificate → [`identity::Caller`].
//! - [`config`]: `casemesh.toml` and the layout of a data directory.
//! - [`store`]: the only module that names sled: typed trees, versioned
//!   encodings, transactions, group commit.
//! - [`bundle`]: the case bundle for court: its format, the writer and
//!   the offline verifier. Pure code.
//! - [`protocol`]: the generated wire types, their conversions to and from
//!   domain values, and mutual TLS over TCP on both ends.
//! - [`error`]: what a use case can fail with, named by cause.
//! - [`search`]: the search index over what the office holds (tantivy,
//!   the only module that names it): derived from the store, fed by the
//!   queue every record-changing transaction writes, purged with it.
//! - [`service`]: use cases (records, users, sharing, audit, export); no
//!   tonic.
//! - [`sync`]: replication at run time: a puller per peer, the serving
//!   side of `Pull`, fetching files, the expiry sweeper. Its served
//!   streams end with its own error.
//! - [`setup`]: `casemesh init`.
//! - [`grpc`]: the three servers, the authorization layer and the one
//!   error → status table.
//! - [`web`]: the read-only web listeners: `/metrics` (Prometheus text)
//!   and the status page, over HTTPS for admins and auditors (plain HTTP
//!   only for metrics on a loopback address).
//! - [`node`]: the composition root: [`node::start`].
//! - [`cluster`]: offices created and run on this machine, and the calls
//!   their admins make; the demo, the tests and the benchmark use it.
//! - [`cli`]: the `casemesh` command line.
//! - [`alloc`]: the allocator of casemesh processes and its options.
//! - [`metrics`]: the counters and histograms the code feeds as it works
//!   (calls, batches, commits, refused handshakes); no global registry.
//! - `fuzzing` (hidden from these docs): the entry points of the fuzz
//!   targets in `fuzz/` and their seeds; at the level of `node`, and not
//!   part of the interface.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alloc;
pub mod bundle;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod search;
pub mod service;
pub mod setup;
pub mod store;
pub mod sync;
pub mod web;
