//! [`TestPostgres`]: a throwaway PostgreSQL cluster in a temporary directory, on a free
//! loopback port, removed when dropped. No mock: the PostgreSQL gate is tested against the
//! real server, crash recovery included.
//!
//! It uses the `initdb` and `pg_ctl` of an installed PostgreSQL (Debian's
//! `/usr/lib/postgresql/<version>/bin`, else `PATH`; `scripts/install-postgres.sh` installs
//! one). PostgreSQL refuses to run as root, so when the tests run as root the cluster runs
//! as the `postgres` system user (through `runuser`), in a directory owned by it.
//!
//! The cluster keeps PostgreSQL's durable settings (`fsync = on`, `synchronous_commit =
//! on`): what the tests check is that an acknowledged commit survives a crash, and
//! [`TestPostgres::crash_restart`] crashes it for real (`kill -9` of the postmaster, then a
//! start on the same data directory, which replays the WAL).
//!
//! [`postgres_or_skip`] turns a missing PostgreSQL into a skipped test, or into a failure
//! where `FENCED_REQUIRE_POSTGRES=1` (CI sets it after installing PostgreSQL, so the tests
//! cannot silently not run there).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Set in CI: a missing PostgreSQL fails the test instead of skipping it.
pub const REQUIRE_VAR: &str = "FENCED_REQUIRE_POSTGRES";
/// Where to find `initdb` and `pg_ctl`, when not in Debian's place or on `PATH`.
pub const BIN_VAR: &str = "FENCED_POSTGRES_BIN";
/// The superuser `initdb` creates; trust authentication, loopback only.
pub const SUPERUSER: &str = "postgres";
/// How long a start (after a crash: recovery included) may take on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running throwaway cluster. Dropping it stops the server (`pg_ctl stop -m immediate`)
/// and removes its directory.
pub struct TestPostgres {
    /// The directory of `initdb` and `pg_ctl`.
    bin: PathBuf,
    /// `postgres` system user's uid and gid when the tests run as root; `None` otherwise.
    run_as: Option<(u32, u32)>,
    /// The loopback port it listens on (the same across restarts).
    port: u16,
    /// Holds `data/` (the cluster), `socket/` (its unix socket) and `server.log`.
    dir: tempfile::TempDir,
}

impl TestPostgres {
    /// Creates a cluster (`initdb`, trust authentication) and starts it, or says why it
    /// cannot here. `Err` only for a missing prerequisite; a cluster that fails to start
    /// panics with its log, since that is a real failure.
    pub fn start() -> Result<TestPostgres, String> {
        let bin = find_bin_dir().ok_or_else(|| {
            format!(
                "no PostgreSQL: no initdb in ${BIN_VAR}, /usr/lib/postgresql/*/bin or on PATH \
                 (scripts/install-postgres.sh installs it)"
            )
        })?;
        let run_as = if running_as_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("fenced-pg-")
            .tempdir()
            .map_err(|e| format!("no temporary directory: {e}"))?;
        let port = free_port();
        let cluster = TestPostgres {
            bin,
            run_as,
            port,
            dir,
        };
        cluster.init();
        cluster.pg_ctl_start();
        Ok(cluster)
    }

    /// A libpq connection string for the superuser over TCP on loopback, to the
    /// `postgres` database.
    pub fn connection_string(&self) -> String {
        self.connection_string_to("postgres")
    }

