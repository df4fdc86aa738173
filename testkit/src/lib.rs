//! Test support shared by every crate's tests and the benchmark harness (a
//! dev-only crate: nothing the `agora` binary runs depends on it).
//!
//! A throwaway database per test, so tests run in parallel against the real
//! Postgres and leave nothing behind; a JetStream prefix per test, or a
//! private `nats-server` for tests that stop the broker.
//!
//! Before a test database is dropped, every row of its events table is
//! validated against the JSON Schema of its (aggregate type, event type,
//! event version) (`schemas::json`), so every event any test writes, through
//! the aggregates or by hand, is checked against the published contract. A
//! mismatch fails the test that owned the database, naming the rows.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::TryStreamExt;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// Polls `check` every 25 ms until it holds; panics naming `what` after 60 s.
/// The limit is generous so that a loaded CI machine is slow, not red: a
/// check that holds returns at once.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, std::time::Duration::from_secs(60), check).await;
}

/// [`eventually`] with its own limit.
pub async fn eventually_within<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The server tests create their databases on: `AGORA_TEST_DATABASE_URL`,
/// else the local default.
pub fn admin_url() -> String {
    std::env::var("AGORA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A freshly created and migrated database, dropped when this is dropped.
pub struct TestDatabase {
    pub pool: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
    check_events: AtomicBool,
}

impl TestDatabase {
    pub async fn new() -> Self {
        Self::with_pool_size(4).await
    }

    pub async fn with_pool_size(size: u32) -> Self {
        let admin = PgConnectOptions::from_str(&admin_url())
            .expect("AGORA_TEST_DATABASE_URL is not a valid URL");
        let name = format!("agora_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("tests need Postgres: is it running? (see README)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let options = admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        commands::migrate::run(&pool)
            .await
            .expect("migrate the test database");
        Self {
            pool,
            name,
            options,
            check_events: AtomicBool::new(true),
        }
    }

    /// For tests that store malformed events on purpose (poison messages,
    /// hand-made rows): skips the schema check at drop.
    pub fn allow_invalid_events(&self) {
        self.check_events.store(false, Ordering::Relaxed);
    }

    /// Every stored event whose payload does not match the schema of its
    /// (aggregate type, event type, event version), one line each.
    pub async fn invalid_events(&self) -> Result<Vec<String>, String> {
        invalid_events(&self.options).await
    }

    /// The URL of this database, for a child process. Assumes the admin URL
    /// names a database, as the default does.
    pub fn url(&self) -> String {
        let admin = admin_url();
        let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{server}/{}{query}", self.name)
    }
}

/// Reads the events table on a connection of its own (the test may have
/// closed its pool) in commit order, a row at a time.
async fn invalid_events(options: &PgConnectOptions) -> Result<Vec<String>, String> {
    let validator = schemas::json::EventValidator::new()?;
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(|err| err.to_string())?;
    let mut invalid = Vec::new();
    {
        let mut rows =
            sqlx::query_as::<_, (String, String, i64, String, String, serde_json::Value)>(
                "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload
               FROM events ORDER BY position",
            )
            .fetch(&mut conn);
        while let Some((aggregate_type, id, sequence, event_type, version, payload)) =
            rows.try_next().await.map_err(|err| err.to_string())?
        {
            if let Err(why) = validator.validate(&aggregate_type, &event_type, &version, &payload) {
                invalid.push(format!(
                    "{aggregate_type} {id} #{sequence} {event_type} v{version}: {why}\n      payload: {payload}"
                ));
            }
        }
    }
    let _ = conn.close().await;
    Ok(invalid)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let pool = self.pool.clone();
        let options = self.options.clone();
        // Never a second panic while the test is already failing.
        let check = self.check_events.load(Ordering::Relaxed) && !std::thread::panicking();
        // Drop runs outside async; a short-lived thread with its own runtime
        // checks the events, closes the pool and drops the database (FORCE
        // ends stray sessions).
        let checked = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return Ok(Vec::new());
            };
            runtime.block_on(async move {
                let checked = if check {
                    invalid_events(&options).await
                } else {
                    Ok(Vec::new())
                };
                pool.close().await;
                if let Ok(admin) = PgConnectOptions::from_str(&admin_url()) {
                    if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                        let _ = conn.close().await;
                    }
                }
                checked
            })
        })
        .join();
        match checked {
            Ok(Ok(invalid)) if !invalid.is_empty() => panic!(
                "{} stored event(s) of test database {} do not match their JSON Schema \
                 (schemas/json; call allow_invalid_events() if the test writes them on purpose):\n  {}",
                invalid.len(),
                self.name,
                invalid.join("\n  ")
            ),
            // A test that dropped the events table, say, has nothing to check.
            Ok(Err(err)) if check => {
                eprintln!("could not check the events of {}: {err}", self.name)
            }
            _ => {}
        }
    }
}

