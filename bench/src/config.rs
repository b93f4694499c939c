//! What to run: endpoints, client counts, durations, keepalive sizes. `clap` lives in
//! `main.rs`; this is the plain value with its defaults and its checks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::BenchError;

/// One of the benchmark's workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// The serial limit of a durable handoff: one fdatasync plus one loopback round trip.
    Serial,
    /// Acquire then release, each client on its own lock.
    Cycle,
    /// All clients queued on one lock.
    Contended,
    /// A holder stops renewing; time from its expiry to the next waiter's grant.
    Expiry,
    /// Many leases renewed at TTL/3 over KeepAlive streams.
    Keepalive,
}

impl Workload {
    /// Every workload, in the order they run (the heavy keepalive state last).
    pub const ALL: [Workload; 5] = [
        Workload::Serial,
        Workload::Cycle,
        Workload::Contended,
        Workload::Expiry,
        Workload::Keepalive,
    ];

    /// The workload's name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Serial => "serial",
            Workload::Cycle => "cycle",
            Workload::Contended => "contended",
            Workload::Expiry => "expiry",
            Workload::Keepalive => "keepalive",
        }
    }

    /// The workload called `name`, if any.
    pub fn parse(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// One keepalive case: `leases` leases holding `locks_per_lease` locks each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveCase {
    /// How many leases are kept alive.
    pub leases: usize,
    /// How many locks each lease holds (1: single-lock leases).
    pub locks_per_lease: usize,
}

impl KeepaliveCase {
    /// Parses `LEASES` or `LEASESxLOCKS` (e.g. `10000`, `10000x100`).
    pub fn parse(text: &str) -> Option<KeepaliveCase> {
        let (leases, locks) = match text.split_once('x') {
            Some((leases, locks)) => (leases, locks),
            None => (text, "1"),
        };
        Some(KeepaliveCase {
            leases: leases.trim().replace('_', "").parse().ok()?,
            locks_per_lease: locks.trim().replace('_', "").parse().ok()?,
        })
    }

    /// Every lock of the case.
    pub fn locks(&self) -> usize {
        self.leases.saturating_mul(self.locks_per_lease)
    }
}

/// How the benchmark sends fenced's acquires and releases. Each transport runs as a system
/// of its own in every lock workload, so one run compares them side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FencedTransport {
    /// One `Session` stream per client over gRPC: the SDK's default path, and the headline.
    Session,
    /// Unary `Acquire` and `Release` calls: what a client in any other language makes.
    Unary,
    /// The framed `Session` listener (`fenced --session-listen`): opt-in, no HTTP/2.
    Framed,
}

impl FencedTransport {
    /// Every transport, in the order tables list them (the headline first).
    pub const ALL: [FencedTransport; 3] = [
        FencedTransport::Session,
        FencedTransport::Unary,
        FencedTransport::Framed,
    ];

    /// The transport's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FencedTransport::Session => "session",
            FencedTransport::Unary => "unary",
            FencedTransport::Framed => "framed",
        }
    }

    /// The system's name in tables.
    pub fn system_name(self) -> &'static str {
        match self {
            FencedTransport::Session => "fenced (gRPC Session)",
            FencedTransport::Unary => "fenced (unary gRPC)",
            FencedTransport::Framed => "fenced (framed)",
        }
    }

    /// The transport called `name`, if any.
    pub fn parse(name: &str) -> Option<FencedTransport> {
        FencedTransport::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A system's address and, for CPU and memory readings, its process id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeasuredServer {
    /// `http://127.0.0.1:PORT` (gRPC) or `redis://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The server process, read in /proc for CPU time and resident memory.
    pub pid: Option<u32>,
}

