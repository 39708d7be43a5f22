//! Tessera operator.
//!
//! ```text
//! operator run [flags]        reconcile the custom resources (every flag has an env var)
//! operator crd [--out DIR]    print (or write) the CRD manifests generated from tessera-crds
//! ```
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Tessera operator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reconcile ApiProxy, AuthPolicy, Credential and Role (uses the in-cluster config, or
    /// KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print the CRD manifests, or write one file per CRD into a folder.
    Crd {
        /// Folder to write `<plural>.tessera.dev.yaml` files into; prints to stdout when absent.
        #[arg(long, env = "TESSERA_CRD_OUT")]
        out: Option<PathBuf>,
    },
}

/// Flags of `operator run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespaces to watch, comma-separated; empty watches all.
    #[arg(
        long,
        env = "TESSERA_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,
    /// Namespace of the keys Secret and the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tessera-system")]
    namespace: String,
    /// Name of the keys Secret (data key `keyset.json`).
    #[arg(long, env = "TESSERA_KEYS_SECRET", default_value = "tessera-keys")]
    keys_secret: String,
    /// Signing and encryption key rotation interval; `0s` never rotates.
    #[arg(long, env = "TESSERA_KEY_ROTATION", default_value = "720h")]
    key_rotation: String,
    /// How long a new signing key is in the JWKS before it signs. Istio refreshes JWKS every
    /// 20 min and Envoy caches 10 min, hence 30 min.
    #[arg(long, env = "TESSERA_KEY_PREPUBLISH", default_value = "30m")]
    key_prepublish: String,
    /// Clock skew allowed between token servers and validators (added to key retirement).
    #[arg(long, env = "TESSERA_CLOCK_SKEW", default_value = "5m")]
    clock_skew: String,
    /// Token endpoint written into generated Secrets (`token_endpoint`).
    #[arg(
        long,
        env = "TESSERA_TOKEN_ENDPOINT",
        default_value = "http://tessera-token-server.tessera-system.svc:8080/oauth2/token"
    )]
    token_endpoint: String,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "TESSERA_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    admin_listen: std::net::SocketAddr,
    /// Leader election through a Lease (run two replicas with it on).
    #[arg(long, env = "TESSERA_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "TESSERA_LEASE_NAME", default_value = "tessera-operator")]
    lease_name: String,
    /// Lease duration: a standby takes over at most this long after the leader vanished.
    #[arg(long, env = "TESSERA_LEASE_DURATION", default_value = "15s")]
    lease_duration: String,
    /// This replica's identity in the Lease; default the pod name (HOSTNAME).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Concurrent writes to the API server.
    #[arg(long, env = "TESSERA_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Log format (stderr): `plain` lines or `json` objects, as the token server spells them
    /// (`text` is accepted for `plain`).
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value = "plain")]
    log_format: LogFormat,
    /// Where audit lines go (secrets generated and rotated, key-set rotation steps, every
    /// Event): `stdout`, `stderr`, a file (appended to) or `off`. Logs stay on stderr.
    #[arg(long, env = "TESSERA_AUDIT_LOG", default_value = "stdout")]
    audit_log: String,
}

fn duration(flag: &str, v: &str) -> anyhow::Result<std::time::Duration> {
    tessera_crds::duration::parse_duration(v)
        .map_err(|e| anyhow::anyhow!("--{flag} {v:?}: {e}; write a duration like 30m or 720h"))
}

fn main() -> anyhow::Result<()> {
    let Args { command } = Args::parse();
    match command {
        Command::Crd { out } => write_crds(out),
        Command::Run(args) => run(*args),
    }
}

/// Log format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    #[value(alias = "text")]
    Plain,
    /// One JSON object per line.
    Json,
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if a.log_format == LogFormat::Json {
        sub.json().init();
    } else {
        sub.init();
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rotation = duration("key-rotation", &a.key_rotation)?;
    let lease_duration = duration("lease-duration", &a.lease_duration)?;
    let identity = a
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("tessera-operator-{}", std::process::id()));
    let audit = std::sync::Arc::new(
        tessera_operator::audit::Audit::open(&a.audit_log, &identity)
            .with_context(|| format!("--audit-log {}: opening it for appending", a.audit_log))?,
    );
    let cfg = tessera_operator::run::Config {
        namespaces: a.namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
        keys_namespace: a.namespace.clone(),
        keys_secret: a.keys_secret,
        key_rotation: (!rotation.is_zero()).then_some(rotation),
        key_prepublish: duration("key-prepublish", &a.key_prepublish)?,
        skew: duration("clock-skew", &a.clock_skew)?,
        settings: tessera_operator::plan::Settings {
            token_endpoint: a.token_endpoint,
        },
        lease: a
            .leader_election
            .then(|| tessera_operator::lease::LeaseConfig {
                namespace: a.namespace.clone(),
                name: a.lease_name,
                identity,
                duration: lease_duration,
                retry_period: lease_duration / 5,
            }),
        concurrency: a.concurrency,
        debounce: std::time::Duration::from_millis(100),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let metrics = std::sync::Arc::new(tessera_operator::metrics::Metrics::default());
        let mut op =
            tessera_operator::run::Operator::start(client.clone(), cfg.clone(), metrics.clone());
        op.set_audit(audit);
        let listener = tokio::net::TcpListener::bind(a.admin_listen)
            .await
            .with_context(|| format!("binding --admin-listen {}", a.admin_listen))?;
        let admin = tessera_operator::admin::router(op.health(), metrics);
        tokio::spawn(async move { axum::serve(listener, admin).await });
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let (leader_tx, leader) = match cfg.lease {
            Some(_) => tessera_operator::lease::leadership(),
            None => (
                tokio::sync::watch::channel(None).0,
                tessera_operator::lease::Leadership::always(),
            ),
        };
        let election = cfg.lease.clone().map(|l| {
            let api = kube::Api::namespaced(client.clone(), &l.namespace);
            tokio::spawn(tessera_operator::lease::run(
                api,
                l,
                leader_tx,
                shutdown.clone(),
            ))
        });
        let main = tokio::spawn(op.run(leader, shutdown.clone()));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
        let _ = main.await;
        if let Some(e) = election {
            let _ = e.await;
        }
        Ok(())
    })
}

fn write_crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    for (file, crd) in tessera_crds::crd::all() {
        let yaml = tessera_crds::crd::to_yaml(&crd).context("serializing a CRD")?;
        match &out {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
