//! gRPC: the generated code, conversions between protobuf and domain types,
//! the one error → status table, the authorization layer, the TLS transport
//! and the servers. Handlers translate and authorize, then call a service.

pub mod auth;
pub mod convert;
pub mod pb;
pub mod server_admin;
pub mod server_records;
pub mod server_replication;
pub mod status;
pub mod transport;
