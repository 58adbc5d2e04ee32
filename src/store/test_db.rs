//! Throw-away databases for tests, of both backends: a SQLite file in a temp folder, or
//! a fresh database in a PostgreSQL cluster this process starts once (`initdb` +
//! `pg_ctl` in a temp folder, on a free loopback port, as an unprivileged user when run
//! as root) and that stops when the process ends. Used by the store's unit tests and,
//! through `tests/common/postgres.rs`, by the end-to-end tests; not by cgbot itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::{Store, StoreError};

/// The OS user the cluster runs as when the tests run as root (PostgreSQL refuses root).
const CLUSTER_USER: &str = "postgres";
/// The cluster's superuser; loopback connections are trusted.
const DB_USER: &str = "cgbot";

/// One test database: where it is (a file path or a `postgres://` URL) and a temp
/// folder for the test's other files (and the SQLite file).
pub struct TestDb {
    location: PathBuf,
    dir: tempfile::TempDir,
}

impl TestDb {
    /// A new SQLite file.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp folder");
        Self {
            location: dir.path().join("cases.db"),
            dir,
        }
    }

    /// A new, empty database in this process's PostgreSQL cluster (started on first use).
    /// Panics, telling to run `make setup`, where PostgreSQL is not installed.
    pub fn postgres() -> Self {
        Self {
            location: PathBuf::from(cluster().create_database()),
            dir: tempfile::tempdir().expect("temp folder"),
        }
    }

    /// The `db` setting / `--db` argument naming it.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// A temp folder for the test's other files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_postgres(&self) -> bool {
        super::postgres::is_url(&self.location.to_string_lossy())
    }

    /// `sqlite` or `postgres`, for messages.
    pub fn backend(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub fn open(&self) -> Store {
        self.try_open().expect("test database opens")
    }

    pub fn try_open(&self) -> Result<Store, StoreError> {
        Store::open(&self.location)
    }

    /// Runs `sql` (statements without parameters) on its own connection, behind the
    /// back of any open store.
    pub fn batch(&self, sql: &str) {
        self.open()
            .db
            .batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Runs `test` on a new SQLite database, then on a new PostgreSQL one; a failure names
/// the backend.
pub fn for_each_backend(test: impl Fn(TestDb)) {
    for db in [TestDb::sqlite(), TestDb::postgres()] {
        let backend = db.backend();
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(db))) {
            eprintln!("the test failed on the {backend} backend");
            std::panic::resume_unwind(panic);
        }
    }
}

/// A running throw-away cluster.
pub struct Cluster {
    port: u16,
    data: PathBuf,
    pg_ctl: PathBuf,
    run_as: Option<&'static str>,
    next_db: AtomicUsize,
}

/// This process's cluster: started on first use, stopped by a watcher when the process
/// ends (statics are never dropped).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("{e}")))
}

/// Where the PostgreSQL server programs are: on `PATH`, else Debian's
/// `/usr/lib/postgresql/<version>/bin` (the newest).
pub fn server_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

impl Cluster {
    fn start() -> Result<Self, String> {
        let bin = server_bin_dir().ok_or(
            "PostgreSQL server programs (initdb, pg_ctl) not found on PATH or under \
             /usr/lib/postgresql/*/bin: run `make setup` to install the `postgresql` package",
        )?;
        let root = tempfile::Builder::new()
            .prefix("cgbot-pg-")
            .tempdir()
            .map_err(|e| format!("temp folder for PostgreSQL: {e}"))?
            .keep();
        let run_as = is_root().then_some(CLUSTER_USER);
        if let Some(user) = run_as {
            let chown = Command::new("chown")
                .args(["-R", user])
                .arg(&root)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !chown.success() {
                return Err(format!(
                    "cannot give {} to user {user} (PostgreSQL refuses to run as root; `make setup` creates the user)",
                    root.display()
                ));
            }
        }
        let data = root.join("data");
        let port = free_port()?;
        let run = |program: &Path, args: &[&str]| -> Result<(), String> {
            let mut command = match run_as {
                Some(user) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", user, "--"]).arg(program);
                    c
                }
                None => Command::new(program),
            };
            let output = command
                .args(args)
                .output()
                .map_err(|e| format!("{}: {e}", program.display()))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} {}: {}{}",
                    program.display(),
                    args.join(" "),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        };
        let data_arg = data.to_string_lossy().into_owned();
        run(
            &bin.join("initdb"),
            &[
                "-D",
                &data_arg,
                "-U",
                DB_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            root.display()
        );
        let log = root.join("server.log").to_string_lossy().into_owned();
        run(
            &bin.join("pg_ctl"),
            &["-D", &data_arg, "-l", &log, "-w", "-o", &options, "start"],
        )?;
        let cluster = Self {
            port,
            data,
            pg_ctl: bin.join("pg_ctl"),
            run_as,
            next_db: AtomicUsize::new(0),
        };
        cluster.stop_when_process_ends(&root);
        Ok(cluster)
    }

    /// A watcher outlives nothing it should: when this process is gone it stops the
    /// server and deletes its folder.
    fn stop_when_process_ends(&self, root: &Path) {
        let stop = self.stop_command();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            root = root.display(),
        );
        // Detached from our stdio, so test runners waiting on our output do not wait on it.
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    fn stop_command(&self) -> String {
        let prefix = self
            .run_as
            .map(|u| format!("runuser -u {u} -- "))
            .unwrap_or_default();
        format!(
            "{prefix}'{}' -D '{}' -m immediate stop",
            self.pg_ctl.display(),
            self.data.display()
        )
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{DB_USER}@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("test cluster on port {}: {e}", self.port));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}
