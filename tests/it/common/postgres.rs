//! A real PostgreSQL for the cluster tests, the way PostgreSQL's own test
//! suites run one: `initdb` in a temporary directory, then `postgres -D …
//! -p <free port> -k <dir>` listening on loopback only, waited on until it
//! answers, stopped by its process id. The system's own cluster (Debian's
//! `postgresql@15-main`) is never used or touched.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb`
//! and `postgres` run as the unprivileged `postgres` user (created by the
//! Debian package) through `setpriv`, which executes the server directly,
//! so the child's PID is the postmaster's own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of the database superuser `postgres` and of the `weerwal`
/// role the tests create.
pub const PASSWORD: &str = "s3cret-test-pw";

/// One running PostgreSQL server of a test.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with a `postgres` in it.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/install-test-deps.sh installs the Debian package `postgresql`)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().expect("a PostgreSQL server in /usr/lib/postgresql/*/bin").1
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A command that runs `program` as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `N` different loopback ports nobody listens on right now (held open
/// together while chosen, so no two are the same).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

impl Postgres {
    /// Creates a new cluster in a temporary directory and starts it; the
    /// database `weerwal` is owned by the role `weerwal` (password
    /// [`PASSWORD`]), which has no other privilege.
    pub async fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("weerwal-pg-").tempdir().unwrap();
        let bin = bin_dir();
        std::fs::write(dir.path().join("pw"), format!("{PASSWORD}\n")).unwrap();
        if is_root() {
            chown_postgres(dir.path());
            chown_postgres(&dir.path().join("pw"));
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "-E", "UTF8", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", dir.path().join("pw").display()))
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { port: free_port(), dir, bin, child: None };
        pg.spawn().await;
        pg.psql(&format!("CREATE ROLE weerwal LOGIN PASSWORD '{PASSWORD}'"));
        pg.psql("CREATE DATABASE weerwal OWNER weerwal");
        pg.psql("REVOKE ALL ON DATABASE weerwal FROM PUBLIC");
        pg
    }

    /// The data directory (`postgresql.conf`, `pg_hba.conf`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://weerwal@127.0.0.1:<port>/weerwal` (no password in it).
    pub fn url(&self) -> String {
        format!("postgres://weerwal@127.0.0.1:{}/weerwal", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        if is_root() {
            chown_postgres(&self.dir.path().join("server.log"));
        }
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits (up to 60 s) until the server accepts connections.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("postgres exited with {status} before it was ready:\n{}", self.server_log());
            }
            assert!(Instant::now() < deadline, "postgres not ready after 60 s:\n{}", self.server_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's own log (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL as the superuser over the Unix socket in the test directory.
    pub fn psql(&self, sql: &str) -> String {
        let out = as_postgres(&self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Postgres::psql`] in the `weerwal` database.
    pub fn psql_weerwal(&self, sql: &str) -> String {
        let out = as_postgres(&self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "weerwal", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server (fast shutdown: SIGINT to its PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                }
            }
        }
    }

    /// Turns TLS on with this certificate and key (PEM), and restarts.
    pub async fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) {
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        let status = Command::new("chmod").arg("600").arg(data.join("server.key")).status().unwrap();
        assert!(status.success());
        if is_root() {
            chown_postgres(&data.join("server.crt"));
            chown_postgres(&data.join("server.key"));
        }
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        self.restart().await;
    }

    /// Starts the stopped server again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown").args(["postgres:postgres"]).arg(path).status().expect("chown runs");
    assert!(status.success(), "chown postgres {}", path.display());
}
