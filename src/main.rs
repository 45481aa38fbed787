//! The `weerwal` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad
//! usage or configuration. `weerwal history` keeps the codes its scripts
//! rely on instead: 0 clean, 3 banned entries found, 1 on any error (a wrong
//! option, a bad configuration or policy included).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use weerwal::ca::CertificateAuthority;
use weerwal::config::Config;
use weerwal::identity::{Role, Users};
use weerwal::policy;
use weerwal::serve::{self, Server};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "weerwal",
    version,
    about = "Forward proxy and compliance gateway that keeps banned apps off municipal devices"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Configuration file. Without it, weerwal.toml in the working directory
    /// is used when present, else the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (and everything else configured) until SIGTERM or Ctrl-C.
    Serve,
    /// Ask the running `serve` to re-read configuration, policy and users
    /// (the same as sending it SIGHUP). A broken file changes nothing.
    Reload,
    /// Manage the local CA that signs the HTTPS block page.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Check the policy files or explain a decision.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the PAC file that /proxy.pac serves.
    Pac,
    /// Review the audit log: verify the hash chain, query attempts, report
    /// per user, session, app, day or device.
    #[command(subcommand)]
    Logs(weerwal::audit::cli::LogsCommand),
    /// Find and remove visits to banned sites in this user's browser history.
    #[command(subcommand, after_help = weerwal::history::cli::EXIT_STATUS_HELP)]
    History(weerwal::history::cli::HistoryCommand),
    /// Manage the users file (for `identity.auth = "basic"` and officers).
    #[command(subcommand)]
    Users(UsersCommand),
    /// The cluster database (`[cluster]`): schema and nodes.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create or upgrade the database schema (serve does this at start too).
    Migrate,
    /// Print the schema version, the nodes with their last heartbeat and
    /// policy digest (a node whose policy differs is marked). Exit status 1
    /// when the database cannot be reached.
    Status,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user, or change an existing user's password, role and groups.
    /// The password is read from standard input, never from the command line.
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "user")]
        role: Role,
        /// A group the user belongs to (for exemptions); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List users with their role and groups (never hashes).
    List,
    /// Remove a user.
    Remove { name: String },
    /// Check a name and password (from standard input) against the directory
    /// (`[identity.ldap]`, else the users file) and show the groups it sees.
    /// Exit 0 accepted, 3 refused, 1 directory unreachable.
    Test { name: String },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA in the configured directory (refuses to overwrite without --force).
    Init {
        /// Replace an existing CA. Laptops that trust the old one must get the new one.
        #[arg(long)]
        force: bool,
    },
    /// Print the CA's subject, validity and SHA-256 fingerprint.
    Show,
    /// Print the CA certificate for distribution to laptops (PEM, or DER with --der).
    Export {
        /// Binary DER (for Intune and group policy), written to stdout.
        #[arg(long)]
        der: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the policy files; every error names file, line and key.
    Check {
        /// Policy directory (default: from the configuration).
        dir: Option<PathBuf>,
    },
    /// Show what the proxy would do with a request, and why: the same
    /// decision function the server calls. Exit status 0 when the request
    /// would get through, 3 when it would be refused, blocked or challenged.
    Explain {
        /// A URL (http://host/path, https://host/), a host, or host:port with --method CONNECT.
        url: String,
        /// CONNECT for a tunnel (the target is then host:port).
        #[arg(long)]
        method: Option<String>,
        /// The SNI the TLS ClientHello in the tunnel carries.
        #[arg(long)]
        sni: Option<String>,
        /// Decide as this user (for exemptions and compliance flags).
        #[arg(long)]
        user: Option<String>,
        /// Decide as a request from this client address.
        #[arg(long, default_value = "127.0.0.1")]
        client: IpAddr,
        /// Groups of the user (for exemptions), repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A User-Agent to check for app signatures.
        #[arg(long)]
        user_agent: Option<String>,
    },
    /// Print the policy for the resolvers and proxies you already run: each
    /// banned domain and all its subdomains, loadable as is.
    Export {
        /// rpz (BIND/Unbound response policy zone), unbound, dnsmasq, hosts,
        /// adguard (AdGuard Home, Pi-hole) or squid (dstdomain ACL file).
        #[arg(long, value_parser = ["rpz", "unbound", "dnsmasq", "hosts", "adguard", "squid"])]
        format: String,
        /// The RPZ zone's name.
        #[arg(long, default_value = policy::export::DEFAULT_RPZ_ZONE)]
        zone: String,
        /// What a banned name resolves to: nxdomain, or an address of
        /// weerwal's block page.
        #[arg(long, default_value = "nxdomain")]
        answer: String,
        /// Also answer Firefox's DNS-over-HTTPS canary (use-application-dns.net)
        /// NXDOMAIN, so Firefox keeps using this resolver.
        #[arg(long)]
        doh_canary: bool,
    },
}

