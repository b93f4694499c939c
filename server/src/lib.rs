//! fenced server
