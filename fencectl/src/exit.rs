//! fencectl's exit codes. A child that exits by itself passes its status through
//! (`128 + N` if it died of signal N, as shells report it); fencectl's own outcomes use
//! codes from `sysexits.h` and the shells' conventions, so a script can tell them apart
//! from most commands' own.

/// `check`: the token is not the live holder's (as `grep` says "no match").
pub const NOT_CURRENT: i32 = 1;

/// The command line was wrong (clap's own code).
pub const USAGE: i32 = 2;

/// The server could not be reached, or answered with an error (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: i32 = 69;

/// `keygen`: a key file could not be created or written, or the private key's file
/// exists already (`EX_CANTCREAT`).
pub const CANT_CREATE: i32 = 73;

/// `lock`: the lock was taken by someone else (at once, or until `--wait` ran out)
/// (`EX_TEMPFAIL`: try again later).
pub const NOT_ACQUIRED: i32 = 75;

/// `lock`, `elect`: the lease was lost, or could not be confirmed in time, while the child
/// ran, and fencectl stopped the child (SIGTERM, then SIGKILL) before its local deadline.
pub const LOCK_LOST: i32 = 76;

/// The command was found but could not be started (as shells report it).
pub const CANNOT_RUN: i32 = 126;

/// The command was not found (as shells report it).
pub const NOT_FOUND: i32 = 127;

/// The code for a child that died of signal `signal`, as shells report it.
pub fn for_signal(signal: i32) -> i32 {
    128 + signal
}
