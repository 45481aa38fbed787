//! Reaching the database: the `[cluster]` settings resolved into a
//! connection configuration (URL or `WEERWAL_DATABASE_URL`, password from
//! `password_file`, TLS with verification when `ca_file` is set), and a
//! shared handle that reconnects after a failure. No message made here ever
//! contains the password: errors name the setting and a redacted target.

use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::config::ClusterConfig;

/// The environment variable read when `cluster.database` is not set.
pub const DATABASE_ENV: &str = "WEERWAL_DATABASE_URL";

/// Why the database cannot be used. Every variant names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.database is not set (nor the environment variable {DATABASE_ENV})")]
    NoDatabase,
    #[error("{setting}: {message}")]
    Setting { setting: &'static str, message: String },
    #[error("cluster.password_file: {}: {source}", path.display())]
    PasswordFile { path: PathBuf, source: std::io::Error },
    #[error("cluster.ca_file: {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("{setting}: cannot connect to {target}: {message}")]
    Connect { setting: &'static str, target: String, message: String },
    #[error("database {target}: {message}")]
    Query { target: String, message: String },
}

impl ClusterError {
    /// Whether the database could not be reached or refused us (as opposed
    /// to a query it rejected): the caller retries later.
    pub fn is_connection(&self) -> bool {
        matches!(self, ClusterError::Connect { .. })
    }
}

/// How to reach the database: resolved once, used for every (re)connect.
#[derive(Clone)]
pub struct Settings {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// `user@host:port/dbname`, for messages.
    target: String,
    /// Which setting to blame when the server refuses the password.
    password_setting: &'static str,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings").field("target", &self.target).field("tls", &self.tls.is_some()).finish()
    }
}

impl Settings {
    /// Reads `[cluster]` (and `WEERWAL_DATABASE_URL`, the password file and
    /// the CA file). Blocking file reads: call it before the runtime starts
    /// or from `spawn_blocking`.
    pub fn resolve(cluster: &ClusterConfig) -> Result<Settings, ClusterError> {
        let (url, setting) = match &cluster.database {
            Some(u) => (u.0.clone(), "cluster.database"),
            None => match std::env::var(DATABASE_ENV) {
                Ok(u) if !u.trim().is_empty() => (u, DATABASE_ENV),
                _ => return Err(ClusterError::NoDatabase),
            },
        };
        let mut config = tokio_postgres::Config::from_str(url.trim()).map_err(|e| ClusterError::Setting {
            setting,
            message: format!("not a PostgreSQL URL (postgres://user@host:5432/dbname): {e}"),
        })?;
        if config.get_hosts().is_empty() {
            return Err(ClusterError::Setting { setting, message: "the URL names no host".into() });
        }
        let mut password_setting = setting;
        if let Some(path) = &cluster.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ClusterError::PasswordFile { path: path.clone(), source })?;
            let password = text.lines().next().unwrap_or("").to_string();
            if password.is_empty() {
                return Err(ClusterError::PasswordFile {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the first line is empty"),
                });
            }
            config.password(password);
            password_setting = "cluster.password_file";
        }
        let tls = match &cluster.ca_file {
            Some(path) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(tls_connector(path)?)
            }
            None => {
                if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                    return Err(ClusterError::Setting {
                        setting,
                        message: "sslmode=require needs cluster.ca_file (the CA of the database server's certificate)"
                            .into(),
                    });
                }
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives_idle(Duration::from_secs(30));
        // The server's NOTICEs ("already exists, skipping") are not news.
        config.options("-c client_min_messages=warning");
        config.application_name(format!("weerwal {}", env!("CARGO_PKG_VERSION")));
        let target = describe(&config);
        Ok(Settings { config, tls, target, password_setting })
    }

    /// `user@host:port/dbname` (never a password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Opens a new connection; its driver runs as a task until the
    /// connection closes. Notifications (LISTEN) arrive on `notices` when given.
    pub async fn connect(&self) -> Result<Client, ClusterError> {
        let connected = match &self.tls {
            Some(tls) => match self.config.connect(tls.clone()).await {
                Ok((client, conn)) => {
                    tokio::spawn(drive(conn));
                    Ok(client)
                }
                Err(e) => Err(e),
            },
            None => match self.config.connect(NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(drive(conn));
                    Ok(client)
                }
                Err(e) => Err(e),
            },
        };
        connected.map_err(|e| self.connect_error(&e))
    }

    /// Opens a connection whose asynchronous messages (NOTIFY) are passed
    /// to `on_message`; used by the change listener.
    pub async fn connect_listening(
        &self,
        on_message: tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>,
    ) -> Result<Client, ClusterError> {
        let connected = match &self.tls {
            Some(tls) => match self.config.connect(tls.clone()).await {
                Ok((client, conn)) => {
                    tokio::spawn(forward_messages(conn, on_message));
                    Ok(client)
                }
                Err(e) => Err(e),
            },
            None => match self.config.connect(NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(forward_messages(conn, on_message));
                    Ok(client)
                }
                Err(e) => Err(e),
            },
        };
        connected.map_err(|e| self.connect_error(&e))
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> ClusterError {
        let setting = match e.code() {
            Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                self.password_setting
            }
            _ if self.tls.is_some() && error_text(e).contains("certificate") => "cluster.ca_file",
            _ => "cluster.database",
        };
        ClusterError::Connect { setting, target: self.target.clone(), message: error_text(e) }
    }

    /// A query error, with the target named.
    pub fn query_error(&self, e: &tokio_postgres::Error) -> ClusterError {
        if e.as_db_error().is_none() && (e.is_closed() || e.code().is_none()) {
            return ClusterError::Connect {
                setting: "cluster.database",
                target: self.target.clone(),
                message: error_text(e),
            };
        }
        ClusterError::Query { target: self.target.clone(), message: error_text(e) }
    }
}

/// The text of a driver error with its cause (the driver's own `Display`
/// stops at "error connecting to server"); it never contains the password.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

async fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %error_text(&e), "database connection ended");
    }
}

async fn forward_messages<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    to: tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
        match m {
            Ok(m) => {
                if to.send(m).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %error_text(&e), "database listen connection ended");
                return;
            }
        }
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("?");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

fn tls_connector(path: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ClusterError> {
    let bad = |message: String| ClusterError::CaFile { path: path.to_path_buf(), message };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
        roots.add(cert).map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE in it".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;

    #[test]
    fn target_and_errors_never_show_the_password() {
        let c = ClusterConfig {
            database: Some(DatabaseUrl("postgres://weerwal:hunter2@db.example:6543/ww".into())),
            ..ClusterConfig::default()
        };
        let s = Settings::resolve(&c).unwrap();
        assert_eq!(s.target(), "weerwal@db.example:6543/ww");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = ClusterConfig {
            database: Some(DatabaseUrl("postgres://weerwal:hunter2@db/ww?bogus=1".into())),
            ..ClusterConfig::default()
        };
        let e = Settings::resolve(&c).unwrap_err().to_string();
        assert!(e.starts_with("cluster.database: not a PostgreSQL URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let c = ClusterConfig {
            database: Some(DatabaseUrl("postgres://weerwal@db/ww".into())),
            password_file: Some(PathBuf::from("/nonexistent/db.pw")),
            ..ClusterConfig::default()
        };
        let e = Settings::resolve(&c).unwrap_err().to_string();
        assert!(e.starts_with("cluster.password_file: /nonexistent/db.pw:"), "{e}");
    }
}
