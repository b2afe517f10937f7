//! The canonical encoding of a record version, as offices sign it.
//! See `casemesh::fuzzing::record_canonical` for the properties checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| casemesh::fuzzing::record_canonical(data));