/// Everything one run of the benchmark needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The fenced server, if it is part of the run.
    pub fenced: Option<MeasuredServer>,
    /// The transports fenced is driven over in the lock workloads, each a system of its
    /// own in the tables (in [`FencedTransport::ALL`] order).
    pub fenced_transports: Vec<FencedTransport>,
    /// The address of fenced's framed `Session` listener (`fenced --session-listen`),
    /// needed by [`FencedTransport::Framed`].
    pub fenced_framed: Option<String>,
    /// The CA (PEM file) that signed fenced's TLS certificate: when given, fenced is
    /// reached over TLS on both listeners (its endpoint is `https://`).
    pub fenced_tls_ca: Option<std::path::PathBuf>,
    /// The etcd server, if it is part of the run.
    pub etcd: Option<MeasuredServer>,
    /// The Redis server, if it is part of the run.
    pub redis: Option<MeasuredServer>,
    /// The workloads to run, in [`Workload::ALL`] order.
    pub workloads: Vec<Workload>,
    /// How many times each cell (a workload at one size) runs, the systems in a rotated
    /// order each time; the tables give the median and the range.
    pub repeats: usize,
    /// Concurrent clients for cycle and contended (contended only from 2: with one client
    /// nothing is handed off).
    pub clients: Vec<usize>,
    /// Holder/waiter pairs for expiry (spread only from 2).
    pub expiry_pairs: Vec<usize>,
    /// How long each measured phase lasts.
    pub duration: Duration,
    /// Run before each measured phase, not counted: connections and caches warm up.
    pub warmup: Duration,
    /// The lease TTL of cycle and contended acquires.
    pub ttl: Duration,
    /// How long a contended waiter waits at most before it gives up.
    pub max_wait: Duration,
    /// Requests sent this close together may reach a server in either order: the FIFO
    /// check forgives a grant that jumps a request sent less than this before it.
    pub fifo_margin: Duration,
    /// The longest any single call may take before it counts as failed.
    pub rpc_timeout: Duration,
    /// A Redis waiter retries `SET NX` after a random pause of up to twice this long.
    pub redis_retry: Duration,
    /// The unrenewed holder's TTL in the expiry workload (whole seconds: etcd's unit).
    pub expiry_ttl: Duration,
    /// Each expiry round starts after a random pause of up to this, so the expiry falls at
    /// a random phase of any server timer (etcd checks for expired leases every 500 ms:
    /// without it, rounds that start right after a grant would all meet its worst case).
    pub expiry_offset_max: Duration,
    /// Keepalive cases run against fenced.
    pub fenced_keepalive: Vec<KeepaliveCase>,
    /// Keepalive cases run against etcd.
    pub etcd_keepalive: Vec<KeepaliveCase>,
    /// The lease TTL in the keepalive workload (renewed every TTL/3; whole seconds).
    pub keepalive_ttl: Duration,
    /// How long the keepalive rate, CPU and memory are measured, after one renewal round.
    pub keepalive_window: Duration,
    /// The longest a keepalive case may spend creating its leases and locks.
    pub keepalive_setup_limit: Duration,
    /// KeepAlive streams (each on its own connection) that share the leases.
    pub keepalive_streams: usize,
    /// Concurrent requests that create (and afterwards release) the keepalive leases.
    pub setup_concurrency: usize,
    /// A directory on the servers' disk, for the fdatasync probe.
    pub sync_dir: PathBuf,
    /// How long each probe of the serial limit runs.
    pub serial_probe: Duration,
    /// Upper bound on the requests of any one phase, whatever its duration.
    pub max_ops_per_phase: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            fenced: None,
            fenced_transports: vec![FencedTransport::Session, FencedTransport::Unary],
            fenced_framed: None,
            fenced_tls_ca: None,
            etcd: None,
            redis: None,
            workloads: Workload::ALL.to_vec(),
            repeats: 3,
            clients: vec![1, 16, 64],
            expiry_pairs: vec![1, 64],
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
            ttl: Duration::from_secs(10),
            max_wait: Duration::from_secs(30),
            fifo_margin: Duration::from_millis(2),
            rpc_timeout: Duration::from_secs(10),
            redis_retry: Duration::from_millis(5),
            expiry_ttl: Duration::from_secs(2),
            expiry_offset_max: Duration::from_secs(1),
            fenced_keepalive: vec![
                KeepaliveCase {
                    leases: 10_000,
                    locks_per_lease: 1,
                },
                KeepaliveCase {
                    leases: 100_000,
                    locks_per_lease: 1,
                },
                KeepaliveCase {
                    leases: 10_000,
                    locks_per_lease: 100,
                },
            ],
            etcd_keepalive: vec![KeepaliveCase {
                leases: 10_000,
                locks_per_lease: 1,
            }],
            keepalive_ttl: Duration::from_secs(10),
            keepalive_window: Duration::from_secs(10),
            keepalive_setup_limit: Duration::from_secs(300),
            keepalive_streams: 16,
            setup_concurrency: 64,
            sync_dir: std::env::temp_dir(),
            serial_probe: Duration::from_secs(2),
            max_ops_per_phase: 10_000_000,
        }
    }
}

