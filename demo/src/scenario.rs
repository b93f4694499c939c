//! The zombie-leader story, step by step. Every step waits for an event (a line from a
//! process, a watch event), never for a fixed time, so it holds on a loaded machine.

use std::path::PathBuf;
use std::time::Duration;

use fenced_proto::kv::v1 as kv;
use fenced_proto::v1 as pb;
use tokio::task::JoinHandle;

use crate::credentials::{Access, Credentials, Secure};
use crate::process::{start_server, Child, DemoError};
use crate::timeline::{Lane, Mark, Timeline};
use crate::worker::{command, parse_report, report};

/// Where the workers write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// A `fenced-kv` process the demo starts (its gate is the store's).
    Kv,
    /// A PostgreSQL database the caller runs (a `postgresql://` URL or libpq key=value
    /// string). The workers write in transactions that start with `fenced_check`
    /// (`fenced_gate_postgres::begin_guarded`), so the database refuses the stale write.
    /// The demo installs `fenced.sql` and uses the table `fenced_demo_output` and the
    /// resource `fenced-demo/orders`, whose mark it resets at the start of each run.
    Postgres {
        /// How to connect.
        url: String,
    },
}

/// How to run the story.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `fenced` binary.
    pub fenced: PathBuf,
    /// The `fenced-kv` binary.
    pub kv: PathBuf,
    /// The `fenced-demo-worker` binary.
    pub worker: PathBuf,
    /// The lease TTL the workers ask for.
    pub ttl: Duration,
    /// Where the workers write.
    pub store: Store,
    /// Whether the store's gate is on (`false` runs `fenced-kv --unfenced`, or has the
    /// PostgreSQL workers write without `fenced_check`).
    pub gate: bool,
    /// Print each event as it happens.
    pub narrate: bool,
    /// Let the child processes' logs through to stderr.
    pub show_logs: bool,
    /// Run secured: `fenced` and `fenced-kv` authenticate every call by bearer token or
    /// client certificate (each worker and the director has its own), `fenced` holds each
    /// identity to a policy and signs every grant's sequencer, and `fenced-kv` (gate on)
    /// demands and verifies a sequencer with every write ([`Credentials`]). `None`: open.
    pub secure: Option<Secure>,
}

/// What happened, for the verdict and for tests.
#[derive(Debug, Clone)]
pub struct Report {
    /// Whether the gate was on.
    pub gate: bool,
    /// Alpha's token.
    pub alpha_token: u64,
    /// Beta's token.
    pub beta_token: u64,
    /// The zombie write's outcome: `Some((presented, current))` if rejected.
    pub zombie_rejected: Option<(u64, u64)>,
    /// Whether the zombie write was accepted.
    pub zombie_accepted: bool,
    /// The pause alpha's SDK reported, in milliseconds.
    pub alpha_pause_ms: Option<u64>,
    /// Whether alpha's SDK reported the lease lost.
    pub alpha_lost: bool,
    /// Whether alpha's SDK refused a token after waking (it stopped acting as leader).
    pub alpha_refused_after: bool,
    /// The value in the store at the end.
    pub final_value: String,
    /// The token that wrote it.
    pub final_token: u64,
    /// Everything that happened.
    pub timeline: Timeline,
}

/// The lock both workers compete for, and the resource it guards in `fenced-kv` (of the
/// same name, as a gate that verifies sequencers requires: a sequencer names its lock).
const LOCK: &str = "orders/leader";
const RESOURCE: &str = LOCK;
/// The resource in PostgreSQL: a name no application of the database is likely to use,
/// since the demo resets its mark.
const PG_RESOURCE: &str = "fenced-demo/orders";
/// The key the workers write.
const KEY: &str = "leader-output";
/// How long any one step may take before the demo gives up (a loaded machine is slow).
const STEP: Duration = Duration::from_secs(60);

