//! fenced-kv (being built: issue 3).
