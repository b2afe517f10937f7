//! A case bundle built from members the input describes (names, sizes,
//! contents), so that tar headers need not be forged.
//! See `casemesh::fuzzing::bundle_members` for the properties checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| casemesh::fuzzing::bundle_members(data));
