//! The `fencectl` binary: flags and environment into the library's commands, and their
//! outcomes into exit codes (see `fencectl::exit`).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use fencectl::connect::{self, ServerEndpoints};
use fencectl::kill_plan::{KillPlan, Overrides};
use fencectl::output::{table, LockRow};
use fencectl::{duration, exit, inspect, keygen, members, supervise, watch, Error};
use fenced_client::{AcquireOptions, Election, FencingToken, Lease};
use fenced_types::KeyId;
use serde_json::json;

/// Run commands under fenced locks, elect leaders, and inspect locks.
#[derive(Debug, Parser)]
#[command(name = "fencectl", version, about)]
struct Cli {
    /// The server's endpoints, comma-separated (or the flag repeated), tried in order until
    /// one connects (`http://host:port`, `https://host:port`, or `host:port`; one scheme
    /// for all). A cluster's members: calls follow its leader.
    #[arg(
        long,
        global = true,
        env = "FENCED_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7500"
    )]
    endpoints: Vec<String>,
    /// Trust the server certificate signed by this CA (PEM); turns on TLS for `host:port`
    /// endpoints.
    #[arg(long, global = true, env = "FENCED_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry, if not the endpoint's host.
    #[arg(long, global = true, env = "FENCED_TLS_DOMAIN")]
    tls_domain: Option<String>,
    /// This client's certificate (PEM), for a server that authenticates clients by
    /// certificate (`fenced --client-ca`); needs --tls-key and --tls-ca.
    #[arg(long, global = true, env = "FENCED_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM); needs --tls-cert.
    #[arg(long, global = true, env = "FENCED_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The bearer token for a server with authentication on, read from this file (or from
    /// the environment variable FENCED_TOKEN, never from the command line, where `ps`
    /// would show it).
    #[arg(long, global = true, env = "FENCED_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON for scripts instead of a table (`watch`: one event per line).
    #[arg(long, global = true)]
    json: bool,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Take a lock, run a command while holding it, release it when the command exits.
    ///
    /// The command gets FENCED_TOKEN, FENCED_LOCK, FENCED_LEASE_ID and, when the server
    /// signs grants, FENCED_SEQUENCER. If the lease cannot be confirmed in time, its
    /// process group gets SIGTERM, then SIGKILL, before the lease's local deadline. Exit status: the command's (128+N if it died of signal
    /// N); 75 if the lock was not acquired; 76 if the lease was lost while it ran; 69 if
    /// the server is unreachable; 126 or 127 if the command cannot run or is not found.
    Lock {
        /// The lock.
        name: String,
        /// The command and its arguments.
        #[command(flatten)]
        run: RunArgs,
        /// Wait in the lock's queue this long (`0`: try once).
        #[arg(long, default_value = "0", value_parser = duration::parse)]
        wait: Duration,
    },
    /// Campaign for leadership on a lock, run a command as the leader, resign when it exits.
    ///
    /// The command's FENCED_TOKEN is its term. Exit codes as for `lock`.
    Elect {
        /// The lock whose holder is the leader.
        name: String,
        /// The command and its arguments.
        #[command(flatten)]
        run: RunArgs,
    },
    /// List the held or awaited locks, all of them or those under a prefix.
    List {
        /// Only locks whose names start with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Who holds a lock, with which token, for how much longer, and how many wait.
    Describe {
        /// The lock.
        name: String,
    },
    /// Follow the locks (under a prefix): a live table, or `--json` events.
    Watch {
        /// Only locks whose names start with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Start with the event of this revision (as `--json` prints it, plus one), not
        /// with the next change.
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
    },
    /// Whether TOKEN is the live holder's token of NAME: exit 0 if so, 1 if not.
    Check {
        /// The lock.
        name: String,
        /// The fencing token (a positive whole number).
        token: FencingToken,
    },
    /// As an administrator, end the holding of NAME: the whole lease that holds it (its
    /// other locks too), or with --lock-only the lock alone. The lock goes to its next
    /// waiter; the old holder's writes are refused at the gate once the next holder writes.
    Revoke {
        /// The lock.
        name: String,
        /// Only if it is held with this token (else a newer holding is left alone and the
        /// command fails).
        #[arg(long)]
        token: Option<FencingToken>,
        /// Release this lock alone; the lease keeps its other locks.
        #[arg(long)]
        lock_only: bool,
    },
    /// A cluster's members: id, role (leader, voter, learner), raft and client addresses.
    Members,
    /// Add a member to a cluster: it must run (started without --members); it catches up,
    /// then votes. To replace a member, add the new one, then remove the old one.
    AddMember {
        /// Its node id (its --node-id).
        id: u64,
        /// Where its peers reach it (its --raft-listen), host:port.
        raft_addr: String,
        /// Where clients reach it (its --listen), host:port.
        client_addr: String,
    },
    /// Remove a member from a cluster.
    RemoveMember {
        /// Its node id.
        id: u64,
    },
    /// Make a sequencer signing key pair: the private key (Ed25519, PKCS#8, mode 0600) for
    /// `fenced --signing-key FILE --signing-key-id KEY_ID`, and its public-keys line,
    /// printed and, with --public-keys, appended to the verifiers' file
    /// (`fenced-kv --verify-keys FILE`). Exit 73 if a file cannot be made (an existing
    /// private key is never overwritten).
    Keygen {
        /// The key's id, carried in every sequencer it signs (1 to 64 of A-Z a-z 0-9 . _ -).
        key_id: KeyId,
        /// Write the private key to this new file.
        #[arg(long)]
        private_key: PathBuf,
        /// Append the public key's line to this public-keys file (created if missing).
        #[arg(long)]
        public_keys: Option<PathBuf>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// How to run a command under a lease.
#[derive(Debug, Args)]
struct RunArgs {
    /// The lease's TTL.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    ttl: Duration,
    /// The holder name the server shows (default: fencectl-<host>-<pid>).
    #[arg(long, env = "FENCED_HOLDER")]
    holder: Option<String>,
    /// SIGKILL the command when this little is left until the local deadline (default: a
    /// sixth of the usable TTL).
    #[arg(long, value_parser = duration::parse)]
    kill_before: Option<Duration>,
    /// The grace between SIGTERM and SIGKILL: SIGTERM when kill-before plus this is left,
    /// SIGKILL this long after a SIGTERM at the latest (default: a sixth of the usable TTL).
    #[arg(long, value_parser = duration::parse)]
    term_grace: Option<Duration>,
    /// SIGTERM when the lease has been suspect this long (default: a sixth of the usable
    /// TTL).
    #[arg(long, value_parser = duration::parse)]
    suspect_grace: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

impl RunArgs {
    /// The kill thresholds given on the command line.
    fn overrides(&self) -> Overrides {
        Overrides {
            kill_before: self.kill_before,
            term_grace: self.term_grace,
            suspect_grace: self.suspect_grace,
        }
    }

    /// The holder name.
    fn holder(&self) -> String {
        self.holder.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            if host.is_empty() {
                format!("fencectl-{}", std::process::id())
            } else {
                format!("fencectl-{host}-{}", std::process::id())
            }
        })
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fencectl: {error}");
            error.exit_code()
        }
    };
    std::process::exit(code);
}