/// A failure with the exit code it deserves.
enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Runtime(e.into())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `weerwal history` promises 1 on every error, so a script tells
        // "found" (3) from "could not check" (1) without knowing about 2.
        Err(e) if e.use_stderr() && names_history(std::env::args_os().skip(1)) => {
            let _ = e.print();
            return ExitCode::from(weerwal::history::cli::EXIT_ERROR);
        }
        Err(e) => e.exit(),
    };
    init_tracing();
    let history = matches!(cli.command, Command::History(_));
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Usage(e)) if history => {
            eprintln!("weerwal: {}", error_chain(&e));
            ExitCode::from(weerwal::history::cli::EXIT_ERROR)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("weerwal: {}", error_chain(&e));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("weerwal: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// Whether a command line (without the program name) names the `history`
/// subcommand: its first word that is neither an option nor the value of
/// `--config`.
fn names_history(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            args.next();
        } else if !arg.to_string_lossy().starts_with('-') {
            return arg == "history";
        }
    }
    false
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes where stderr is not a terminal (the journal under systemd, a file).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log stream that went away (a closed pipe) must not panic the task
    // that logs: by default a failed write is reported with eprintln!, which
    // panics, and a SIGTERM handler that panics never stops the server.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .init();
}

fn config(global: &Global) -> Result<Config, Failure> {
    Config::discover(global.config.as_deref()).map_err(|e| Failure::Usage(e.into()))
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let config = config(&cli.global)?;
    match cli.command {
        Command::Serve => serve_command(config),
        Command::Ca(cmd) => ca_command(&config, cmd),
        Command::Policy(PolicyCommand::Check { dir }) => policy_check(&config, dir.as_deref()),
        Command::Policy(PolicyCommand::Explain { url, method, sni, user, client, groups, user_agent }) => {
            let question =
                weerwal::explain::Question { target: url, method, sni, user_agent, user, groups, client: Some(client) };
            policy_explain(&config, &question)
        }
        Command::Policy(PolicyCommand::Export { format, zone, answer, doh_canary }) => {
            policy_export(&config, &format, &zone, &answer, doh_canary)
        }
        Command::Users(cmd) => users_command(&config, cmd),
        Command::Reload => reload_command(&config),
        Command::Logs(cmd) => Ok(weerwal::cluster::logs::run(cmd, &config)),
        Command::Db(cmd) => db_command(&config, cmd),
        Command::History(cmd) => {
            // On a council laptop there is no policy/ folder: the built-in
            // policy is the expected one, not worth a warning.
            let loaded = if config.policy_dir_is_default() && !config.policy.dir.exists() {
                policy::load_embedded(&config.policy.timezone)
            } else {
                policy::load_configured(&config)
            };
            let (policy, _) = loaded.map_err(|e| Failure::Usage(e.into()))?;
            Ok(weerwal::history::cli::run(cmd, &policy))
        }
        Command::Pac => {
            let (policy, _) = policy::load_configured(&config).map_err(|e| Failure::Usage(e.into()))?;
            print!("{}", weerwal::pac::generate(&config, &policy).text);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn policy_export(
    config: &Config,
    format: &str,
    zone: &str,
    answer: &str,
    doh_canary: bool,
) -> Result<ExitCode, Failure> {
    use policy::export::{export, Answer, ExportOptions, Format};
    let format =
        Format::parse(format).ok_or_else(|| Failure::Usage(anyhow::anyhow!("--format {format:?}: unknown")))?;
    let answer = Answer::parse(answer).ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!("--answer {answer:?}: write nxdomain or an IP address of weerwal's block page"))
    })?;
    let zone = zone.trim_end_matches('.');
    if policy::normalise_host(zone).map(|h| !matches!(h, policy::Host::Name(_))).unwrap_or(true) {
        return Err(Failure::Usage(anyhow::anyhow!("--zone {zone:?}: not a DNS name")));
    }
    let (policy, _) = policy::load_configured(config).map_err(|e| Failure::Usage(e.into()))?;
    let text = export(&policy, &ExportOptions { format, zone: zone.to_string(), answer, doh_canary });
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("writing the export to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn serve_command(config: Config) -> Result<ExitCode, Failure> {
    let pid_path = pid_file_path(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Registered before any listener accepts: a SIGTERM or Ctrl-C that
        // comes right after the first answer still shuts down cleanly.
        let signalled = shutdown_signal();
        let server = match Server::start(config).await {
            Ok(s) => s,
            Err(
                e @ (serve::ServeError::Policy(_)
                | serve::ServeError::Ca(_)
                | serve::ServeError::Cluster(_)
                | serve::ServeError::ClusterStore(weerwal::cluster::state::StoreError::Cluster(_))
                | serve::ServeError::Audit(weerwal::audit::AuditError::Locked { .. })),
            ) => return Err(Failure::Usage(e.into())),
            Err(e) => return Err(Failure::Runtime(e.into())),
        };
        let token = server.shutdown_token();
        tokio::spawn(async move {
            signalled.await;
            tracing::info!("shutting down: finishing requests in flight and flushing the audit log");
            weerwal::notify::stopping();
            token.cancel();
        });
        #[cfg(unix)]
        spawn_reload_on_sighup(server.reloader());
        let _pid = PidFile::write(&pid_path);
        // Every listener is bound, the policy loaded, the signal handlers in
        // place (a `systemctl reload` right after start is not lost).
        let listening: Vec<_> =
            server.proxy_addrs.iter().chain(&server.gateway_addrs).chain(&server.admin_addrs).copied().collect();
        weerwal::notify::ready(&listening);
        server.run_until_shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Where `serve` writes its process id, so `weerwal reload` finds it: next
/// to the audit log, which every installation has.
fn pid_file_path(config: &Config) -> PathBuf {
    config.audit.path.parent().unwrap_or(Path::new(".")).join("weerwal.pid")
}

/// The pid file, removed again when `serve` ends.
struct PidFile(Option<PathBuf>);

impl PidFile {
    fn write(path: &Path) -> PidFile {
        match std::fs::write(path, format!("{}\n", std::process::id())) {
            Ok(()) => PidFile(Some(path.to_path_buf())),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write pid file; `weerwal reload` will not find this process");
                PidFile(None)
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(unix)]
fn spawn_reload_on_sighup(reloader: std::sync::Arc<weerwal::reload::Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading configuration and policy");
            if let Err(e) = reloader.reload().await {
                tracing::error!("reload refused, the running policy stays in force: {e}");
            }
        }
    });
}

fn reload_command(config: &Config) -> Result<ExitCode, Failure> {
    let path = pid_file_path(config);
    let pid = running_serve(config, &path).map_err(|why| {
        Failure::Runtime(anyhow::anyhow!(
            "no weerwal is running with this configuration ({why}); nothing was signalled. Start it with `weerwal serve`"
        ))
    })?;
    let status = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
    if !status.success() {
        return Err(Failure::Runtime(anyhow::anyhow!("could not signal weerwal (pid {pid})")));
    }
    println!("asked weerwal (pid {pid}) to reload; its log says whether the new policy was accepted");
    Ok(ExitCode::SUCCESS)
}

/// The pid of the `weerwal serve` of this configuration, or why there is
/// none. A pid file alone is not trusted (it may be stale and name any
/// process): the audit log must be locked by a running writer, and the
/// process must be a weerwal running `serve` (its `/proc` entry says so).
fn running_serve(config: &Config, pid_path: &Path) -> Result<u32, String> {
    if !weerwal::audit::writer::is_locked(&config.audit.path) {
        return Err(format!("nothing holds the lock of the audit log {}", config.audit.path.display()));
    }
    let text = std::fs::read_to_string(pid_path).map_err(|e| format!("{}: {e}", pid_path.display()))?;
    let pid: u32 =
        text.trim().parse().map_err(|_| format!("{}: not a process id: {:?}", pid_path.display(), text.trim()))?;
    if !is_weerwal_serve(pid) {
        return Err(format!("{} names process {pid}, which is not a `weerwal serve`", pid_path.display()));
    }
    Ok(pid)
}

/// Whether process `pid` is a weerwal running `serve`: its executable is
/// named weerwal (also when replaced by an upgrade since) and `serve` is
/// among its arguments.
#[cfg(target_os = "linux")]
fn is_weerwal_serve(pid: u32) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else { return false };
    let serves = cmdline.split(|&b| b == 0).skip(1).any(|a| a == b"serve");
    // `exe` is readable only for one's own processes (or as root); `comm`
    // (the name, cut at 15 bytes) for everyone.
    let name = match std::fs::read_link(proc.join("exe")) {
        Ok(exe) => exe.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_string()),
        Err(_) => std::fs::read_to_string(proc.join("comm")).ok().map(|c| c.trim_end().to_string()),
    };
    let named = name.is_some_and(|n| n == "weerwal" || n.starts_with("weerwal-"));
    serves && named
}

