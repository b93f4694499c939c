//! [`ClusterSettings`]: what makes a `fenced` process a member of a replicated cluster, and
//! the raft timing it runs with.
//!
//! The timing decides how fast a cluster notices a dead leader and how long a failover
//! takes (see [`crate::cluster::leadership`] for the worst-case lease extension it implies):
//! heartbeats every [`ClusterSettings::heartbeat_interval`]; a follower that hears none for
//! a random time in `[election_timeout, 2 x election_timeout]` starts an election, which
//! the other followers grant once they too have heard nothing for `2 x election_timeout`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::types::{ClusterNode, NodeId};

/// The default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);

/// The default (shortest) election timeout.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(200);

/// A cluster member's settings. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This member's id: a number above zero, unique in the cluster, stable across
    /// restarts (its data directory belongs to it).
    pub node_id: NodeId,
    /// Where this member listens for its peers' raft messages.
    pub raft_listen: SocketAddr,
    /// The members to start a new cluster with, this one included, by id: each one's raft
    /// and client addresses. Given to every member of a new cluster; a member whose data
    /// directory already holds a cluster ignores it. Empty: this member waits to be added
    /// to a running cluster.
    pub initial_members: BTreeMap<NodeId, ClusterNode>,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// The shortest election timeout; the longest is twice it.
    pub election_timeout: Duration,
    /// How long a commit may wait for a quorum before the leader ends its term of service
    /// (its table is rebuilt from the committed state).
    pub commit_timeout: Duration,
    /// A (stopped) single node's data directory to seed a new cluster from
    /// ([`crate::cluster::seed`]); ignored once the cluster's state is not empty.
    pub seed_from: Option<std::path::PathBuf>,
    /// The cluster's secret ([`crate::cluster::peer_auth`]): every raft message carries
    /// it, and the raft listener refuses any that does not. `None`: raft messages are not
    /// authenticated (keep the raft port on a private network).
    pub peer_secret: Option<crate::cluster::peer_auth::PeerSecret>,
}

/// Cluster settings that cannot work, with the values that conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterSettingsError {
    /// The cluster secret file cannot be used (`--cluster-secret-file`).
    #[error("{0} (--cluster-secret-file)")]
    Secret(String),
    /// Node id 0.
    #[error("the node id must be above zero")]
    ZeroNodeId,
    /// The initial members do not include this member.
    #[error("the initial members {members:?} do not include this member's id {node_id}")]
    NotAnInitialMember {
        /// This member's id.
        node_id: NodeId,
        /// The ids given.
        members: Vec<NodeId>,
    },
    /// Heartbeats that do not come well inside the election timeout would depose healthy
    /// leaders.
    #[error(
        "the heartbeat interval {heartbeat:?} must be above zero and at most a third of the \
         election timeout {election:?}"
    )]
    Timing {
        /// The heartbeat interval.
        heartbeat: Duration,
        /// The election timeout.
        election: Duration,
    },
    /// A commit timeout of zero would end every term at its first commit.
    #[error("the commit timeout must be above zero")]
    ZeroCommitTimeout,
    /// The initial members' list does not parse.
    #[error("the members list {given:?} is invalid ({problem}); expected ID=RAFT_HOST:PORT/CLIENT_HOST:PORT, comma-separated, e.g. 1=10.0.0.1:7600/10.0.0.1:7500,2=...")]
    Members {
        /// The list as given.
        given: String,
        /// What is wrong with it.
        problem: String,
    },
    /// openraft refused the timing.
    #[error("openraft refuses the raft settings: {reason}")]
    Raft {
        /// openraft's reason.
        reason: String,
    },
}

