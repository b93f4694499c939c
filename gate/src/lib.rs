//! The storage gate (being built: issue 3).