#[cfg(not(target_os = "linux"))]
fn is_weerwal_serve(_pid: u32) -> bool {
    // Without /proc the lock held on the audit log is the evidence.
    true
}

/// Registers SIGTERM and SIGINT (Ctrl-C) now and returns a future that
/// ends when either arrives.
fn shutdown_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }),
            _ => Box::pin(async {
                let _ = tokio::signal::ctrl_c().await;
            }),
        }
    }
    #[cfg(not(unix))]
    {
        Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn db_command(config: &Config, cmd: DbCommand) -> Result<ExitCode, Failure> {
    use weerwal::cluster::{migrate, node, Cluster};
    let Some(cluster) = &config.cluster else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "no [cluster] in the configuration: `weerwal db` needs the database's settings"
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let c = Cluster::connect_only(cluster).await?;
        match cmd {
            DbCommand::Migrate => {
                let client = c.client().await?;
                let m = migrate::migrate(&client, &c.settings).await?;
                if m.from == m.to {
                    println!("schema version {} is current ({})", m.to, c.settings.target());
                } else {
                    println!("schema migrated from version {} to {} ({})", m.from, m.to, c.settings.target());
                }
            }
            DbCommand::Status => {
                let s = node::status(&c).await?;
                node::print_status(&s, &mut std::io::stdout().lock())?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn ca_command(config: &Config, cmd: CaCommand) -> Result<ExitCode, Failure> {
    let dir = &config.ca.dir;
    match cmd {
        CaCommand::Init { force } => {
            // With ca.name_constraints the CA may sign only what the policy
            // names: read it first, so a broken policy makes no CA.
            let permitted = if config.ca.name_constraints {
                let (policy, _) = weerwal::policy::load_configured(config).map_err(|e| Failure::Usage(e.into()))?;
                Some(weerwal::ca::constraint_names(serve::ca_domains(config, &policy)))
            } else {
                None
            };
            let ca = CertificateAuthority::init_constrained(dir, &config.ca.organisation, force, permitted.as_deref())
                .map_err(|e| Failure::Usage(e.into()))?;
            println!("created {}", ca.cert_path().display());
            println!("{}", ca.summary());
        }
        CaCommand::Show => {
            let ca = load_ca(dir)?;
            println!("{}", ca.summary());
        }
        CaCommand::Export { der } => {
            let ca = load_ca(dir)?;
            let mut out = std::io::stdout().lock();
            if der {
                out.write_all(ca.cert_der())?;
            } else {
                out.write_all(ca.cert_pem().as_bytes())?;
            }
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_ca(dir: &Path) -> Result<CertificateAuthority, Failure> {
    CertificateAuthority::load(dir)
        .with_context(|| format!("no usable CA in {} (create one with `weerwal ca init`)", dir.display()))
        .map_err(Failure::Usage)
}

fn policy_check(config: &Config, dir: Option<&Path>) -> Result<ExitCode, Failure> {
    let loaded = match dir {
        Some(d) => policy::load_dir(d, &config.policy.timezone),
        None => policy::load_configured(config),
    };
    match loaded {
        Ok((policy, warnings)) => {
            for w in &warnings {
                println!("{w}");
            }
            println!(
                "OK: {} files, {} apps, {} domains, {} exemptions (digest {})",
                policy.files().len(),
                policy.apps().len(),
                policy.domain_count(),
                policy.exemptions().len(),
                &policy.digest()[..16]
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s); the policy was not accepted", errors.0.len());
            Ok(ExitCode::from(2))
        }
    }
}

fn policy_explain(config: &Config, question: &weerwal::explain::Question) -> Result<ExitCode, Failure> {
    let (policy, _) = policy::load_configured(config).map_err(|e| Failure::Usage(e.into()))?;
    let explained =
        weerwal::explain::explain(config, &policy, question, policy.today()).map_err(|e| Failure::Usage(e.into()))?;
    print!("{}", explained.text);
    Ok(if explained.allowed { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

fn users_command(config: &Config, cmd: UsersCommand) -> Result<ExitCode, Failure> {
    if let UsersCommand::Test { name } = &cmd {
        return users_test(config, name);
    }
    let path = &config.identity.users_file;
    let mut users = Users::load(path).map_err(|e| Failure::Usage(e.into()))?;
    match cmd {
        UsersCommand::Add { name, role, groups } => {
            let password = read_password()?;
            users.upsert(&name, &password, role, groups).map_err(|e| Failure::Usage(e.into()))?;
            users.save(path)?;
            println!("saved user {name} in {}", path.display());
        }
        UsersCommand::List => {
            for u in users.iter() {
                let role = match u.role {
                    Role::User => "user",
                    Role::Officer => "officer",
                };
                println!("{}\t{role}\t{}", u.name, u.groups.join(","));
            }
        }
        UsersCommand::Remove { name } => {
            users.remove(&name).map_err(|e| Failure::Usage(e.into()))?;
            users.save(path)?;
            println!("removed user {name}");
        }
        UsersCommand::Test { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `weerwal users test NAME`: what the directory (or the users file) says
/// about a name and password, for the administrator setting this up.
fn users_test(config: &Config, name: &str) -> Result<ExitCode, Failure> {
    use std::io::{BufRead, IsTerminal};
    use weerwal::identity::ldap::{Directory, Verdict};
    // Asked once, not shown, at a terminal; one line from a pipe otherwise.
    let password = if std::io::stdin().is_terminal() {
        prompt_hidden("Password (not shown; then Enter): ")?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    let Some(ldap) = &config.identity.ldap else {
        let users = Users::load(&config.identity.users_file).map_err(|e| Failure::Usage(e.into()))?;
        println!("source:   users file {}", config.identity.users_file.display());
        return Ok(match users.verify(name, &password) {
            Some(u) => {
                println!("accepted: {}", u.name);
                println!("groups:   {}", u.groups.join(", "));
                println!("officer:  {}", if u.role == Role::Officer { "yes" } else { "no" });
                ExitCode::SUCCESS
            }
            None => {
                println!("refused:  unknown name or wrong password");
                ExitCode::from(3)
            }
        });
    };
    let directory = Directory::new(ldap).map_err(|e| Failure::Usage(e.into()))?;
    println!("source:   directory {}{}", ldap.url, if ldap.starttls { " (StartTLS)" } else { "" });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let verdict = runtime.block_on(directory.check(name, &password))?;
    Ok(match verdict {
        Verdict::Accepted(u) => {
            println!("accepted: {}", u.name);
            println!("groups:   {}", u.groups.join(", "));
            match directory.officer_group() {
                Some(g) if u.groups.iter().any(|x| x == g) => println!("officer:  yes (member of {g})"),
                Some(g) => println!("officer:  no (not a member of {g})"),
                None => println!("officer:  no (no officer_group configured)"),
            }
            ExitCode::SUCCESS
        }
        Verdict::WrongPassword { name } => {
            println!("refused:  {name} exists, but the directory refused the password");
            ExitCode::from(3)
        }
        Verdict::Unknown => {
            println!("refused:  no single entry matches the user_filter under base_dn (or an empty password)");
            ExitCode::from(3)
        }
    })
}

/// The password from standard input: one line, so scripts can pipe it in
/// (`printf '%s\n' "$PW" | weerwal users add jan`) and it never shows in `ps`.
/// On a terminal it is asked for twice, and never shown while typed.
fn read_password() -> Result<String, Failure> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = prompt_hidden("Password (not shown; then Enter): ")?;
        if first.is_empty() {
            return Err(Failure::Usage(anyhow::anyhow!("no password given")));
        }
        let again = prompt_hidden("The same password again: ")?;
        if again != first {
            return Err(Failure::Usage(anyhow::anyhow!("the two passwords differ; nothing was saved")));
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!("no password on standard input")));
    }
    Ok(password)
}

/// Asks on stderr and reads one line from the terminal with echo off,
/// restoring the terminal's settings afterwards.
fn prompt_hidden(prompt: &str) -> Result<String, Failure> {
    use std::io::BufRead;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let _quiet = EchoOff::new(&stdin)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(_quiet);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The terminal with echo off, for as long as it lives.
#[cfg(unix)]
struct EchoOff {
    saved: rustix::termios::Termios,
}

#[cfg(unix)]
impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> Result<EchoOff, Failure> {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let saved =
            tcgetattr(stdin).map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot read terminal settings: {e}")))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(stdin, OptionalActions::Now, &quiet)
            .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot turn terminal echo off: {e}")))?;
        Ok(EchoOff { saved })
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.saved);
    }
}

#[cfg(not(unix))]
struct EchoOff;

#[cfg(not(unix))]
impl EchoOff {
    fn new(_stdin: &std::io::Stdin) -> Result<EchoOff, Failure> {
        Err(Failure::Usage(anyhow::anyhow!("on this system pipe the password in: a typed one would be shown")))
    }
}

/// An error and its causes, each said once: the library's errors already
/// put their cause's text in their own message (so logs read whole), which
/// anyhow's `{:#}` would print a second time.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}
