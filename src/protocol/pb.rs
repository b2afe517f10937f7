//! Code generated from `proto/` by `build.rs`. Never edited by hand.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("casemesh.v1");

/// The descriptor set of every casemesh proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/casemesh_descriptor.bin"));