impl Config {
    /// Checks that the run is possible and stays on this machine: every endpoint must be a
    /// loopback address, every count and duration positive, the TTLs whole seconds.
    pub fn validate(&self) -> Result<(), BenchError> {
        let fenced_scheme = if self.fenced_tls_ca.is_some() {
            "https://"
        } else {
            "http://"
        };
        let targets = [
            ("fenced", &self.fenced, fenced_scheme),
            ("etcd", &self.etcd, "http://"),
            ("redis", &self.redis, "redis://"),
        ];
        if targets.iter().all(|(_, t, _)| t.is_none()) {
            return Err(bad(
                "no system to benchmark: give --fenced, --etcd or --redis",
            ));
        }
        for (name, target, scheme) in targets {
            if let Some(target) = target {
                check_loopback(name, &target.endpoint, scheme)?;
            }
        }
        if self.workloads.is_empty() {
            return Err(bad("no workload to run"));
        }
        if self.fenced.is_some() && self.fenced_transports.is_empty() {
            return Err(bad("no transport to drive fenced over"));
        }
        if self.fenced_transports.contains(&FencedTransport::Framed) && self.fenced_framed.is_none()
        {
            return Err(bad(
                "the framed transport needs the framed listener's address (--fenced-framed)",
            ));
        }
        if self.repeats == 0 || self.repeats > 20 {
            return Err(bad(format!(
                "repeats must be 1 to 20, got {}",
                self.repeats
            )));
        }
        for (what, counts) in [
            ("client", &self.clients),
            ("expiry pair", &self.expiry_pairs),
        ] {
            if counts.is_empty() || counts.iter().any(|&c| c == 0 || c > 1024) {
                return Err(bad(format!(
                    "{what} counts must be 1 to 1024, got {counts:?}"
                )));
            }
        }
        let positive = [
            ("duration", self.duration),
            ("ttl", self.ttl),
            ("max wait", self.max_wait),
            ("rpc timeout", self.rpc_timeout),
            ("redis retry", self.redis_retry),
            ("keepalive window", self.keepalive_window),
            ("keepalive setup limit", self.keepalive_setup_limit),
            ("serial probe", self.serial_probe),
        ];
        for (what, value) in positive {
            if value.is_zero() {
                return Err(bad(format!("{what} must be positive")));
            }
        }
        for (what, ttl) in [
            ("expiry ttl", self.expiry_ttl),
            ("keepalive ttl", self.keepalive_ttl),
        ] {
            if ttl.is_zero() || ttl.subsec_nanos() != 0 {
                return Err(bad(format!(
                    "{what} must be whole seconds (etcd's lease unit), got {ttl:?}"
                )));
            }
        }
        let cases = self.fenced_keepalive.iter().chain(&self.etcd_keepalive);
        for case in cases {
            if case.leases == 0 || case.locks_per_lease == 0 {
                return Err(bad(format!("empty keepalive case {case:?}")));
            }
        }
        if self.keepalive_streams == 0 || self.setup_concurrency == 0 {
            return Err(bad(
                "keepalive streams and setup concurrency must be positive",
            ));
        }
        if self.max_ops_per_phase == 0 {
            return Err(bad("max ops per phase must be positive"));
        }
        Ok(())
    }
}

