//! A case bundle as `casemesh verify-bundle` reads it: the raw archive.
//! See `casemesh::fuzzing::bundle_verify` for the properties checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| casemesh::fuzzing::bundle_verify(data));
