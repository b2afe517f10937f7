//! The wire protocol, shared by the gRPC servers (`grpc`) and replication
//! at run time (`sync`): the code generated from `proto/` ([`pb`]), the
//! conversions between its messages and domain values ([`convert`]), and
//! mutual TLS over TCP on both ends ([`transport`]). Knows nothing of the
//! services or of how requests are authorized.

pub mod convert;
pub mod pb;
pub mod transport;