/// Runs one command; the exit code.
async fn run(cli: Cli) -> Result<i32, Error> {
    let target = ServerEndpoints {
        endpoints: cli.endpoints,
        tls_ca: cli.tls_ca,
        tls_domain: cli.tls_domain,
        tls_identity: cli.tls_cert.zip(cli.tls_key),
        token: connect::bearer_token(cli.token_file.as_deref())?,
    };
    let as_json = cli.json;
    match cli.command {
        Command::Lock { name, run, wait } => {
            let client = target.client(&run.holder(), run.ttl).await?;
            let options = AcquireOptions::wait(wait).ttl(run.ttl);
            let lease = match client.acquire(&name, options).await {
                Ok(lease) => lease,
                Err(fenced_client::Error::Busy { message, .. }) => {
                    return Err(Error::NotAcquired {
                        lock: name,
                        why: message,
                    })
                }
                Err(error) => return Err(error.into()),
            };
            let code = run_under(&lease, &client, &run).await;
            release(lease.release().await, &name);
            code
        }
        Command::Elect { name, run } => {
            let client = target.client(&run.holder(), run.ttl).await?;
            let election = Election::new(&client, &name)?.ttl(run.ttl);
            let lease = election.campaign().await?;
            let code = run_under(&lease, &client, &run).await;
            release(election.resign(lease).await, &name);
            code
        }
        Command::List { prefix } => {
            let client = target.reader().await?;
            let rows = inspect::list(&client, &prefix).await?;
            if as_json {
                let rows: Vec<_> = rows.iter().map(LockRow::json).collect();
                print(&serde_json::Value::Array(rows).to_string())?;
            } else {
                print(table(&rows).trim_end())?;
            }
            Ok(0)
        }
        Command::Describe { name } => {
            let client = target.reader().await?;
            let row = inspect::describe(&client, &name).await?;
            if as_json {
                print(&row.json().to_string())?;
            } else {
                print(table(&[row]).trim_end())?;
            }
            Ok(0)
        }
        Command::Members => {
            let client = target.reader().await?;
            show_members(&client.members().await?, as_json)
        }
        Command::AddMember {
            id,
            raft_addr,
            client_addr,
        } => {
            let client = target.reader().await?;
            show_members(
                &client.add_member(id, &raft_addr, &client_addr).await?,
                as_json,
            )
        }
        Command::RemoveMember { id } => {
            let client = target.reader().await?;
            show_members(&client.remove_member(id).await?, as_json)
        }
        Command::Watch {
            prefix,
            from_revision,
        } => {
            let client = target.reader().await?;
            watch::run(&client, &prefix, from_revision, as_json).await?;
            Ok(0)
        }
        Command::Revoke {
            name,
            token,
            lock_only,
        } => {
            let client = target.reader().await?;
            let revoked = if lock_only {
                client.force_release(&name, token).await?
            } else {
                client.revoke_lease(&name, token).await?
            };
            if as_json {
                let value = json!({
                    "lock": name,
                    "token": revoked.token.get(),
                    "lease_prefix": revoked.lease_prefix,
                    "whole_lease": !lock_only,
                });
                print(&value.to_string())?;
            } else {
                let what = if lock_only {
                    "released"
                } else {
                    "revoked the lease of"
                };
                print(&format!(
                    "{what} {name} (token {}, lease {})",
                    revoked.token, revoked.lease_prefix
                ))?;
            }
            Ok(0)
        }
        Command::Check { name, token } => {
            let client = target.reader().await?;
            let check = inspect::check(&client, &name, token).await?;
            let current_token = check.current_token.map_or(0, |t| t.get());
            if as_json {
                let value = json!({
                    "lock": name,
                    "token": token.get(),
                    "current": check.current,
                    "current_token": current_token,
                });
                print(&value.to_string())?;
            } else if check.current {
                print(&format!("{token} is the current token of {name}"))?;
            } else if current_token == 0 {
                print(&format!("{token} is not current: {name} is free"))?;
            } else {
                print(&format!(
                    "{token} is not current: {name} is held with token {current_token}"
                ))?;
            }
            Ok(if check.current { 0 } else { exit::NOT_CURRENT })
        }
        Command::Keygen {
            key_id,
            private_key,
            public_keys,
        } => {
            let line = keygen::keygen(&key_id, &private_key, public_keys.as_deref())?;
            print(&line)?;
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "fencectl", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// Runs the command under `lease` with the kill plan for its granted TTL; the exit code.
async fn run_under(
    lease: &Lease,
    client: &fenced_client::Client,
    run: &RunArgs,
) -> Result<i32, Error> {
    let config = client.config();
    let ttl = lease.status().ttl;
    let usable = config.policy().usable(ttl).unwrap_or(Duration::ZERO);
    let plan = KillPlan::new(ttl, usable, config.renew_fraction, run.overrides())?;
    Ok(supervise::run(lease, plan, &run.command).await?.exit_code())
}

/// Reports a failed release: the lease then expires after its TTL.
fn release(outcome: Result<(), fenced_client::Error>, lock: &str) {
    if let Err(error) = outcome {
        eprintln!("fencectl: releasing {lock}: {error} (the lease expires after its TTL)");
    }
}

/// Prints a line to stdout.
fn print(text: &str) -> Result<(), Error> {
    writeln!(std::io::stdout(), "{text}").map_err(Error::Output)
}

/// Prints a cluster's members; exit code 0.
fn show_members(members: &fenced_client::Members, as_json: bool) -> Result<i32, Error> {
    if as_json {
        print(&members::json(members).to_string())?;
    } else {
        print(members::table(members).trim_end())?;
    }
    Ok(0)
}
