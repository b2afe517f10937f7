//! An audit entry as the log stores it, the walk that checks it, a signed head.
//! See `casemesh::fuzzing::audit_entry` for the properties checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| casemesh::fuzzing::audit_entry(data));
