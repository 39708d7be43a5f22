//! Tessera token server binary: `token-server --source dir --dir examples/quickstart`.
#![forbid(unsafe_code)]

mod args;

// The load path allocates and frees millions of small objects (parsed manifests); mimalloc is
// faster at that than glibc's allocator and returns freed memory to the OS, which keeps RSS near
// what the snapshot needs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use args::{Args, Command, LogFormat, ServeArgs, SourceKind};
use clap::Parser;
use std::io::Read as _;
use std::net::SocketAddr;
use std::time::Duration;
use tessera_token_server::lockout::LockoutConfig;
use tessera_token_server::serve::Limits;
use tessera_token_server::source::dir::{self, DirLoader};
use tessera_token_server::state::{AppState, Config};
use tessera_token_server::store::{RedisConfig, Store};
use tessera_token_server::token::keys::{KeySet, SECRET_DATA_KEY};
use tessera_token_server::{admin, http};

fn main() -> anyhow::Result<()> {
    // One TLS crypto provider for rustls and the Kubernetes client (TOOLING.md pitfall 1).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Args { command, serve } = Args::parse();
    match command {
        Some(Command::HashPassword) => hash_password(),
        Some(Command::GenerateKeys { name, namespace }) => generate_keys(&name, &namespace),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(serve)),
    }
}

fn hash_password() -> anyhow::Result<()> {
    use argon2::PasswordHasher;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    let password = input
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&input);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    println!("{hash}");
    Ok(())
}

fn generate_keys(name: &str, namespace: &str) -> anyhow::Result<()> {
    let file = KeySet::generate_file(jiff::Timestamp::now())?;
    let json = serde_json::to_string(&file)?;
    println!(
        "# Tessera key set: signing keys (RS256, ES256, EdDSA), the token encryption key and the\n# client-secret verifier key. Keep it secret.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: Opaque\nstringData:\n  {SECRET_DATA_KEY}: '{json}'"
    );
    Ok(())
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).context("--log is not a valid filter")?;
    // Logs go to stderr; stdout is for the tools' output (generate-keys, hash-password).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Binds `addr` with SO_REUSEPORT (so several sockets share it) and TCP_NODELAY on accepted
/// connections.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Starts one API server thread per core on `addr`, each a single-threaded runtime with its own
/// accept loop (`tessera_token_server::serve`).
fn api_shards(
    state: &AppState,
    addr: SocketAddr,
    threads: Option<u16>,
    limits: Limits,
    tls: Option<tessera_token_server::tls::SharedConfig>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let n = threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    // Port 0 would give every shard its own port: use one shard then.
    let n = if addr.port() == 0 { 1 } else { n };
    // The cap is for the listener: each shard takes its share.
    let limits = Limits {
        max_connections: limits.max_connections.div_ceil(n),
        ..limits
    };
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let state = state.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        // Password checks are the only blocking work, and they are bounded by their own
        // semaphore; a small pool keeps a burst from spawning hundreds of threads.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(8)
            .build()?;
        // Bind here, so a failure is reported before startup continues; entering the shard's
        // runtime registers the socket with its reactor.
        let listener = {
            let _entered = rt.enter();
            reuseport_listener(addr).with_context(|| format!("binding the API to {addr}"))?
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("api-{i}"))
                .spawn(move || {
                    rt.block_on(tessera_token_server::serve::serve(
                        listener,
                        http::router(state),
                        limits,
                        tls,
                        stop,
                    ));
                })?,
        );
    }
    Ok(threads)
}

