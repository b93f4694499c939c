//! [`Serving`]: which engine answers clients now.
//!
//! A single node always has one engine. A cluster member has one only while it leads: a
//! new engine per term, built from the committed state when it is promoted
//! ([`crate::cluster::promotion`]) and closed when it stops leading. Between terms, and on
//! every member that does not lead, a request is refused with UNAVAILABLE,
//! `fenced-error: not-leader` and, when this member knows the leader, `fenced-leader` with
//! the leader's client address, so the client goes there
//! ([`fenced_proto::metadata::LEADER`]).
//!
//! Every node also has its [`EventLog`], which `Watch` reads: a cluster member's is fed by
//! what it applies, so it serves watchers whether or not it leads.
//!
//! In a cluster, what a request shows is also confirmed to come from the leader of the
//! moment: a renewal is confirmed, and a read answered, only after a leadership round that
//! began after it arrived ([`Serving::confirm_leadership`];
//! [`crate::cluster::leadership`] argues why). Grants need no round of their own: they are
//! acknowledged only once a quorum committed them, which a deposed leader cannot do.

use std::sync::Arc;

use openraft::RaftMetrics;
use tokio::sync::watch;
use tonic::Status;

use crate::cluster::leadership::{Leadership, LeadershipError};
use crate::cluster::types::{ClusterNode, NodeId};
use crate::convert;
use crate::engine::Engine;
use crate::event_log::EventLog;

/// A cluster member's view of who leads, for its refusals.
type Metrics = watch::Receiver<RaftMetrics<NodeId, ClusterNode>>;

/// Which engine answers clients, and in a cluster, how to confirm it still may. Cheap to
/// clone; every clone sees the same engine.
#[derive(Clone)]
pub struct Serving {
    /// The engine of the moment (`None`: this member does not lead).
    current: watch::Sender<Option<Arc<Engine>>>,
    /// The cluster's side, `None` on a single node.
    cluster: Option<Arc<ClusterSide>>,
    /// This node's events, for watchers.
    event_log: Arc<EventLog>,
}

/// What a cluster member needs to refuse and to confirm.
struct ClusterSide {
    /// This member's raft metrics: who leads, and the members' addresses.
    metrics: Metrics,
    /// The batched leadership check.
    leadership: Leadership,
}

impl Serving {
    /// A single node's: `engine`, always, which publishes its events to `event_log`.
    pub fn single(engine: Arc<Engine>, event_log: Arc<EventLog>) -> Serving {
        let (current, _) = watch::channel(Some(engine));
        Serving {
            current,
            cluster: None,
            event_log,
        }
    }

    /// A cluster member's: no engine until [`Serving::serve`]; refusals name the leader
    /// that `metrics` shows, and [`Serving::confirm_leadership`] runs `leadership`'s check.
    /// Watchers read `event_log`, which the member's state machine feeds.
    pub fn cluster(metrics: Metrics, leadership: Leadership, event_log: Arc<EventLog>) -> Serving {
        let (current, _) = watch::channel(None);
        Serving {
            current,
            cluster: Some(Arc::new(ClusterSide {
                metrics,
                leadership,
            })),
            event_log,
        }
    }

    /// This node's events, for watchers (served whether or not a cluster member leads).
    pub fn event_log(&self) -> &Arc<EventLog> {
        &self.event_log
    }

    /// The engine that answers now, or the not-leader refusal.
    pub fn engine(&self) -> Result<Arc<Engine>, Status> {
        match &*self.current.borrow() {
            Some(engine) => Ok(engine.clone()),
            None => Err(self.not_leader()),
        }
    }

    /// The engine that answers now, if any (for the admin listener's gauges).
    pub fn current(&self) -> Option<Arc<Engine>> {
        self.current.borrow().clone()
    }

    /// Follows engine changes (a term starting or ending), for whoever subscribes to an
    /// engine's events across terms.
    pub fn changes(&self) -> watch::Receiver<Option<Arc<Engine>>> {
        self.current.subscribe()
    }

    /// Makes `engine` the one that answers (a cluster member was promoted).
    pub fn serve(&self, engine: Arc<Engine>) {
        self.current.send_replace(Some(engine));
    }

    /// Stops answering from the current engine and returns it (a cluster member stopped
    /// leading); requests from now on are refused as not-leader.
    pub fn stop_serving(&self) -> Option<Arc<Engine>> {
        self.current.send_replace(None)
    }

    /// In a cluster, Ok once a leadership round that began after this call confirmed this
    /// member as the leader; on a single node, Ok at once.
    pub async fn confirm_leadership(&self) -> Result<(), Status> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        match cluster.leadership.confirm_leader().await {
            Ok(_) => Ok(()),
            Err(LeadershipError::NotLeader { .. }) => Err(self.not_leader()),
            Err(error) => Err(convert::leadership_unconfirmed(&error)),
        }
    }

    /// The not-leader refusal, naming the leader this member knows of (not itself: a
    /// member that leads but has no engine is between terms).
    pub fn not_leader(&self) -> Status {
        let leader = self.cluster.as_ref().and_then(|cluster| {
            let metrics = cluster.metrics.borrow();
            let id = metrics.current_leader.filter(|id| *id != metrics.id)?;
            let node = metrics.membership_config.membership().get_node(&id)?;
            Some((id, node.client_addr.clone()))
        });
        convert::not_leader(leader.as_ref().map(|(id, addr)| (*id, addr.as_str())))
    }
}
