//! The one integration test binary: real nodes, real mutual TLS on
//! loopback, certificates generated at test time, temporary directories.

mod suite;
