//! The line protocol between the orchestrator and a worker process: commands on the
//! worker's stdin, one per line; reports on its stdout, one per line, `<kind> <detail>`.

/// Commands the orchestrator sends.
pub mod command {
    /// Acquire the lock, waiting in the queue as long as it takes.
    pub const ACQUIRE: &str = "acquire";
    /// Raise the store's mark to our token (what a new leader does before work).
    pub const FENCE: &str = "fence";
    /// `write <value>`: take the token from the SDK and write at once.
    pub const WRITE: &str = "write";
    /// `prepare <value>`: take the token from the SDK and hold the write, ready to go.
    pub const PREPARE: &str = "prepare";
    /// Send the prepared write (no new check: it is already in flight, as far as the
    /// process is concerned).
    pub const SEND: &str = "send";
    /// Release and exit.
    pub const EXIT: &str = "exit";
}

/// Reports a worker prints.
pub mod report {
    /// `acquired <token>`.
    pub const ACQUIRED: &str = "acquired";
    /// `fenced <mark>`.
    pub const FENCED: &str = "fenced";
    /// `prepared <token>`: the SDK handed out the token; the write waits for `send`.
    pub const PREPARED: &str = "prepared";
    /// `accepted <token> <value>`: the store took the write.
    pub const ACCEPTED: &str = "accepted";
    /// `rejected <presented> <current>`: the gate turned the write away.
    pub const REJECTED: &str = "rejected";
    /// `refused <reason>`: the SDK would not hand out the token.
    pub const REFUSED: &str = "refused";
    /// `state <held|suspect|lost> <reason>`: the SDK's view of the lease changed.
    pub const STATE: &str = "state";
    /// `pause <ms>`: the SDK's watchdog saw the process stand still this long.
    pub const PAUSE: &str = "pause";
    /// `error <message>`: something failed.
    pub const ERROR: &str = "error";
}

/// Splits a report line into its kind and detail.
pub fn parse_report(line: &str) -> (&str, &str) {
    match line.split_once(' ') {
        Some((kind, detail)) => (kind, detail),
        None => (line, ""),
    }
}
