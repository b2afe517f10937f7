//! Every decoder of a stored value or key.
//! See `casemesh::fuzzing::store_values` for the properties checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| casemesh::fuzzing::store_values(data));
