//! The fenced client SDK (being built: issue 4).
