//! A demo worker: one real OS process that uses the client SDK to lead and to write to the
//! gated store, driven line by line on stdin and reporting line by line on stdout (the
//! protocol is in `fenced_demo::worker`).
//!
//! The store is `fenced-kv` (an `http://` URL) or PostgreSQL (a `postgresql://` URL or a
//! libpq `key=value` string), where every write is a transaction that starts with
//! `fenced_check` (`--unfenced true` leaves the check out of writes: the counterfactual).

use std::process::ExitCode;
use std::sync::{Arc, Weak};
use std::time::Duration;

use fenced_client::{AcquireOptions, Client, Lease, LeaseState, SuspectReason};
use fenced_demo::credentials::Access;
use fenced_demo::worker::{command, report};
use fenced_proto::kv::v1 as kv;
use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use fenced_types::{FencingToken, LockName};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

/// What the worker was told on its command line.
struct Args {
    name: String,
    lock_server: String,
    store: String,
    lock: String,
    resource: String,
    ttl: Duration,
    /// PostgreSQL only: write without `fenced_check` (fences still raise the mark).
    unfenced: bool,
    /// The bearer token for `fenced` and `fenced-kv`, read from `--token-file` (the secured
    /// story); `None` sends none.
    token: Option<String>,
    /// The client certificate for `fenced` and `fenced-kv` over TLS, and the CA they are
    /// trusted by (`--tls-cert`, `--tls-key`, `--tls-ca`; the secured story with
    /// certificates).
    tls: Option<tonic::transport::ClientTlsConfig>,
}

fn parse_args() -> Result<Args, String> {
    let mut values = std::collections::HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        values.insert(flag.trim_start_matches("--").to_string(), value);
    }
    let mut take = |key: &str| {
        values
            .remove(key)
            .ok_or_else(|| format!("--{key} is required"))
    };
    Ok(Args {
        name: take("name")?,
        lock_server: take("lock-server")?,
        store: take("store")?,
        lock: take("lock")?,
        resource: take("resource")?,
        ttl: Duration::from_millis(
            take("ttl-ms")?
                .parse()
                .map_err(|e| format!("--ttl-ms: {e}"))?,
        ),
        unfenced: match values.remove("unfenced").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("--unfenced: {other:?} is not true or false")),
        },
        tls: match (
            values.remove("tls-cert"),
            values.remove("tls-key"),
            values.remove("tls-ca"),
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => {
                let read = |flag: &str, path: &str| {
                    std::fs::read_to_string(path).map_err(|e| format!("--{flag} {path}: {e}"))
                };
                Some(fenced_demo::credentials::client_tls(
                    &read("tls-ca", &ca)?,
                    &read("tls-cert", &cert)?,
                    &read("tls-key", &key)?,
                ))
            }
            _ => return Err("--tls-cert, --tls-key and --tls-ca go together".into()),
        },
        token: match values.remove("token-file") {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("--token-file {path}: {e}"))?
                    .trim()
                    .to_string(),
            ),
        },
    })
}