/// Runs the story once.
pub async fn run(options: &Options) -> Result<Report, DemoError> {
    let title = if options.gate { "gate on " } else { "gate off" };
    let timeline = Timeline::new(title, options.narrate);
    let temp = tempfile::tempdir().map_err(|e| io("a temporary directory", e))?;
    let dir = |name: &str| temp.path().join(name).display().to_string();

    // Step 1: the lock server and the store (with their credentials, when secured).
    let credentials = options
        .secure
        .map(|secure| Credentials::create(temp.path(), secure, &["alpha", "beta"]))
        .transpose()?;
    let url = |addr: &str| match &credentials {
        Some(credentials) => credentials.url(addr),
        None => format!("http://{addr}"),
    };
    let mut fenced_args = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir("fenced"),
    ];
    fenced_args.extend(credentials.iter().flat_map(Credentials::server_args));
    let (_fenced, lock_addr) = start_server(
        "fenced",
        &options.fenced,
        &fenced_args,
        "fenced",
        options.show_logs,
    )
    .await?;
    let director = Access::director(credentials.as_ref());
    let lock_server = url(&lock_addr);
    // `_store` keeps the store's process (if any) alive until the story ends.
    let (_store, store_url, resource) = match &options.store {
        Store::Kv => {
            let mut kv_args = vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                dir("kv"),
            ];
            if !options.gate {
                kv_args.push("--unfenced".into());
            }
            if let Some(credentials) = &credentials {
                kv_args.extend(credentials.store_args(options.gate));
            }
            let (store, kv_addr) = start_server(
                "fenced-kv",
                &options.kv,
                &kv_args,
                "fenced-kv",
                options.show_logs,
            )
            .await?;
            (Some(store), url(&kv_addr), RESOURCE)
        }
        Store::Postgres { url } => {
            prepare_postgres(url).await?;
            (None, url.clone(), PG_RESOURCE)
        }
    };
    let store_name = match &options.store {
        Store::Kv => format!("store on {store_url}"),
        Store::Postgres { .. } => "store: PostgreSQL".to_string(),
    };
    timeline.record(
        Lane::Director,
        Mark::Note,
        format!(
            "lock server on {lock_addr}, {store_name} (gate {})",
            if options.gate {
                "ON"
            } else {
                "OFF: stale writes accepted"
            }
        ),
    );
    if let Some(secure) = options.secure {
        let credential = match secure {
            Secure::Tokens => "every call carries its caller's bearer token",
            Secure::Certificates => "every caller connects over TLS with its client certificate",
        };
        timeline.record(
            Lane::Director,
            Mark::Note,
            format!(
                "secured: {credential}, the policy lets alpha and beta lock orders/*, and every \
                 grant carries a signed sequencer"
            ) + if options.gate && options.store == Store::Kv {
                " that the store verifies with every write"
            } else {
                ""
            },
        );
    }
    let watcher = watch_lock(&lock_server, &director, timeline.clone()).await?;

    // Step 2: two workers compete; alpha wins and writes.
    let worker = |name: &str| {
        let mut args = credentials
            .as_ref()
            .map(|credentials| credentials.worker_args(name))
            .unwrap_or_default();
        args.extend([
            "--unfenced".into(),
            (!options.gate).to_string(),
            "--name".into(),
            name.into(),
            "--lock-server".into(),
            lock_server.clone(),
            "--store".into(),
            store_url.clone(),
            "--lock".into(),
            LOCK.into(),
            "--resource".into(),
            resource.into(),
            "--ttl-ms".into(),
            options.ttl.as_millis().to_string(),
        ]);
        Child::spawn(name, &options.worker, &args, options.show_logs)
    };
    let mut alpha = Actor::new(worker("alpha")?, Lane::Alpha, timeline.clone());
    let mut beta = Actor::new(worker("beta")?, Lane::Beta, timeline.clone());
    alpha.send(command::ACQUIRE).await?;
    let alpha_token = alpha.expect(report::ACQUIRED).await?.parse_u64(0)?;
    alpha.send(command::FENCE).await?;
    alpha.expect(report::FENCED).await?;
    alpha.send(&format!("{} alpha-1", command::WRITE)).await?;
    alpha.expect(report::ACCEPTED).await?;

    // Step 3: beta queues for the lock; alpha prepares its next write and freezes right
    // before it leaves (the write's command is already in its stdin).
    beta.send(command::ACQUIRE).await?;
    alpha
        .send(&format!(
            "{} alpha-2 (written by a zombie)",
            command::PREPARE
        ))
        .await?;
    alpha.expect(report::PREPARED).await?;
    alpha.child.stop()?;
    timeline.record(
        Lane::Alpha,
        Mark::Stopped,
        "SIGSTOP: alpha freezes with its write ready to go",
    );
    alpha.send(command::SEND).await?;

    // Step 4: alpha's lease expires; beta is granted the lock, fences the store and writes.
    let beta_token = beta.expect(report::ACQUIRED).await?.parse_u64(0)?;
    beta.send(command::FENCE).await?;
    beta.expect(report::FENCED).await?;
    beta.send(&format!("{} beta-1", command::WRITE)).await?;
    beta.expect(report::ACCEPTED).await?;

    // Step 5: alpha wakes; its write goes out with the old token; its SDK notices.
    alpha.child.resume()?;
    timeline.record(
        Lane::Alpha,
        Mark::Continued,
        "SIGCONT: alpha runs again, unaware of the time lost",
    );
    let mut zombie_rejected = None;
    let mut zombie_accepted = false;
    let mut alpha_pause_ms = None;
    let mut alpha_lost = false;
    while !(zombie_rejected.is_some() || zombie_accepted) || alpha_pause_ms.is_none() || !alpha_lost
    {
        let line = alpha.next().await?;
        match line.kind.as_str() {
            report::REJECTED => zombie_rejected = Some((line.parse_u64(0)?, line.parse_u64(1)?)),
            report::ACCEPTED => zombie_accepted = true,
            report::PAUSE => alpha_pause_ms = Some(line.parse_u64(0)?),
            report::STATE if line.detail.starts_with("lost") => alpha_lost = true,
            _ => {}
        }
    }
    // Step 6: alpha tries to go on leading; the SDK refuses to hand out the token.
    alpha.send(&format!("{} alpha-3", command::WRITE)).await?;
    let after = alpha
        .expect_one_of(&[report::REFUSED, report::ACCEPTED, report::REJECTED])
        .await?;
    let alpha_refused_after = after.kind == report::REFUSED;
    if alpha_refused_after {
        timeline.record(Lane::Alpha, Mark::Sdk, "alpha stops acting as leader");
    }

    // Step 7: what the store holds.
    let (final_value, final_token) = match &options.store {
        Store::Kv => read_store(&store_url, &director).await?,
        Store::Postgres { url } => read_postgres(url).await?,
    };
    timeline.record(
        Lane::Store,
        Mark::Note,
        format!("final value: {final_value:?} (written with token {final_token})"),
    );
    let _ = alpha.send(command::EXIT).await;
    let _ = beta.send(command::EXIT).await;
    watcher.abort();
    Ok(Report {
        gate: options.gate,
        alpha_token,
        beta_token,
        zombie_rejected,
        zombie_accepted,
        alpha_pause_ms,
        alpha_lost,
        alpha_refused_after,
        final_value,
        final_token,
        timeline,
    })
}

