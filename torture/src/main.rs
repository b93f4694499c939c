//! The `fenced-torture` binary.

fn main() {}
