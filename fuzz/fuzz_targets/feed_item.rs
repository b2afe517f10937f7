//! A feed item, and a purge acknowledgement as a grant stores it.
//! See `casemesh::fuzzing::feed_item` for the properties checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| casemesh::fuzzing::feed_item(data));
