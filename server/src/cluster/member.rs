//! [`OpenMember`] and [`RunningMember`]: a `fenced` process as a member of a replicated
//! cluster. Opening reads the raft log and the state machine from the data directory;
//! starting runs the raft core, its listener for peers, the batched leadership check, and
//! the *terms* task, which serves clients while this member leads.
//!
//! A term of service, on promotion ([`crate::cluster::promotion`]):
//! 1. the lock table is rebuilt from the committed state the promotion read back, every
//!    restored lease with its full TTL from now and every lock-delay restarted (as a single
//!    node does after a restart, so S3 and S7 hold across the failover);
//! 2. a store that commits through raft ([`Store::replicated`]), a committer thread and a
//!    reaper start over it, exactly as a single node's do over its journal;
//! 3. the engine is made the one that answers ([`Serving::serve`]).
//!
//! The term ends when the member is deposed (the promoter says so), when a commit fails or
//! times out (the engine's fatal token: its table may no longer match the log), or at
//! shutdown: clients are refused as not-leader from then on, everyone waiting on the term
//! is answered "outcome unknown" ([`Engine::close`]), and the committer and reaper stop.
//! A member that still leads after its term ended for a failed commit is promoted again:
//! a new barrier, a new epoch, the committed state read back again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::error::{InitializeError, RaftError};
use openraft::Raft;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster::error::RaftStoreError;
use crate::cluster::leadership::{Leadership, LeadershipConfig, LeadershipError};
use crate::cluster::log_store::{LogStore, DEFAULT_SEGMENT_BYTES};
use crate::cluster::membership::Membership;
use crate::cluster::network::Network;
use crate::cluster::promotion::{Promoter, Promotion, PromotionError, RoleChange};
use crate::cluster::quorum_watch::spawn_quorum_watch;
use crate::cluster::raft_service::spawn_raft_server;
use crate::cluster::replicated_commit::ReplicatedCommit;
use crate::cluster::seed::{self, SeedError};
use crate::cluster::settings::{ClusterSettings, ClusterSettingsError};
use crate::cluster::state_machine::{Image, StateMachine};
use crate::cluster::types::TypeConfig;
use crate::committer::{run_reaper, spawn_committer};
use crate::config::Config;
use crate::engine::Engine;
use crate::serving::Serving;
use crate::store::Store;
use crate::table::{Limits, LockTable, RestoreError};