/// One report line from a worker.
struct Line {
    kind: String,
    detail: String,
}

impl Line {
    fn parse_u64(&self, index: usize) -> Result<u64, DemoError> {
        self.detail
            .split_whitespace()
            .nth(index)
            .and_then(|word| word.parse().ok())
            .ok_or_else(|| DemoError::Io {
                what: format!("reading {:?}", self.kind),
                reason: format!("no number at {index} in {:?}", self.detail),
            })
    }
}

/// A worker process and the lane it is drawn in; every line it prints goes on the timeline.
struct Actor {
    child: Child,
    lane: Lane,
    timeline: Timeline,
}

impl Actor {
    fn new(child: Child, lane: Lane, timeline: Timeline) -> Self {
        Actor {
            child,
            lane,
            timeline,
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), DemoError> {
        self.child.send(line).await
    }

    async fn next(&mut self) -> Result<Line, DemoError> {
        let text = self.child.next_line(STEP, "a report").await?;
        let (kind, detail) = parse_report(&text);
        let line = Line {
            kind: kind.to_string(),
            detail: detail.to_string(),
        };
        self.note(&line);
        if line.kind == report::ERROR {
            return Err(DemoError::Io {
                what: format!("{} failed", self.lane.name()),
                reason: line.detail,
            });
        }
        Ok(line)
    }

    async fn expect(&mut self, kind: &str) -> Result<Line, DemoError> {
        self.expect_one_of(&[kind]).await
    }

    async fn expect_one_of(&mut self, kinds: &[&str]) -> Result<Line, DemoError> {
        loop {
            let line = self.next().await?;
            if kinds.contains(&line.kind.as_str()) {
                return Ok(line);
            }
        }
    }

    /// Narrates a report.
    fn note(&self, line: &Line) {
        let who = self.lane.name();
        let first = line.detail.split_whitespace().next().unwrap_or("");
        let number = first.parse::<u64>().unwrap_or(0);
        let (lane, mark, text) = match line.kind.as_str() {
            report::ACQUIRED => (
                self.lane,
                Mark::Note,
                format!("{who} is leader, with token {number}"),
            ),
            report::FENCED => (
                Lane::Store,
                Mark::Note,
                format!("{who} fenced the store: mark is now {number}"),
            ),
            report::PREPARED => (
                self.lane,
                Mark::Note,
                format!("{who} got token {number} from its SDK for its next write"),
            ),
            report::ACCEPTED => (
                Lane::Store,
                Mark::Accepted(number),
                format!("accepted {who}'s write with token {}", line.detail),
            ),
            report::REJECTED => {
                let mut numbers = line
                    .detail
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok());
                let (presented, current) =
                    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
                (Lane::Store, Mark::Rejected(presented, current), format!("REJECTED {who}'s write: StaleToken {{ presented: {presented}, current: {current} }}"))
            }
            report::REFUSED => (
                self.lane,
                Mark::Sdk,
                format!("{who}'s SDK refuses to hand out the token: {}", line.detail),
            ),
            report::PAUSE => (
                self.lane,
                Mark::Sdk,
                format!("{who}'s SDK detected a pause of {number} ms"),
            ),
            report::STATE => (
                self.lane,
                if line.detail.starts_with("held") {
                    Mark::Note
                } else {
                    Mark::Sdk
                },
                format!(
                    "{who}'s lease: {}",
                    line.detail
                        .split_once(' ')
                        .map_or(line.detail.as_str(), |(_, rest)| rest)
                ),
            ),
            _ => (
                self.lane,
                Mark::Note,
                format!("{who}: {} {}", line.kind, line.detail),
            ),
        };
        self.timeline.record(lane, mark, text);
    }
}

