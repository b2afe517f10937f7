//! gRPC: the servers (records, admin, replication), the authorization
//! layer, the one error → status table, and the conversion of service
//! views to messages. Handlers translate and authorize, then call a
//! service. The wire types and the transport are [`crate::protocol`]'s.

pub mod auth;
pub mod server_admin;
pub mod server_records;
pub mod server_replication;
pub mod status;
pub mod views;