/// Why a cluster member cannot start or go on, with the evidence.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The cluster settings cannot work.
    #[error("invalid cluster settings: {0}")]
    Settings(#[from] ClusterSettingsError),
    /// The raft log or the state machine cannot be opened.
    #[error("cannot open the cluster's storage: {0}")]
    Store(#[from] RaftStoreError),
    /// The raft listener's address cannot be bound.
    #[error("cannot listen on {addr} (raft listener): {source}")]
    RaftListen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// openraft could not start the raft core.
    #[error("cannot start the raft core: {reason}")]
    Start {
        /// openraft's reason.
        reason: String,
    },
    /// The new cluster could not be initialized with the initial members.
    #[error("cannot initialize the cluster: {reason}")]
    Initialize {
        /// openraft's reason.
        reason: String,
    },
    /// The leadership check cannot start.
    #[error("cannot start the leadership check: {0}")]
    Leadership(#[from] LeadershipError),
    /// Watching for promotions failed (the raft core stopped, or the state read back is
    /// unusable).
    #[error("{0}")]
    Promotion(#[from] PromotionError),
    /// The committed state does not make a lock table.
    #[error("the committed state in {} does not make a lock table: {source}", dir.display())]
    Restore {
        /// The member's data directory.
        dir: PathBuf,
        /// What is inconsistent.
        #[source]
        source: RestoreError,
    },
    /// The cluster could not be seeded from a single node's data directory.
    #[error("cannot seed the cluster: {0}")]
    Seed(#[from] SeedError),
    /// A term's committer thread could not be started.
    #[error("cannot start a term's committer thread: {0}")]
    SpawnCommitter(#[source] std::io::Error),
    /// The raft listener failed.
    #[error("the raft listener failed: {0}")]
    RaftServe(#[source] tonic::transport::Error),
    /// A task of the member panicked or was cancelled.
    #[error("the member's {task} task failed: {source}")]
    Task {
        /// Which task.
        task: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A member whose storage is open, not yet running.
pub struct OpenMember {
    /// Its settings, checked.
    settings: ClusterSettings,
    /// openraft's configuration, from the settings.
    raft_config: Arc<openraft::Config>,
    /// The raft log.
    log: LogStore,
    /// The state machine.
    state_machine: StateMachine,
}

impl OpenMember {
    /// Checks `settings` and opens the raft log (`<data dir>/raft-log`) and the state
    /// machine (`<data dir>/raft-state`).
    pub fn open(config: &Config, settings: ClusterSettings) -> Result<OpenMember, MemberError> {
        let raft_config = settings.raft_config()?;
        let (log, torn) = LogStore::open(
            &config.data_dir.join("raft-log"),
            config.fdatasync,
            DEFAULT_SEGMENT_BYTES,
        )?;
        if let Some(torn) = torn {
            tracing::warn!(?torn, "cut off a torn last append of the raft log");
        }
        let state_machine =
            StateMachine::open(&config.data_dir.join("raft-state"), config.fdatasync)?;
        // A watcher that resumes here from before this start gets what the log still
        // holds; one that cannot is told to list again, as without the recall.
        match state_machine.recall_events(&log) {
            Ok(recalled) => tracing::info!(recalled, "recalled the applied entries' events"),
            Err(error) => {
                tracing::warn!(%error, "recalled no events: watchers resume from this start on");
            }
        }
        Ok(OpenMember {
            settings,
            raft_config,
            log,
            state_machine,
        })
    }

    /// Starts the raft core, its listener, the leadership check and the terms task.
    /// `fatal` is cancelled if the member cannot go on (the raft core stopped, the
    /// committed state is unusable).
    pub async fn start(
        self,
        config: Arc<Config>,
        fatal: CancellationToken,
    ) -> Result<RunningMember, MemberError> {
        let OpenMember {
            settings,
            raft_config,
            log,
            state_machine,
        } = self;
        let me = settings.node_id;
        let image = state_machine.image();
        let event_log = state_machine.event_log();
        let listener = TcpListener::bind(settings.raft_listen)
            .await
            .map_err(|source| MemberError::RaftListen {
                addr: settings.raft_listen,
                source,
            })?;
        // Half the shortest election timeout: a member that comes back hears from the
        // leader before its own election timer runs out.
        let network = Network::new(me)
            .with_unreachable_backoff(settings.election_timeout / 2)
            .with_secret(settings.peer_secret.clone());
        let raft = Raft::new(me, raft_config, network, log, state_machine)
            .await
            .map_err(|error| MemberError::Start {
                reason: error.to_string(),
            })?;
        let stop = CancellationToken::new();
        let raft_server = spawn_raft_server(&raft, listener, settings.peer_secret.clone(), &stop);
        if !settings.initial_members.is_empty() {
            // A seeding member starts the cluster alone, so that nobody serves before the
            // seed is in; it adds the other members once it has seeded ([`seed`]).
            let first = if settings.seed_from.is_some() {
                settings
                    .initial_members
                    .iter()
                    .filter(|(id, _)| **id == me)
                    .map(|(id, node)| (*id, node.clone()))
                    .collect()
            } else {
                settings.initial_members.clone()
            };
            match raft.initialize(first).await {
                Ok(()) => {
                    tracing::info!(members = ?settings.initial_members.keys(), "initialized a new cluster")
                }
                // The data directory holds a cluster already: the log knows its members.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => {
                    stop.cancel();
                    return Err(MemberError::Initialize {
                        reason: error.to_string(),
                    });
                }
            }
        }
        let leadership =
            Leadership::spawn(raft.clone(), LeadershipConfig::default(), stop.clone())?;
        let quorum_watch = spawn_quorum_watch(raft.clone(), stop.clone());
        let serving = Serving::cluster(raft.metrics(), leadership, event_log);
        let terms = tokio::spawn(run_terms(Terms {
            promoter: Promoter::new(me, raft.clone(), image.clone()),
            raft: raft.clone(),
            image,
            serving: serving.clone(),
            config,
            settings,
            clock: Clock::start(),
            stop: stop.clone(),
            fatal,
        }));
        Ok(RunningMember {
            raft,
            serving,
            stop,
            raft_server,
            terms,
            quorum_watch,
        })
    }
}

/// A running member: its raft core and the tasks around it.
pub struct RunningMember {
    /// The raft core.
    raft: Raft<TypeConfig>,
    /// Which engine answers clients.
    serving: Serving,
    /// Stops the raft listener, the leadership check, the quorum watch and the terms
    /// task.
    stop: CancellationToken,
    /// The raft listener.
    raft_server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// The terms task.
    terms: JoinHandle<Result<(), MemberError>>,
    /// The watch that makes a leader without a quorum step down.
    quorum_watch: JoinHandle<()>,
}

impl RunningMember {
    /// Which engine answers clients: what the client listeners serve.
    pub fn serving(&self) -> Serving {
        self.serving.clone()
    }

    /// The `ClusterService` of this member.
    pub fn membership(&self) -> Membership {
        Membership::new(self.raft.clone(), self.serving.clone())
    }

    /// Stops in order, once the client listeners have drained: the current term (its
    /// waiters answered, its committer and reaper stopped), the raft core, then the raft
    /// listener. Returns the first failure.
    pub async fn stop(self) -> Result<(), MemberError> {
        self.stop.cancel();
        let terms = self.terms.await.map_err(|source| MemberError::Task {
            task: "terms",
            source,
        });
        if let Err(error) = self.quorum_watch.await {
            tracing::warn!(%error, "the quorum watch ended badly");
        }
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "the raft core did not shut down cleanly");
        }
        let served = self.raft_server.await.map_err(|source| MemberError::Task {
            task: "raft listener",
            source,
        });
        terms??;
        served?.map_err(MemberError::RaftServe)
    }
}

/// What the terms task works with.
struct Terms {
    /// Turns leadership changes into promotions and demotions.
    promoter: Promoter,
    /// The raft core, for each term's commits.
    raft: Raft<TypeConfig>,
    /// The state machine's image, read back after a seed.
    image: Image,
    /// Where each term's engine is served.
    serving: Serving,
    /// The server's settings (the table's limits).
    config: Arc<Config>,
    /// The cluster settings (the commit timeout).
    settings: ClusterSettings,
    /// The member's monotonic clock, which every term's table runs on.
    clock: Clock,
    /// Stops the task (shutdown).
    stop: CancellationToken,
    /// Cancelled when the member cannot go on.
    fatal: CancellationToken,
}

/// Serves a term while this member leads, from promotion to demotion, until `stop`.
async fn run_terms(mut terms: Terms) -> Result<(), MemberError> {
    let result = serve_terms(&mut terms).await;
    if let Err(error) = &result {
        tracing::error!(%error, "the cluster member cannot go on; stopping");
        terms.fatal.cancel();
    }
    result
}

async fn serve_terms(terms: &mut Terms) -> Result<(), MemberError> {
    let mut current: Option<Term> = None;
    loop {
        let ended = current.as_ref().map(|term| term.ended.clone());
        let term_ended = async {
            match ended {
                Some(ended) => ended.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = terms.stop.cancelled() => {
                if let Some(term) = current.take() {
                    term.end(&terms.serving).await;
                }
                return Ok(());
            }
            _ = term_ended => {
                if let Some(term) = current.take() {
                    tracing::warn!("this leader's term of service ended after a failed commit; it is promoted again if it still leads");
                    term.end(&terms.serving).await;
                }
                terms.promoter.forget();
            }
            change = terms.promoter.next() => {
                if let Some(term) = current.take() {
                    term.end(&terms.serving).await;
                }
                match change? {
                    RoleChange::Promoted(mut promotion) => {
                        if let Some(dir) = &terms.settings.seed_from {
                            if seed::is_empty(&promotion.restored) {
                                let records = seed::read_single_node(dir, terms.config.cache_bytes)?;
                                let count = records.len();
                                match seed::commit_seed(&terms.raft, &terms.image, promotion.epoch, records).await {
                                    Ok(restored) => {
                                        tracing::info!(dir = %dir.display(), records = count, next_token = %restored.next_token, "seeded the cluster from a single node's data directory");
                                        promotion.restored = restored;
                                    }
                                    Err(SeedError::Commit { reason }) => {
                                        tracing::warn!(%reason, "the seed was not committed; seeding again when this member leads again");
                                        terms.promoter.forget();
                                        continue;
                                    }
                                    Err(error) => return Err(error.into()),
                                }
                            }
                        }
                        if terms.settings.seed_from.is_some() {
                            tokio::spawn(seed::add_initial_members(
                                terms.raft.clone(),
                                terms.settings.node_id,
                                terms.settings.initial_members.clone(),
                            ));
                        }
                        tracing::info!(term = promotion.term, barrier = %promotion.barrier_log_id, leases = promotion.restored.leases.len(), locks = promotion.restored.locks.len(), "promoted: serving as the leader");
                        current = Some(Term::start(terms, promotion)?);
                    }
                    RoleChange::Demoted(demotion) => {
                        tracing::info!(leader = ?demotion.leader, "no longer the leader");
                    }
                }
            }
        }
    }
}

/// One term of service: the engine and its background work.
struct Term {
    /// The engine.
    engine: Arc<Engine>,
    /// Cancelled when the committer fails: the term must end.
    ended: CancellationToken,
    /// The committer thread.
    committer: std::thread::JoinHandle<Result<(), crate::Error>>,
    /// Tells the committer to stop.
    stop_committer: Arc<AtomicBool>,
    /// The reaper.
    reaper: JoinHandle<Result<(), crate::Error>>,
    /// Stops the reaper.
    stop_reaper: CancellationToken,
}

impl Term {
    /// Rebuilds the table from `promotion`, starts its committer and reaper, and serves it.
    fn start(terms: &Terms, promotion: Promotion) -> Result<Term, MemberError> {
        let Promotion {
            epoch, restored, ..
        } = promotion;
        let table = LockTable::restore(
            Limits::from(terms.config.as_ref()),
            restored.next_token,
            restored.leases,
            restored.locks,
            restored.delays,
            restored.waiters,
            terms.clock.now(),
        )
        .map_err(|source| MemberError::Restore {
            dir: terms.config.data_dir.clone(),
            source,
        })?;
        let store = Store::replicated(ReplicatedCommit::new(
            terms.raft.clone(),
            tokio::runtime::Handle::current(),
            terms.settings.commit_timeout,
            epoch,
        ));
        let ended = CancellationToken::new();
        // Every member publishes the events as it applies them, this one too: the engine
        // only numbers them.
        let engine = Arc::new(Engine::new(
            table,
            store,
            terms.clock,
            ended.clone(),
            restored.last_revision,
            None,
        ));
        let stop_committer = Arc::new(AtomicBool::new(false));
        let committer = spawn_committer(engine.clone(), stop_committer.clone())
            .map_err(MemberError::SpawnCommitter)?;
        let stop_reaper = CancellationToken::new();
        let reaper = tokio::spawn(run_reaper(engine.clone(), stop_reaper.clone()));
        terms.serving.serve(engine.clone());
        Ok(Term {
            engine,
            ended,
            committer,
            stop_committer,
            reaper,
            stop_reaper,
        })
    }

    /// Ends the term: refuses clients from now on, answers everyone waiting on it, stops
    /// the reaper and the committer. A committer blocked in a commit is not waited for: it
    /// stops when the commit returns (within the commit timeout), and whatever it was
    /// committing is skipped by the next term's epoch if it lands after the next barrier.
    async fn end(self, serving: &Serving) {
        serving.stop_serving();
        self.engine.close();
        self.stop_reaper.cancel();
        match self.reaper.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "a term's reaper failed"),
            Err(error) => tracing::warn!(%error, "a term's reaper task failed"),
        }
        self.stop_committer.store(true, Ordering::SeqCst);
        self.engine.store().kick_committer();
        let committer = self.committer;
        drop(tokio::task::spawn_blocking(move || {
            if let Ok(Err(error)) = committer.join() {
                tracing::warn!(%error, "a term's committer failed");
            }
        }));
    }
}