/// Follows the lock on the server and puts grants and expiries on the timeline.
async fn watch_lock(
    lock_server: &str,
    director: &Access,
    timeline: Timeline,
) -> Result<JoinHandle<()>, DemoError> {
    let mut client =
        pb::lock_service_client::LockServiceClient::new(director.channel(lock_server).await?);
    let request = director.request(pb::WatchRequest {
        lock: LOCK.into(),
        prefix: String::new(),
        start_revision: 0,
    })?;
    let mut events = client
        .watch(request)
        .await
        .map_err(|e| io("watching the lock", e))?
        .into_inner();
    Ok(tokio::spawn(async move {
        while let Ok(Some(event)) = events.message().await {
            let (mark, text) = match event.kind() {
                pb::watch_event::Kind::Acquired => (
                    Mark::Granted(event.token),
                    format!(
                        "granted the lock to {} with token {}",
                        event.holder, event.token
                    ),
                ),
                pb::watch_event::Kind::Expired => (
                    Mark::Expired(event.token),
                    format!("{}'s lease (token {}) expired", event.holder, event.token),
                ),
                pb::watch_event::Kind::Released => (
                    Mark::Note,
                    format!("{} released the lock (token {})", event.holder, event.token),
                ),
                pb::watch_event::Kind::Unspecified | pb::watch_event::Kind::Progress => continue,
            };
            timeline.record(Lane::LockServer, mark, text);
        }
    }))
}

async fn read_store(store: &str, director: &Access) -> Result<(String, u64), DemoError> {
    let mut client =
        fenced_proto::kv::v1::gated_kv_client::GatedKvClient::new(director.channel(store).await?);
    let request = director.request(kv::GetRequest {
        resource: RESOURCE.into(),
        key: KEY.into(),
    })?;
    let value = client
        .get(request)
        .await
        .map_err(|e| io("reading the store", e))?
        .into_inner();
    Ok((
        String::from_utf8_lossy(&value.value).into_owned(),
        value.token,
    ))
}

/// Connects to PostgreSQL, its connection driven by a task.
async fn connect_postgres(url: &str) -> Result<tokio_postgres::Client, DemoError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| io("connecting to PostgreSQL", e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Installs `fenced.sql` and the demo's table, and forgets the demo resource's data and
/// mark: each demo starts a fresh lock server, whose tokens start again at 1, so a mark
/// left by another demo would shut its workers out. A real deployment never resets a mark
/// (its lock server's tokens only go up).
async fn prepare_postgres(url: &str) -> Result<(), DemoError> {
    let client = connect_postgres(url).await?;
    fenced_gate_postgres::install(&client)
        .await
        .map_err(|e| io("installing fenced.sql", e))?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS fenced_demo_output (
                 resource text NOT NULL,
                 key text NOT NULL,
                 value text NOT NULL,
                 token bigint NOT NULL,
                 PRIMARY KEY (resource, key)
             );
             DELETE FROM fenced_demo_output WHERE resource = '{PG_RESOURCE}';
             DELETE FROM fenced_marks WHERE resource = '{PG_RESOURCE}';"
        ))
        .await
        .map_err(|e| io("preparing the demo's table", e))
}

/// The value the workers left in PostgreSQL, and its token.
async fn read_postgres(url: &str) -> Result<(String, u64), DemoError> {
    let client = connect_postgres(url).await?;
    let row = client
        .query_opt(
            "SELECT value, token FROM fenced_demo_output WHERE resource = $1 AND key = $2",
            &[&PG_RESOURCE, &KEY],
        )
        .await
        .map_err(|e| io("reading the demo's table", e))?;
    let Some(row) = row else {
        return Ok((String::new(), 0));
    };
    let value: String = row.try_get(0).map_err(|e| io("reading the value", e))?;
    let token: i64 = row.try_get(1).map_err(|e| io("reading the token", e))?;
    Ok((value, u64::try_from(token).unwrap_or(0)))
}

fn io(what: &str, error: impl std::fmt::Display) -> DemoError {
    DemoError::Io {
        what: what.to_string(),
        reason: error.to_string(),
    }
}