    /// A libpq connection string for the superuser over TCP on loopback, to `database`.
    pub fn connection_string_to(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={database}",
            self.port
        )
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Crashes the server for real: `kill -9` of the postmaster (its pid read from
    /// `postmaster.pid`), then starts it again on the same data directory and port.
    /// PostgreSQL runs crash recovery from its WAL.
    pub fn crash_restart(&mut self) {
        self.kill_postmaster();
        self.start_again();
    }

    /// Starts the server again on the same data directory and port, after
    /// [`TestPostgres::kill_postmaster`]; returns once it accepts connections.
    pub fn start_again(&mut self) {
        self.pg_ctl_start();
    }

    /// `kill -9` of the postmaster, then waits until it is gone. Its backends and auxiliary
    /// processes exit on their own when they see it die; until they have, PostgreSQL
    /// refuses to start on the data directory (its shared memory is still in use), which
    /// [`TestPostgres::start_again`] waits out.
    pub fn kill_postmaster(&self) {
        let pid = self
            .postmaster_pid()
            .unwrap_or_else(|| panic!("no postmaster.pid in {}", self.data_dir().display()));
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
        assert!(status.success(), "kill -9 {pid} failed: {status}");
        let deadline = Instant::now() + START_TIMEOUT;
        while process_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "the postmaster {pid} is still alive {START_TIMEOUT:?} after kill -9"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `psql` (the one next to `initdb`, else `PATH`'s; ON_ERROR_STOP, no .psqlrc)
    /// against the cluster with `args` appended, and returns its output whatever the exit
    /// status.
    pub fn psql(&self, args: &[&str]) -> Output {
        let bundled = self.bin.join("psql");
        let psql = if bundled.is_file() {
            bundled
        } else {
            PathBuf::from("psql")
        };
        Command::new(psql)
            .args([
                "--no-psqlrc",
                "--set=ON_ERROR_STOP=1",
                "--dbname",
                &self.connection_string(),
            ])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("psql runs: {e}"))
    }

    /// `initdb` into `data/`, then the settings: loopback port, socket in our directory,
    /// durable commits.
    fn init(&self) {
        let socket = self.dir.path().join("socket");
        std::fs::create_dir(&socket).unwrap_or_else(|e| panic!("socket dir: {e}"));
        if let Some((uid, gid)) = self.run_as {
            for path in [self.dir.path(), socket.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
            }
        }
        let data = self.data_dir();
        let output = self
            .command("initdb")
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", SUPERUSER, "--auth=trust", "--no-instructions"])
            .args(["--encoding=UTF8", "--locale=C"])
            .output()
            .unwrap_or_else(|e| panic!("initdb runs: {e}"));
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Appended settings win over initdb's. fsync and synchronous_commit are on by
        // default; they are named so that no later default can turn the durability under
        // test off.
        let settings = format!(
            "\n# fenced tests\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nfsync = on\nsynchronous_commit = on\n\
             full_page_writes = on\nmax_connections = 100\nshared_buffers = 16MB\n",
            self.port,
            socket.display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("read {}: {e}", conf.display()));
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
    }

    /// `pg_ctl start -w`: returns once the server accepts connections. Retries while a
    /// crashed cluster's shared memory is still held (its last processes exiting), and
    /// panics with the server log if it never starts.
    fn pg_ctl_start(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let output = self
                .command("pg_ctl")
                .arg("--pgdata")
                .arg(self.data_dir())
                .arg("--log")
                .arg(self.log_path())
                .args(["--wait", "--timeout", "60", "start"])
                .output()
                .unwrap_or_else(|e| panic!("pg_ctl runs: {e}"));
            if output.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "PostgreSQL did not start on port {}: {}{}\n--- server log ---\n{}",
                    self.port,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The postmaster's pid: the first line of `postmaster.pid`, if the file is there.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// A command for a PostgreSQL program, run as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(_) => {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", SUPERUSER, "--"]).arg(path);
                runuser
            }
            None => Command::new(path),
        };
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--mode", "immediate", "--wait", "stop"])
            .output();
        // A server pg_ctl could not stop must not outlive the test.
        if let Some(pid) = self.postmaster_pid() {
            if process_alive(pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// Starts a cluster, or returns `None` after printing why the test is skipped; panics
/// instead where `FENCED_REQUIRE_POSTGRES` is set.
pub fn postgres_or_skip(test: &str) -> Option<TestPostgres> {
    match TestPostgres::start() {
        Ok(cluster) => Some(cluster),
        Err(reason) if std::env::var_os(REQUIRE_VAR).is_some_and(|v| v == "1") => {
            panic!("{test}: cannot start PostgreSQL here ({reason}), and {REQUIRE_VAR}=1")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED {test}: cannot start PostgreSQL here ({reason}). \
                 Set {REQUIRE_VAR}=1 to make this a failure."
            );
            None
        }
    }
}

/// `FENCED_POSTGRES_BIN` if set (a directory with `initdb` and `pg_ctl`; for PostgreSQL
/// installed elsewhere), else the newest `/usr/lib/postgresql/<version>/bin` with an
/// `initdb`, else the `PATH` directory that has one.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_VAR) {
        let dir = PathBuf::from(dir);
        return (dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()).then_some(dir);
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    debian.or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    })
}

/// True when this process runs as root (the owner of `/proc/self` is our effective uid).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `postgres` system user's uid and gid.
fn postgres_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, SUPERUSER])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!("running as root and there is no `{SUPERUSER}` system user to run PostgreSQL as")
            })
    };
    Ok((id("-u")?, id("-g")?))
}

/// A port that was free a moment ago on loopback (the listener is closed before use).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// True while `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