/// Whether `addr` reads as `host:port` (a non-empty host, a port number): what a member's
/// address must be for its peers and clients to dial it.
pub fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Parses the initial members' list: `ID=RAFT_ADDR/CLIENT_ADDR`, comma-separated, each
/// address `host:port` (what peers and clients dial).
pub fn parse_members(given: &str) -> Result<BTreeMap<NodeId, ClusterNode>, ClusterSettingsError> {
    let invalid = |problem: String| ClusterSettingsError::Members {
        given: given.to_string(),
        problem,
    };
    let mut members = BTreeMap::new();
    for member in given.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (id, addrs) = member
            .split_once('=')
            .ok_or_else(|| invalid(format!("{member:?} has no `=`")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| invalid(format!("{id:?} is not a node id")))?;
        let (raft_addr, client_addr) = addrs.split_once('/').ok_or_else(|| {
            invalid(format!(
                "{addrs:?} has no `/` between the raft and client addresses"
            ))
        })?;
        for addr in [raft_addr, client_addr] {
            if !is_host_port(addr.trim()) {
                return Err(invalid(format!("{addr:?} is not host:port")));
            }
        }
        let node = ClusterNode {
            raft_addr: raft_addr.trim().to_string(),
            client_addr: client_addr.trim().to_string(),
        };
        if members.insert(id, node).is_some() {
            return Err(invalid(format!("node {id} is listed twice")));
        }
    }
    if members.is_empty() {
        return Err(invalid("no members".to_string()));
    }
    Ok(members)
}

impl ClusterSettings {
    /// Settings for member `node_id` listening for raft on `raft_listen`, with the default
    /// timing and no initial members.
    pub fn new(node_id: NodeId, raft_listen: SocketAddr) -> ClusterSettings {
        ClusterSettings {
            node_id,
            raft_listen,
            initial_members: BTreeMap::new(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
            commit_timeout: crate::cluster::replicated_commit::DEFAULT_COMMIT_TIMEOUT,
            seed_from: None,
            peer_secret: None,
        }
    }

    /// Checks the settings and builds openraft's configuration from them.
    pub fn raft_config(&self) -> Result<Arc<openraft::Config>, ClusterSettingsError> {
        if self.node_id == 0 {
            return Err(ClusterSettingsError::ZeroNodeId);
        }
        if !self.initial_members.is_empty() && !self.initial_members.contains_key(&self.node_id) {
            return Err(ClusterSettingsError::NotAnInitialMember {
                node_id: self.node_id,
                members: self.initial_members.keys().copied().collect(),
            });
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval * 3 > self.election_timeout
        {
            return Err(ClusterSettingsError::Timing {
                heartbeat: self.heartbeat_interval,
                election: self.election_timeout,
            });
        }
        if self.commit_timeout.is_zero() {
            return Err(ClusterSettingsError::ZeroCommitTimeout);
        }
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "fenced".to_string(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout),
            election_timeout_max: millis(self.election_timeout).saturating_mul(2),
            ..openraft::Config::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|error| ClusterSettingsError::Raft {
                reason: error.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn settings() -> ClusterSettings {
        ClusterSettings::new(1, "127.0.0.1:7101".parse().unwrap())
    }

    // checks: none (operations: a members list that does not parse is refused, naming why)
    #[test]
    fn the_members_list_parses_and_refuses_what_is_malformed() {
        let members =
            parse_members("1=127.0.0.1:7601/127.0.0.1:7501, 2=db2:7600/db2:7500").unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[&2].raft_addr, "db2:7600");
        assert_eq!(members[&2].client_addr, "db2:7500");
        for (bad, why) in [
            ("", "no members"),
            ("1=a:1", "no `/`"),
            ("x=a:1/b:2", "not a node id"),
            ("1=a/b:2", "not host:port"),
            ("1=a:1/b:2,1=c:3/d:4", "twice"),
        ] {
            let error = parse_members(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    // checks: S3 (timing that would depose healthy leaders, or a member outside its own
    // cluster, is refused at start rather than run)
    #[test]
    fn bad_settings_are_refused_with_their_values() {
        let config = settings().raft_config().unwrap();
        assert_eq!(config.heartbeat_interval, 50);
        assert_eq!(config.election_timeout_max, 400);

        let zero = ClusterSettings {
            node_id: 0,
            ..settings()
        };
        assert_eq!(
            zero.raft_config().unwrap_err(),
            ClusterSettingsError::ZeroNodeId
        );

        let slow_heartbeat = ClusterSettings {
            heartbeat_interval: Duration::from_millis(100),
            ..settings()
        };
        assert!(matches!(
            slow_heartbeat.raft_config().unwrap_err(),
            ClusterSettingsError::Timing { .. }
        ));

        let elsewhere = ClusterSettings {
            initial_members: BTreeMap::from([(2, ClusterNode::default())]),
            ..settings()
        };
        assert_eq!(
            elsewhere.raft_config().unwrap_err(),
            ClusterSettingsError::NotAnInitialMember {
                node_id: 1,
                members: vec![2]
            }
        );
    }
}
