//! The wire protocol, shared by the gRPC servers (`grpc`) and replication
//! at run time (`sync`): the code generated from `proto/` ([`pb`]), the
//! conversions between its messages and domain values ([`convert`]), and
//! mutual TLS over TCP on both ends ([`transport`]). Knows nothing of the
//! services or of how requests are authorized.

pub mod convert;
pub mod pb;
pub mod transport;

/// Every RPC the node serves, as `/package.Service/Method`: those of
/// casemesh's protos, health checking and reflection (v1 and v1alpha).
pub fn rpc_paths() -> Vec<String> {
    use prost::Message as _;
    let sets = [
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut out = Vec::new();
    for bytes in sets {
        // Compiled into the binary: a set that does not decode names no
        // methods, and its calls are counted as `unknown`.
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    out.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    out
}