fn bad(message: impl Into<String>) -> BenchError {
    BenchError::Config(message.into())
}

/// Refuses any endpoint that is not `scheme` + a loopback host: the benchmark sends
/// traffic to this machine only.
fn check_loopback(system: &str, endpoint: &str, scheme: &str) -> Result<(), BenchError> {
    let rest = endpoint.strip_prefix(scheme).ok_or_else(|| {
        bad(format!(
            "{system} endpoint {endpoint:?} must start with {scheme}"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(bad(format!(
            "{system} endpoint {endpoint:?} is not a loopback address: the benchmark only \
             targets this machine"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_fenced(endpoint: &str) -> Config {
        Config {
            fenced: Some(MeasuredServer {
                endpoint: endpoint.to_string(),
                pid: None,
            }),
            ..Config::default()
        }
    }

    #[test]
    fn loopback_endpoints_pass() {
        for endpoint in [
            "http://127.0.0.1:2379",
            "http://localhost:1",
            "http://[::1]:5",
            "http://127.9.9.9:7/",
        ] {
            assert!(with_fenced(endpoint).validate().is_ok(), "{endpoint}");
        }
    }

    #[test]
    fn other_addresses_are_refused() {
        for endpoint in [
            "http://10.0.0.1:2379",
            "http://example.com:1",
            "http://[2001:db8::1]:5",
            "127.0.0.1:5",
            "redis://127.0.0.1:6379",
        ] {
            let err = with_fenced(endpoint).validate().unwrap_err();
            assert!(matches!(err, BenchError::Config(_)), "{endpoint}: {err}");
        }
    }

    #[test]
    fn fenced_over_tls_needs_https_and_plaintext_needs_http() {
        let tls = |endpoint: &str| Config {
            fenced_tls_ca: Some("ca.pem".into()),
            ..with_fenced(endpoint)
        };
        assert!(tls("https://127.0.0.1:1").validate().is_ok());
        assert!(tls("http://127.0.0.1:1").validate().is_err());
        assert!(with_fenced("https://127.0.0.1:1").validate().is_err());
    }

    #[test]
    fn no_system_and_bad_counts_are_refused() {
        assert!(Config::default().validate().is_err());
        let mut config = with_fenced("http://127.0.0.1:1");
        config.clients = vec![1, 0];
        assert!(config.validate().is_err());
        let mut config = with_fenced("http://127.0.0.1:1");
        config.expiry_ttl = Duration::from_millis(1500);
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_framed_transport_needs_its_address_and_repeats_are_bounded() {
        let mut config = with_fenced("http://127.0.0.1:1");
        config.fenced_transports = vec![FencedTransport::Session, FencedTransport::Framed];
        assert!(config.validate().is_err());
        config.fenced_framed = Some("127.0.0.1:2".to_string());
        assert!(config.validate().is_ok());
        config.fenced_transports.clear();
        assert!(config.validate().is_err());
        let mut config = with_fenced("http://127.0.0.1:1");
        config.repeats = 0;
        assert!(config.validate().is_err());
        config.repeats = 3;
        config.expiry_pairs = vec![0];
        assert!(config.validate().is_err());
        assert_eq!(
            FencedTransport::parse("unary"),
            Some(FencedTransport::Unary)
        );
        assert_eq!(FencedTransport::parse("http3"), None);
    }

    #[test]
    fn keepalive_cases_parse() {
        assert_eq!(
            KeepaliveCase::parse("10000"),
            Some(KeepaliveCase {
                leases: 10_000,
                locks_per_lease: 1
            })
        );
        assert_eq!(
            KeepaliveCase::parse("10_000x100").map(|c| c.locks()),
            Some(1_000_000)
        );
        assert_eq!(KeepaliveCase::parse("ten"), None);
    }
}
