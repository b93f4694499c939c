//! The admin listener's routes (the list is in [`crate::admin`]). Anything else is 404.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fenced_proto::v1 as pb;
use futures::StreamExt;
use serde::Serialize;

use super::history::LockHistory;
use super::AdminState;
use crate::access::Caller;
use crate::convert::millis;
use crate::policy::Permission;
use crate::telemetry;
use crate::watch::{self, Filter};

/// The status page: plain HTML and a little JavaScript, no build step, nothing fetched
/// from elsewhere.
const STATUS_PAGE: &str = include_str!("status.html");

/// The admin routes over `state`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/locks", get(locks))
        .route("/events", get(events))
        .with_state(state)
}

async fn status_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        STATUS_PAGE,
    )
        .into_response()
}

/// Prometheus text, with the gauges that are read at scrape time brought up to date first.
async fn metrics(State(state): State<AdminState>) -> Response {
    // A cluster member that does not lead has no table: its gauges keep their last value.
    if let Some(Ok(sizes)) = state.serving.current().map(|engine| engine.sizes()) {
        telemetry::set_scraped_gauges(
            sizes.leases,
            sizes.locks_held,
            sizes.waiters,
            state.watchers.open_count(),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// What `/api/locks` answers.
#[derive(Debug, Serialize)]
struct LocksAnswer {
    /// The server's wall clock (Unix milliseconds), to show the history's times against.
    now_ms: u64,
    /// The held or awaited locks, in name order: the first `List` page.
    locks: Vec<LockRow>,
    /// Whether more locks follow than one page shows.
    more: bool,
    /// Each recently seen lock's recent holders.
    history: Vec<LockHistory>,
}

/// One held or awaited lock.
#[derive(Debug, Serialize)]
struct LockRow {
    lock: String,
    holder: Option<String>,
    token: Option<u64>,
    /// Time left on the holder's lease unless it renews, in milliseconds.
    remaining_ms: u64,
    waiters: usize,
}

/// Who asks for lock data: with authentication on, the identity of the request's bearer
/// token (held to the policy); else why not, audited.
fn caller(state: &AdminState, headers: &HeaderMap) -> Result<Caller, String> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match state.auth.identify_http(authorization) {
        Ok(identity) => Ok(Caller::new(identity, state.policy.clone())),
        Err(status) => {
            crate::audit::unauthenticated(None, status.message());
            Err(status.message().to_string())
        }
    }
}

/// 401 with why.
fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        format!("{why}\n"),
    )
        .into_response()
}

/// The first page of the locks, read as `List` reads them (due expiries applied first,
/// answered once durable), and the history: of the locks the caller may read.
async fn locks(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(caller) => caller,
        Err(why) => return unauthorized(&why),
    };
    let readable = |lock: &str| caller.may(Permission::Read, lock);
    let page = state.config.max_list_page;
    let engine = match state.serving.engine() {
        Ok(engine) => engine,
        Err(status) => return unavailable(status.message()),
    };
    let read = engine.read(|table, now| table.list(now, "", None, page));
    let (list, seq) = match read {
        Ok(read) => read,
        Err(error) => return unavailable(&error.to_string()),
    };
    if let Err(error) = engine.durable(seq).await {
        return unavailable(&error.to_string());
    }
    let locks = list
        .locks
        .into_iter()
        .filter(|view| readable(view.lock.as_str()))
        .map(|view| LockRow {
            lock: view.lock.to_string(),
            holder: view.holder.as_ref().map(|(holder, _)| holder.to_string()),
            token: view.holder.as_ref().map(|(_, token)| token.get()),
            remaining_ms: millis(view.remaining),
            waiters: view.waiters,
        })
        .collect();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis);
    Json(LocksAnswer {
        now_ms,
        locks,
        more: list.next.is_some(),
        history: state
            .history
            .snapshot()
            .into_iter()
            .filter(|history| readable(&history.lock))
            .collect(),
    })
    .into_response()
}

/// 503 with why: a server failure, or a cluster member that does not lead.
fn unavailable(why: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
}

/// One lock event as the page gets it.
#[derive(Debug, Serialize)]
struct EventData<'a> {
    kind: &'static str,
    lock: &'a str,
    holder: &'a str,
    token: u64,
}

/// Server-sent events: one per durable lock event, named by its kind (`acquired`,
/// `released`, `expired`); a `lagged` event and the end of the stream when it fell more
/// than the event ring behind. 503 when `max_watchers` streams are open already. Only the
/// events of locks the caller may read.
async fn events(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(caller) => caller,
        Err(why) => return unauthorized(&why),
    };
    let every_lock = Filter::Prefix(String::new());
    let filter = match caller.is_restricted() {
        true => Filter::Readable(Box::new(every_lock), caller.clone()),
        false => every_lock,
    };
    let opened = watch::subscribe(state.serving.event_log(), 0).and_then(|subscription| {
        state
            .watchers
            .open_as(caller.identity_shared().cloned(), subscription, 0, filter)
    });
    let stream = match opened {
        Ok(stream) => stream,
        Err(status) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", status.message()),
            )
                .into_response()
        }
    };
    let events = stream
        .filter_map(|item| {
            let event = match item {
                // The page follows live changes only: the progress mark says nothing new.
                Ok(event) if event.kind() == pb::watch_event::Kind::Progress => None,
                Ok(event) => Some(sse_event(&event)),
                Err(status) => Some(SseEvent::default().event("lagged").data(status.message())),
            };
            std::future::ready(event.map(Ok::<_, Infallible>))
        })
        .take_until(state.stop.clone().cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse_event(event: &pb::WatchEvent) -> SseEvent {
    let kind = match pb::watch_event::Kind::try_from(event.kind) {
        Ok(pb::watch_event::Kind::Acquired) => "acquired",
        Ok(pb::watch_event::Kind::Released) => "released",
        Ok(pb::watch_event::Kind::Expired) => "expired",
        _ => "unknown",
    };
    let data = EventData {
        kind,
        lock: &event.lock,
        holder: &event.holder,
        token: event.token,
    };
    let sse = SseEvent::default().event(kind);
    match sse.json_data(&data) {
        Ok(sse) => sse,
        Err(_) => SseEvent::default().event(kind).data(&event.lock),
    }
}