fn say(kind: &str, detail: impl std::fmt::Display) {
    println!("{kind} {detail}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("fenced-demo-worker: {message}");
            return ExitCode::FAILURE;
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            say(report::ERROR, &message);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut builder = Client::builder(args.lock_server.clone())
        .holder(args.name.clone())
        .default_ttl(args.ttl)
        .pause_threshold(Duration::from_millis(250));
    if let Some(token) = &args.token {
        builder = builder.bearer_token(token.clone());
    }
    if let Some(tls) = &args.tls {
        builder = builder.tls(tls.clone());
    }
    let client = builder
        .connect()
        .await
        .map_err(|e| format!("connect to the lock server: {e}"))?;
    let mut store = Store::connect(&args).await?;
    let mut lease: Option<Arc<Lease>> = None;
    let mut prepared: Option<(Proof, String)> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();

    while let Ok(Some(line)) = lines.next_line().await {
        let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match verb {
            command::ACQUIRE => {
                let options = AcquireOptions::wait(Duration::from_secs(120)).ttl(args.ttl);
                let acquired = client
                    .acquire(&args.lock, options)
                    .await
                    .map_err(|e| format!("acquire: {e}"))?;
                // A grant that came after a wait in the queue is suspect until a renewal
                // confirms it (the deadline counts from the send): report it once usable.
                let mut states = acquired.watch();
                let confirmed =
                    states.wait_for(|state| !matches!(state, LeaseState::Suspect { .. }));
                let _ = tokio::time::timeout(Duration::from_secs(30), confirmed).await;
                say(report::ACQUIRED, acquired.token());
                let acquired = Arc::new(acquired);
                tokio::spawn(report_states(acquired.watch(), Arc::downgrade(&acquired)));
                lease = Some(acquired);
            }
            command::FENCE => {
                let Some(held) = &lease else {
                    return Err("fence without a lease".into());
                };
                match Proof::of(held) {
                    Ok(proof) => store.fence(&args.resource, &proof).await,
                    Err(refusal) => say(report::REFUSED, refusal),
                }
            }
            command::WRITE | command::PREPARE => {
                let Some(held) = &lease else {
                    return Err("write without a lease".into());
                };
                // The check every guarded write makes right before it goes out.
                match Proof::of(held) {
                    Ok(proof) if verb == command::PREPARE => {
                        say(report::PREPARED, proof.token);
                        prepared = Some((proof, rest.to_string()));
                    }
                    Ok(proof) => store.put(&args.resource, &proof, rest).await,
                    Err(refusal) => say(report::REFUSED, refusal),
                }
            }
            command::SEND => {
                // The write already passed the SDK's check before the pause: nothing in
                // this process can stop it now. Only the gate can.
                let Some((proof, value)) = prepared.take() else {
                    return Err("send without a prepared write".into());
                };
                store.put(&args.resource, &proof, &value).await;
            }
            command::EXIT => {
                if let Some(held) = lease.take().and_then(|held| Arc::try_unwrap(held).ok()) {
                    let _ = held.release().await;
                }
                return Ok(());
            }
            other => say(report::ERROR, format!("unknown command {other:?}")),
        }
    }
    Ok(())
}

/// The key every write goes to.
const KEY: &str = "leader-output";

/// What a write carries to show it is the leader's: the token `fence()` handed out and,
/// when the server signs, the sequencer `fence_sequencer()` handed out with it.
struct Proof {
    token: u64,
    sequencer: Vec<u8>,
}

impl Proof {
    /// The lease's token and sequencer, if the SDK still hands them out.
    fn of(lease: &Lease) -> Result<Proof, fenced_client::FenceError> {
        let token = lease.fence()?.get();
        let sequencer = lease
            .fence_sequencer()?
            .map(|sequencer| sequencer.encode())
            .unwrap_or_default();
        Ok(Proof { token, sequencer })
    }
}

/// Where the worker writes.
enum Store {
    /// `fenced-kv` over gRPC; its gate checks the token (and the sequencer, if it verifies
    /// them). `access` puts the worker's bearer token, if any, on each call.
    Kv {
        client: GatedKvClient<Channel>,
        access: Access,
    },
    /// PostgreSQL; `fenced_check` in each transaction checks the token, unless `unfenced`.
    Postgres {
        client: tokio_postgres::Client,
        unfenced: bool,
    },
}

impl Store {
    async fn connect(args: &Args) -> Result<Store, String> {
        let (url, unfenced) = (args.store.as_str(), args.unfenced);
        if url.starts_with("http://") || url.starts_with("https://") {
            let access = Access::new(args.token.clone(), args.tls.clone());
            let channel = access.channel(url).await.map_err(|e| e.to_string())?;
            return Ok(Store::Kv {
                client: GatedKvClient::new(channel),
                access,
            });
        }
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect to PostgreSQL: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Store::Postgres { client, unfenced })
    }

    /// Raises the resource's mark to the proof's token (and writes nothing).
    async fn fence(&mut self, resource: &str, proof: &Proof) {
        let token = proof.token;
        match self {
            Store::Kv { client, access } => {
                let request = access.request(kv::FenceRequest {
                    resource: resource.to_string(),
                    token,
                    sequencer: proof.sequencer.clone(),
                });
                let answer = match request {
                    Ok(request) => client.fence(request).await,
                    Err(error) => return say(report::ERROR, error),
                };
                match answer {
                    Ok(reply) => say(report::FENCED, reply.into_inner().mark),
                    Err(status) => report_rejection(&status),
                }
            }
            Store::Postgres { client, .. } => {
                let outcome = match guarded(client, resource, token).await {
                    Ok(tx) => {
                        let mark = tx.mark();
                        tx.commit().await.map(|()| mark)
                    }
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok(mark) => say(report::FENCED, mark),
                    Err(error) => report_gate_error(&error),
                }
            }
        }
    }

    /// Writes `value` with the proof.
    async fn put(&mut self, resource: &str, proof: &Proof, value: &str) {
        let token = proof.token;
        match self {
            Store::Kv { client, access } => {
                let request = access.request(kv::PutRequest {
                    resource: resource.to_string(),
                    key: KEY.to_string(),
                    value: value.as_bytes().to_vec(),
                    token,
                    sequencer: proof.sequencer.clone(),
                });
                let answer = match request {
                    Ok(request) => client.put(request).await,
                    Err(error) => return say(report::ERROR, error),
                };
                match answer {
                    Ok(_) => say(report::ACCEPTED, format!("{token} {value}")),
                    Err(status) => report_rejection(&status),
                }
            }
            Store::Postgres { client, unfenced } => {
                let Ok(sql_token) = i64::try_from(token) else {
                    say(
                        report::ERROR,
                        format!("token {token} does not fit a bigint"),
                    );
                    return;
                };
                let outcome = if *unfenced {
                    // The counterfactual: the same write without the check.
                    client
                        .execute(UPSERT, &[&resource, &KEY, &value, &sql_token])
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("write: {e}"))
                } else {
                    match guarded(client, resource, token).await {
                        Ok(tx) => {
                            let written = tx
                                .execute(UPSERT, &[&resource, &KEY, &value, &sql_token])
                                .await;
                            match written {
                                Ok(_) => tx.commit().await.map_err(|e| e.to_string()),
                                Err(error) => Err(format!("write: {error}")),
                            }
                        }
                        Err(error) => {
                            report_gate_error(&error);
                            return;
                        }
                    }
                };
                match outcome {
                    Ok(()) => say(report::ACCEPTED, format!("{token} {value}")),
                    Err(message) => say(report::ERROR, format!("PostgreSQL: {message}")),
                }
            }
        }
    }
}

