//! `watch [PREFIX]`: with `--json`, one JSON object per event and line; for humans, a
//! table of the locks redrawn every second with their time left counting down, and the
//! latest events under it.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use fenced_client::{Client, LockEvent, LockEventKind};
use serde_json::json;
use tokio::time::Instant;

use crate::error::Error;
use crate::inspect;
use crate::output::{table, LockRow};

/// How often the table is redrawn.
const REDRAW: Duration = Duration::from_secs(1);
/// How often the table is read again from the server: renewals send no events, so this is
/// how a renewed lease's time left goes back up.
const REFRESH: Duration = Duration::from_secs(5);
/// How many of the latest events the table shows.
const EVENTS_SHOWN: usize = 10;

/// Streams the events under `prefix`, from `from_revision` (0: from now), until the watch
/// ends (it resumes by itself across a failover; it ends when no member can be reached).
pub async fn run(
    client: &Client,
    prefix: &str,
    from_revision: u64,
    as_json: bool,
) -> Result<(), Error> {
    // The stream opens before the first listing, so that no change falls between them.
    let mut events = client.watch_prefix_from(prefix, from_revision).await?;
    let mut out = std::io::stdout();
    if as_json {
        while let Some(event) = events.next().await.transpose()? {
            writeln!(out, "{}", event_json(&event)).map_err(Error::Output)?;
            out.flush().map_err(Error::Output)?;
        }
        return Ok(());
    }
    let mut view = View::default();
    view.refresh(client, prefix).await?;
    let mut redraw = tokio::time::interval(REDRAW);
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.tick().await;
    let clear = out.is_terminal();
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event.transpose()? else {
                    return Ok(());
                };
                view.describe(client, &event.lock).await?;
                view.push_event(&event);
            }
            _ = refresh.tick() => view.refresh(client, prefix).await?,
            _ = redraw.tick() => {
                let mut text = String::new();
                if clear {
                    text.push_str("\x1b[H\x1b[2J");
                }
                text.push_str(&view.render());
                write!(out, "{text}").map_err(Error::Output)?;
                out.flush().map_err(Error::Output)?;
            }
        }
    }
}

/// What the human view shows.
#[derive(Debug, Default)]
struct View {
    /// Each lock, with when it was read (its time left counts down from there).
    locks: BTreeMap<String, (LockRow, Instant)>,
    /// The latest events, oldest first.
    events: VecDeque<String>,
}

impl View {
    /// Reads every lock under the prefix again.
    async fn refresh(&mut self, client: &Client, prefix: &str) -> Result<(), Error> {
        let now = Instant::now();
        self.locks = inspect::list(client, prefix)
            .await?
            .into_iter()
            .map(|row| (row.lock.clone(), (row, now)))
            .collect();
        Ok(())
    }

    /// Reads one lock again after an event.
    async fn describe(&mut self, client: &Client, lock: &str) -> Result<(), Error> {
        let row = inspect::describe(client, lock).await?;
        if row.holder.is_none() && row.waiters == 0 {
            self.locks.remove(lock);
        } else {
            self.locks.insert(lock.to_string(), (row, Instant::now()));
        }
        Ok(())
    }

    /// Remembers an event for display.
    fn push_event(&mut self, event: &LockEvent) {
        if self.events.len() == EVENTS_SHOWN {
            self.events.pop_front();
        }
        self.events.push_back(format!(
            "{} {} by {} (token {})",
            kind_name(event.kind),
            event.lock,
            event.holder,
            event.token
        ));
    }

    /// The table, with each time left counted down since it was read, and the events.
    fn render(&self) -> String {
        let rows: Vec<LockRow> = self
            .locks
            .values()
            .map(|(row, read_at)| {
                let mut row = row.clone();
                if let Some(holder) = &mut row.holder {
                    holder.remaining = holder.remaining.saturating_sub(read_at.elapsed());
                }
                row
            })
            .collect();
        let mut text = table(&rows);
        text.push_str("\nEVENTS\n");
        for event in &self.events {
            text.push_str(event);
            text.push('\n');
        }
        text.push('\n');
        text
    }
}

/// An event as one line of JSON: `kind` (`acquired`, `released`, `expired`), `lock`,
/// `holder`, `token`, `revision`.
fn event_json(event: &LockEvent) -> serde_json::Value {
    json!({
        "kind": kind_name(event.kind),
        "lock": event.lock,
        "holder": event.holder,
        "token": event.token.get(),
        "revision": event.revision,
    })
}

/// The name of an event kind.
fn kind_name(kind: LockEventKind) -> &'static str {
    match kind {
        LockEventKind::Acquired => "acquired",
        LockEventKind::Released => "released",
        LockEventKind::Expired => "expired",
    }
}
