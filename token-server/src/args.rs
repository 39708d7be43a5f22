//! Command line: every flag is also an environment variable.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Tessera token server.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A tool instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Tools.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read a password on standard input and print its argon2id hash, for a user-pool Secret.
    HashPassword,
    /// Print a key-set Secret manifest (new signing keys for RS256, ES256, EdDSA, an encryption
    /// key and a verifier key), for serving a folder with keys that survive restarts.
    GenerateKeys {
        /// Name of the Secret.
        #[arg(long, default_value = "tessera-keys")]
        name: String,
        /// Namespace of the Secret.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
}

/// Where resources come from.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A folder of manifests, watched for changes.
    Dir,
    /// The Kubernetes API: watch caches on the custom resources and the keys Secret (in-cluster
    /// config or KUBECONFIG).
    Kube,
}

/// Log format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`text` is accepted too, the chart's spelling before).
    #[value(alias = "text")]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Server options.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where the resources come from.
    #[arg(long, value_enum, default_value = "dir", env = "TESSERA_SOURCE")]
    pub source: SourceKind,
    /// The folder of manifests (`--source dir`).
    #[arg(long, env = "TESSERA_DIR", required_if_eq("source", "dir"))]
    pub dir: Option<PathBuf>,
    /// Namespaces to watch with `--source kube`, comma-separated; empty watches all.
    #[arg(
        long,
        env = "TESSERA_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,
    /// Namespace of the keys Secret with `--source kube` (the operator's).
    #[arg(long, env = "TESSERA_KEYS_NAMESPACE", default_value = "tessera-system")]
    pub keys_namespace: String,
    /// Name of the Secret holding the key set (`keyset.json`).
    #[arg(long, default_value = "tessera-keys", env = "TESSERA_KEYS_SECRET")]
    pub keys_secret: String,
    /// Address of the token API.
    #[arg(long, default_value = "0.0.0.0:8080", env = "TESSERA_LISTEN")]
    pub listen: SocketAddr,
    /// PEM certificate chain: with `--tls-key`, `--listen` serves HTTPS (TLS 1.2/1.3). The folder
    /// is watched, and a changed certificate (e.g. a cert-manager Secret) is used without restart.
    #[arg(long, env = "TESSERA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "TESSERA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that client certificates must chain to for `tls_client_auth` (RFC 8705).
    /// Client certificates are always requested and never required; without a bundle only
    /// `self_signed_tls_client_auth` (bound by thumbprint) can succeed.
    #[arg(long, env = "TESSERA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// With TLS on `--listen`, also serve plain HTTP here (for a service mesh that terminates TLS).
    #[arg(long, env = "TESSERA_PLAIN_LISTEN", requires = "tls_cert")]
    pub plain_listen: Option<SocketAddr>,
    /// Address of the admin API (health, readiness, metrics).
    #[arg(long, default_value = "0.0.0.0:9090", env = "TESSERA_ADMIN_LISTEN")]
    pub admin_listen: SocketAddr,
    /// The issuer: `iss` of every token and the base of discovery URLs.
    #[arg(long, default_value = "http://localhost:8080", env = "TESSERA_ISSUER")]
    pub issuer: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "plain", env = "TESSERA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `tessera_token_server=debug`.
    #[arg(long, default_value = "info", env = "TESSERA_LOG")]
    pub log: String,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 16 * 1024, env = "TESSERA_BODY_LIMIT")]
    pub body_limit: usize,
    /// Longest a request may take, in seconds.
    #[arg(long, default_value_t = 10, env = "TESSERA_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: u64,
    /// Failed attempts per (client or user, source address) that cost nothing; after them each
    /// attempt from that source waits 1 s, 2 s, 4 s… (up to `--lockout-secs`) since the last.
    #[arg(long, default_value_t = 5, env = "TESSERA_FREE_FAILED_AUTH")]
    pub free_failed_auth: u32,
    /// Failed attempts per client or user per `--lockout-secs`, over all the sources it has not
    /// authenticated from before (the backstop for guessing from many addresses).
    #[arg(long, default_value_t = 20, env = "TESSERA_MAX_FAILED_AUTH_PER_CLIENT")]
    pub max_failed_auth_per_client: u32,
    /// Failed attempts per source address per `--lockout-secs`, over all the clients and users it
    /// has not authenticated before (the backstop for one address spraying many client_ids).
    #[arg(
        long,
        default_value_t = 100,
        env = "TESSERA_MAX_FAILED_AUTH_PER_ADDRESS"
    )]
    pub max_failed_auth_per_address: u32,
    /// The budgets' refill window and the longest delay, in seconds.
    #[arg(long, default_value_t = 300, env = "TESSERA_LOCKOUT_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub lockout_secs: u64,
    /// Proxies (CIDRs or addresses, comma-separated) whose `Forwarded` / `X-Forwarded-For`
    /// headers name the client's address, e.g. the Ingress controller's pod network. Empty: the
    /// TCP peer is the source, and the headers are ignored.
    #[arg(long, default_value = "", env = "TESSERA_TRUSTED_PROXIES")]
    pub trusted_proxies: String,
    /// Password checks (argon2id, 19 MiB each) that run at once; more wait up to 2 s, then get
    /// 503 with Retry-After. Default: half the CPUs (1 to 4).
    #[arg(long, env = "TESSERA_PASSWORD_CHECKS", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub password_checks: Option<u16>,
    /// Threads serving the API (each a single-threaded runtime on its own SO_REUSEPORT socket).
    /// Default: the CPUs available to the process (its cgroup quota included).
    #[arg(long, env = "TESSERA_API_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub api_threads: Option<u16>,
    /// Most connections open at once on the API port (each listener: `--listen`, and
    /// `--plain-listen`). Past it, new connections wait in the kernel's backlog.
    #[arg(long, default_value_t = 10_000, env = "TESSERA_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections open at once on the admin port (probes and metrics scrapes).
    #[arg(long, default_value_t = 64, env = "TESSERA_ADMIN_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_max_connections: u32,
    /// The audience a Kubernetes ServiceAccount token must carry to authenticate a Credential
    /// bound to its ServiceAccount (`--source kube`). Default: `--issuer`.
    #[arg(long, env = "TESSERA_SERVICE_ACCOUNT_AUDIENCE")]
    pub service_account_audience: Option<String>,
    /// Where audit events go, one JSON line each (README: Audit trail): `stdout`, `stderr`, a
    /// file path (appended to), or `off`. Diagnostic logs stay on stderr.
    #[arg(long, default_value = "stdout", env = "TESSERA_AUDIT_LOG")]
    pub audit_log: String,
    /// PEM CA certificates trusted for clients' `jwksUri`, besides the system's roots (a
    /// private CA that signs the clients' key servers).
    #[arg(long, env = "TESSERA_JWKS_URI_CA_FILE")]
    pub jwks_uri_ca_file: Option<PathBuf>,
    /// Where the security state lives (spent and revoked tokens, guessing budgets): `memory`
    /// (this process; one replica, or each replica on its own) or `redis://host:6379/0`
    /// (`rediss://` for TLS), shared by every replica. The password never goes in the URL: use
    /// `--state-password-file` or `TESSERA_STATE_PASSWORD`.
    #[arg(long, default_value = "memory", env = "TESSERA_STATE_URL")]
    pub state: String,
    /// File holding the Redis password (its AUTH). `TESSERA_STATE_PASSWORD` works too.
    #[arg(long, env = "TESSERA_STATE_PASSWORD_FILE")]
    pub state_password_file: Option<PathBuf>,
    /// PEM CA bundle that signs the Redis server's certificate (`rediss://`); default: the
    /// system's roots.
    #[arg(long, env = "TESSERA_STATE_CA_FILE")]
    pub state_ca_file: Option<PathBuf>,
    /// The longest a request waits for Redis, in milliseconds.
    #[arg(long, default_value_t = 250, env = "TESSERA_STATE_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub state_timeout_ms: u64,
    /// What the guessing budgets do while Redis does not answer: `local` counts in this replica
    /// and keeps authenticating (client_credentials keeps working), `closed` answers 503.
    /// Refresh, revocation and introspection always answer 503 then.
    #[arg(
        long,
        value_enum,
        default_value = "local",
        env = "TESSERA_STATE_FALLBACK"
    )]
    pub state_fallback: tessera_token_server::store::Fallback,
    /// Prefix of every Redis key (deployments sharing one Redis need different ones).
    #[arg(long, default_value = "tessera:", env = "TESSERA_STATE_PREFIX")]
    pub state_prefix: String,
    /// On SIGTERM, how long in-flight requests may finish, in seconds.
    #[arg(long, default_value_t = 10, env = "TESSERA_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: u64,
}