/// The NATS server tests use: `NATS_URL`, else the local default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A NATS prefix of its own and the event stream under it, deleted on drop,
/// so tests sharing one NATS server never see each other's messages.
pub struct TestNats {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub prefix: String,
    url: String,
}

impl TestNats {
    pub async fn new() -> Self {
        Self::on(&nats_url()).await
    }

    pub async fn on(url: &str) -> Self {
        let client = async_nats::connect(url)
            .await
            .expect("tests need NATS with JetStream: is it running? (see README)");
        let jetstream = async_nats::jetstream::new(client.clone());
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        commands::relay::ensure_stream(&jetstream, &prefix)
            .await
            .expect("create the test stream");
        Self {
            client,
            jetstream,
            prefix,
            url: url.to_owned(),
        }
    }

    pub fn stream_name(&self) -> String {
        schemas::subjects::stream(&self.prefix)
    }

    /// Every message in the stream, in stream order.
    pub async fn messages(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let stream = self
            .jetstream
            .get_stream(self.stream_name())
            .await
            .expect("the test stream exists");
        let last = stream
            .get_info()
            .await
            .map(|i| i.state.last_sequence)
            .unwrap_or(0);
        let mut messages = Vec::new();
        for sequence in 1..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                messages.push(message);
            }
        }
        messages
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let url = self.url.clone();
        let stream = self.stream_name();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(client) = async_nats::connect(&url).await {
                    let js = async_nats::jetstream::new(client);
                    let _ = js.delete_stream(&stream).await;
                }
            });
        })
        .join();
    }
}

/// A private `nats-server` with JetStream on a free loopback port, for tests
/// that stop and restart the broker without disturbing anyone else.
pub struct TestNatsServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl TestNatsServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("agora-nats-{}", uuid::Uuid::new_v4().simple()));
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), on the same port and storage.
    pub fn resume(&mut self) {
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "nats-server",
        ]
        .into_iter()
        .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
        let child = std::process::Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server (see README: ops/scripts/services.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    /// Kills the server, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestNatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster (initdb + pg_ctl from the Debian packages'
/// `/usr/lib/postgresql/<version>/bin`) in a temporary directory, on a free
/// loopback port, for tests that restart or stop the database: never the
/// shared one that every other test uses. Trust authentication, user
/// `postgres`. When the tests run as root, the cluster runs as the
/// `postgres` system user, since Postgres refuses to run as root.
pub struct TestPostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    owner: Option<(u32, u32)>,
}

impl TestPostgres {
    /// Creates the cluster and starts it.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL's server binaries (/usr/lib/postgresql; see ops/scripts/services.sh)",
            )
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max_by_key(|bin| {
                bin.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("agora-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let owner = running_as_root().then(postgres_user);
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("hand the directory to postgres");
        }
        let server = Self {
            port,
            dir,
            bin,
            owner,
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.resume();
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the cluster (again), on the same port and data, and waits
    /// until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the cluster as an operator's restart does (`-m fast`): every
    /// session is ended with 57P01, open transactions roll back.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(self.bin.join(tool));
        command
            .args(args)
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        let output = command
            .output()
            .unwrap_or_else(|err| panic!("run {tool}: {err}"));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(self.bin.join("pg_ctl"));
        command
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        let _ = command.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The uid and gid of the `postgres` system user the Debian packages make.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a postgres system user (installed with PostgreSQL's packages)")
    };
    (id("-u"), id("-g"))
}