/// The demo's write: one row per resource and key, with its writer's token.
const UPSERT: &str = "INSERT INTO fenced_demo_output (resource, key, value, token) \
                      VALUES ($1, $2, $3, $4) ON CONFLICT (resource, key) \
                      DO UPDATE SET value = EXCLUDED.value, token = EXCLUDED.token";

/// `begin_guarded` with the worker's plain numbers.
async fn guarded<'a>(
    client: &'a mut tokio_postgres::Client,
    resource: &str,
    token: u64,
) -> Result<fenced_gate_postgres::GuardedTransaction<'a>, fenced_gate::Error> {
    let resource = LockName::new(resource).map_err(fenced_gate::Error::InvalidResource)?;
    let token = FencingToken::new(token).map_err(fenced_gate::Error::InvalidToken)?;
    fenced_gate_postgres::begin_guarded(client, &resource, token).await
}

/// A refusal from the PostgreSQL gate as a report line.
fn report_gate_error(error: &fenced_gate::Error) {
    match error {
        fenced_gate::Error::StaleToken {
            presented, current, ..
        } => say(report::REJECTED, format!("{presented} {current}")),
        other => say(report::ERROR, format!("PostgreSQL: {other}")),
    }
}

fn report_rejection(status: &tonic::Status) {
    match fenced_gate::grpc::stale_tokens(status) {
        Some((presented, current)) => say(report::REJECTED, format!("{presented} {current}")),
        None => say(
            report::ERROR,
            format!("store: {} {}", status.code(), status.message()),
        ),
    }
}

/// Prints every state change of the lease, and every pause the SDK detected.
async fn report_states(mut states: tokio::sync::watch::Receiver<LeaseState>, lease: Weak<Lease>) {
    let mut printed = 0;
    loop {
        let Some(lease) = lease.upgrade() else { return };
        let history = lease.history();
        drop(lease);
        for change in history.into_iter().skip(printed) {
            printed += 1;
            if let LeaseState::Suspect {
                reason: SuspectReason::Paused { paused },
            } = &change.state
            {
                say(report::PAUSE, paused.as_millis());
            }
            let word = match &change.state {
                LeaseState::Held => "held",
                LeaseState::Suspect { .. } => "suspect",
                LeaseState::Lost { .. } => "lost",
            };
            say(report::STATE, format!("{word} {}", change.state));
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}