/// The security state `--state` names.
fn open_store(
    lockout: LockoutConfig,
    url: &str,
    password_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
    fallback: tessera_token_server::store::Fallback,
    prefix: String,
) -> anyhow::Result<Store> {
    if url == "memory" {
        return Ok(Store::memory(lockout));
    }
    anyhow::ensure!(
        url.starts_with("redis://") || url.starts_with("rediss://"),
        "--state: `memory` or a redis:// (rediss:// for TLS) URL, e.g. redis://redis.tessera-system:6379/0"
    );
    // `redis://user:password@host`: a password there is visible in the process list and in
    // the pod spec. Refused, naming the fix, without echoing it.
    let authority = url.split_once("://").map_or("", |(_, r)| r);
    let authority = authority.split(['/', '?']).next().unwrap_or_default();
    anyhow::ensure!(
        !authority
            .split_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':')),
        "--state: the URL carries a password; put it in --state-password-file or TESSERA_STATE_PASSWORD instead"
    );
    let password = match password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("--state-password-file {}", p.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => std::env::var("TESSERA_STATE_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
    };
    let ca_pem = ca_file
        .map(|p| std::fs::read(p).with_context(|| format!("--state-ca-file {}", p.display())))
        .transpose()?;
    Store::redis(
        lockout,
        RedisConfig {
            url: url.to_owned(),
            password,
            ca_pem,
            timeout,
            prefix,
        },
        fallback,
    )
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        source,
        dir,
        namespaces,
        keys_namespace,
        keys_secret,
        listen,
        tls_cert,
        tls_key,
        tls_client_ca,
        plain_listen,
        admin_listen,
        issuer,
        log_format,
        log,
        body_limit,
        request_timeout_secs,
        free_failed_auth,
        max_failed_auth_per_client,
        max_failed_auth_per_address,
        lockout_secs,
        trusted_proxies,
        password_checks,
        api_threads,
        shutdown_grace_secs,
        max_connections,
        admin_max_connections,
        state: state_url,
        state_password_file,
        state_ca_file,
        state_timeout_ms,
        state_fallback,
        state_prefix,
        service_account_audience,
        jwks_uri_ca_file,
        audit_log,
    } = args;
    init_logging(log_format, &log)?;
    let config = Config {
        issuer: issuer.clone(),
        body_limit,
        request_timeout: Duration::from_secs(request_timeout_secs),
        lockout: LockoutConfig {
            free_failures: free_failed_auth,
            principal_budget: max_failed_auth_per_client,
            source_budget: max_failed_auth_per_address,
            window: Duration::from_secs(lockout_secs),
            max_delay: Duration::from_secs(lockout_secs),
            ..LockoutConfig::default()
        },
        trusted_proxies: tessera_token_server::http::source::parse_trusted(&trusted_proxies)
            .map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?,
        password_checks: password_checks.map_or_else(
            tessera_token_server::passwords::default_concurrency,
            usize::from,
        ),
    };
    let store = open_store(
        config.lockout,
        &state_url,
        state_password_file.as_deref(),
        state_ca_file.as_deref(),
        Duration::from_millis(state_timeout_ms),
        state_fallback,
        state_prefix,
    )?;
    tracing::info!(state = store.mode(), "security state");
    let mut state = AppState::with_store(config, store);
    let sink = tessera_token_server::audit::Audit::open(&audit_log)
        .with_context(|| format!("--audit-log {audit_log}: opening it for appending"))?;
    state.start_audit(sink);
    tracing::info!(audit_log = %audit_log, "audit trail");
    if let Some(path) = &jwks_uri_ca_file {
        use rustls_pki_types::pem::PemObject as _;
        let roots: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect())
                .with_context(|| {
                    format!("--jwks-uri-ca-file {}: PEM certificates", path.display())
                })?;
        anyhow::ensure!(
            !roots.is_empty(),
            "--jwks-uri-ca-file {}: no certificate in it",
            path.display()
        );
        state.remote_jwks = std::sync::Arc::new(
            tessera_token_server::remote_jwks::RemoteJwks::new(&roots)
                .context("--jwks-uri-ca-file: building the TLS client")?,
        );
    }

    let api = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API to {listen}"))?;
    let admin_l = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding the admin API to {admin_listen}"))?;
    tracing::info!(api = %api.local_addr()?, admin = %admin_l.local_addr()?, %issuer, "listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let source_task = match source {
        SourceKind::Dir => {
            let dir = dir.context("--dir is required with --source dir")?;
            anyhow::ensure!(dir.is_dir(), "--dir {}: not a folder", dir.display());
            let loader = DirLoader::new(dir, keys_secret, issuer);
            tokio::spawn(dir::run(state.clone(), loader, stopped(stop_rx.clone())))
        }
        SourceKind::Kube => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
            let source = tessera_token_server::source::kube::KubeSource {
                namespaces: namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
                keys_namespace,
                keys_secret,
                issuer: issuer.clone(),
            };
            state.service_accounts = Some(std::sync::Arc::new(
                tessera_token_server::source::service_accounts::ClusterIssuer::new(
                    client.clone(),
                    service_account_audience.unwrap_or_else(|| issuer.clone()),
                ),
            ));
            state.cluster_revocation = Some(std::sync::Arc::new(
                tessera_token_server::source::kube::NotBeforeWriter::new(client.clone()),
            ));
            tokio::spawn(source.run(state.clone(), client, stopped(stop_rx.clone())))
        }
    };
    // The API runs on one single-threaded runtime per core, each accepting on its own
    // SO_REUSEPORT socket: no work-stealing wake-ups between threads on the hot path, which on
    // this 2-core machine cut the kernel's share of each request markedly (see the benchmark).
    drop(api);
    let request_timeout = Duration::from_secs(request_timeout_secs);
    let limits = Limits {
        header_timeout: request_timeout,
        max_connections: max_connections as usize,
    };
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            let files = tessera_token_server::tls::TlsFiles {
                cert,
                key,
                client_ca: tls_client_ca,
            };
            let config = tessera_token_server::tls::initial(&files)?;
            tokio::spawn(tessera_token_server::tls::watch(
                files,
                config.clone(),
                stopped(stop_rx.clone()),
            ));
            Some(config)
        }
        _ => None,
    };
    let mut shards = api_shards(
        &state,
        listen,
        api_threads,
        limits,
        tls.clone(),
        stop_rx.clone(),
    )?;
    if let Some(plain) = plain_listen {
        shards.extend(api_shards(
            &state,
            plain,
            api_threads,
            limits,
            None,
            stop_rx.clone(),
        )?);
        tracing::info!(%plain, "also serving plain HTTP");
    }
    // The admin port gets the API's header timeout and a small connection cap of its own: it
    // serves probes and scrapes, and a flood on it must not take descriptors the API needs.
    let admin_task = tokio::spawn(tessera_token_server::serve::serve(
        admin_l,
        admin::router(state.clone()),
        Limits {
            header_timeout: request_timeout,
            max_connections: admin_max_connections as usize,
        },
        None,
        stop_rx.clone(),
    ));
    shutdown_signal().await;
    tracing::info!(
        grace_secs = shutdown_grace_secs,
        "shutting down: finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    let drain = async {
        let _ =
            tokio::task::spawn_blocking(move || shards.into_iter().for_each(|t| drop(t.join())))
                .await;
        let _ = admin_task.await;
        let _ = source_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(shutdown_grace_secs), drain)
        .await
        .is_err()
    {
        tracing::warn!("grace period over; exiting with requests still open");
    }
    state.audit.finish();
    Ok(())
}
