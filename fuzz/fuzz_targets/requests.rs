//! Every request a client or a peer can send, and what an origin sends a
//! puller: decoded from any bytes and converted as the handlers do. See
//! `casemesh::fuzzing::Requests`.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

/// One office for the whole run: making its keys takes longer than
/// thousands of inputs.
static REQUESTS: LazyLock<casemesh::fuzzing::Requests> =
    LazyLock::new(|| casemesh::fuzzing::Requests::new().expect("an office of its own"));

fuzz_target!(|data: &[u8]| REQUESTS.check(data));
