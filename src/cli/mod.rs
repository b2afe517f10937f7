//! The `casemesh` command line.
pub fn placeholder() {}
