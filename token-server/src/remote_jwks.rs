//! Keys of clients that publish their own JWKS (`spec.jwksUri`, OpenID Connect's `jwks_uri`).
//!
//! A Credential's author chooses the URL, and anyone may send an assertion naming that client,
//! so the fetch is what an attacker would aim at: https only, a connect and total timeout, a
//! size limit, no redirects, no proxy, and never an internal address (loopback, private,
//! link-local, shared, cluster-internal names) unless the client's AuthPolicy allows it. The
//! address check runs on what the name resolves to, in the connector's own resolver, so a name
//! that resolves to an internal address (or is rebound to one later) is refused too.
//!
//! Keys are cached [`FRESH`]; an assertion naming an unknown `kid` fetches again at most every
//! [`REFETCH`], and a failed fetch keeps serving the last keys up to [`STALE`]. Concurrent
//! requests for one client wait for one fetch.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_crds::model::AssertionKey;

/// The largest JWKS read.
pub const MAX_BYTES: usize = 64 * 1024;
/// Connect and total timeout of one fetch.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How long fetched keys are used without asking again.
pub const FRESH: Duration = Duration::from_secs(300);
/// How long the last keys are used while fetching fails.
pub const STALE: Duration = Duration::from_secs(3600);
/// The shortest time between two fetches of one URL.
pub const REFETCH: Duration = Duration::from_secs(10);
/// URLs cached at most (they come from Credentials, not from requests).
const MAX_ENTRIES: usize = 10_000;
/// Keys read from one document at most.
const MAX_KEYS: usize = 32;

/// A client's published signing keys.
pub type Keys = Arc<Vec<AssertionKey>>;

/// Fetches and caches clients' published keys.
pub struct RemoteJwks {
    public: reqwest::Client,
    internal: reqwest::Client,
    refetch: Duration,
    cache: Mutex<HashMap<(Arc<str>, bool), Shared>>,
}

/// One URL's entry; its lock is held across a fetch, so concurrent requests wait for one.
type Shared = Arc<tokio::sync::Mutex<Entry>>;

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Entry {
    keys: Option<Arc<Vec<AssertionKey>>>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
    error: Option<String>,
}

/// Why a fetch failed, as told to the client (`invalid_client`) and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.jwksUri: {0}")]
pub struct FetchError(pub String);

impl RemoteJwks {
    /// A fetcher trusting the system's roots plus `extra_roots` (PEM certificates, e.g. a
    /// private CA).
    pub fn new(extra_roots: &[rustls_pki_types::CertificateDer<'static>]) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        // A root the platform cannot parse is skipped, as every TLS client does.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for c in extra_roots {
            roots.add(c.clone())?;
        }
        let tls = |roots: rustls::RootCertStore| -> anyhow::Result<rustls::ClientConfig> {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            Ok(rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth())
        };
        let client = |internal: bool| -> anyhow::Result<reqwest::Client> {
            let mut b = reqwest::Client::builder()
                .tls_backend_preconfigured(tls(roots.clone())?)
                .https_only(true)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(TIMEOUT)
                .timeout(TIMEOUT)
                .pool_max_idle_per_host(1)
                .user_agent(concat!("tessera-token-server/", env!("CARGO_PKG_VERSION")));
            if !internal {
                b = b.dns_resolver(Arc::new(PublicOnly));
            }
            Ok(b.build()?)
        };
        Ok(Self {
            public: client(false)?,
            internal: client(true)?,
            refetch: REFETCH,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The shortest time between two fetches of one URL ([`REFETCH`] unless set).
    pub fn with_refetch_interval(mut self, d: Duration) -> Self {
        self.refetch = d;
        self
    }

    /// The keys published at `uri`. `kid`: the key an assertion names; unknown, it fetches
    /// again (at most every [`REFETCH`]).
    pub async fn keys(
        &self,
        uri: &Arc<str>,
        allow_internal: bool,
        kid: Option<&str>,
    ) -> Result<Arc<Vec<AssertionKey>>, FetchError> {
        let entry = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_ENTRIES && !cache.contains_key(&(uri.clone(), allow_internal)) {
                cache.clear();
            }
            cache
                .entry((uri.clone(), allow_internal))
                .or_default()
                .clone()
        };
        let mut e = entry.lock().await;
        let now = Instant::now();
        let age = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let known = |keys: &Vec<AssertionKey>| match kid {
            Some(kid) => keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => true,
        };
        let recent = age(e.attempted).is_some_and(|a| a < self.refetch);
        if let Some(keys) = &e.keys
            && age(e.fetched).is_some_and(|a| a < FRESH)
            && (known(keys) || recent)
        {
            return Ok(keys.clone());
        }
        if recent {
            return match (&e.keys, age(e.fetched)) {
                (Some(k), Some(a)) if a < STALE => Ok(k.clone()),
                _ => Err(FetchError(e.error.clone().unwrap_or_else(|| {
                    "the client's JWKS could not be fetched; try again shortly".into()
                }))),
            };
        }
        e.attempted = Some(now);
        match self.fetch(uri, allow_internal).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                e.keys = Some(keys.clone());
                e.fetched = Some(now);
                e.error = None;
                Ok(keys)
            }
            Err(err) => {
                tracing::warn!(jwks_uri = %uri, error = %err.0, "fetching a client's JWKS failed");
                e.error = Some(err.0.clone());
                match (&e.keys, age(e.fetched)) {
                    (Some(k), Some(a)) if a < STALE => Ok(k.clone()),
                    _ => Err(err),
                }
            }
        }
    }

    async fn fetch(
        &self,
        uri: &str,
        allow_internal: bool,
    ) -> Result<Vec<AssertionKey>, FetchError> {
        let fail = |s: String| FetchError(s);
        let url = reqwest::Url::parse(uri).map_err(|_| fail("not a URL".into()))?;
        if url.scheme() != "https" {
            return Err(fail("only https:// URLs are fetched".into()));
        }
        if !allow_internal {
            match url.host() {
                Some(url::Host::Ipv4(ip)) if is_internal(IpAddr::V4(ip)) => {
                    return Err(fail(format!(
                        "{ip} is an internal address; the AuthPolicy's allowInternalJwksUri allows it"
                    )));
                }
                Some(url::Host::Ipv6(ip)) if is_internal(IpAddr::V6(ip)) => {
                    return Err(fail(format!(
                        "{ip} is an internal address; the AuthPolicy's allowInternalJwksUri allows it"
                    )));
                }
                Some(url::Host::Domain(name)) if internal_name(name) => {
                    return Err(fail(format!(
                        "{name} is a cluster-internal or local name; the AuthPolicy's allowInternalJwksUri allows it"
                    )));
                }
                _ => {}
            }
        }
        let client = if allow_internal {
            &self.internal
        } else {
            &self.public
        };
        let mut resp = client
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| fail(describe(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!(
                "the server answered HTTP {} (redirects are not followed)",
                resp.status().as_u16()
            )));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(fail(format!("the JWKS is larger than {MAX_BYTES} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(describe(&e)))? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(fail(format!("the JWKS is larger than {MAX_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body).map_err(fail)
    }
}

/// Why a request failed, without the URL (the caller names the field).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut why = if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("internal address") || text.contains("certificate") {
            why = format!("{why}: {text}");
            break;
        }
        source = s.source();
    }
    why
}

/// The usable signing keys of a published JWKS: keys for other uses or of other types are
/// skipped (a published set often carries encryption keys); a private member refuses the set.
pub fn parse(body: &[u8]) -> Result<Vec<AssertionKey>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let doc: Doc = serde_json::from_slice(body)
        .map_err(|_| "not a JWKS (a JSON object with a `keys` array)".to_owned())?;
    const PRIVATE: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];
    const PUBLIC: [&str; 9] = ["kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x"];
    let mut keys = Vec::new();
    for mut k in doc.keys.into_iter().take(MAX_KEYS) {
        if PRIVATE.iter().any(|m| k.contains_key(*m)) {
            return Err("the JWKS publishes a private key member; publish only public keys".into());
        }
        if k.get("use").is_some_and(|u| u != "sig") {
            continue;
        }
        k.retain(|name, _| PUBLIC.contains(&name.as_str()) || name == "y");
        let Ok(jwk) = serde_json::from_value::<tessera_crds::credential::Jwk>(k.into()) else {
            continue;
        };
        let Ok(alg) = tessera_crds::validate::jwk_algorithm(&jwk) else {
            continue;
        };
        keys.push(AssertionKey {
            kid: jwk.kid.clone(),
            alg,
            jwk,
        });
    }
    if keys.is_empty() {
        return Err(
            "the JWKS has no usable signing key (RSA of 2048 bits or more, P-256 or Ed25519)"
                .into(),
        );
    }
    Ok(keys)
}

/// Loopback, private, link-local, shared, documentation, multicast and unspecified addresses,
/// and IPv6 forms that embed one of them (mapped, NAT64).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return is_internal(IpAddr::V4([o[12], o[13], o[14], o[15]].into()));
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                // IPv4-compatible (deprecated) ::a.b.c.d
                || s[..6] == [0, 0, 0, 0, 0, 0]
        }
    }
}

/// Names that only mean something inside the cluster or the host: `localhost`, single labels
/// (completed by the pod's search domains), `*.svc`, `*.cluster.local`, `*.local`, `*.internal`.
pub fn internal_name(name: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    !n.contains('.')
        || n == "localhost"
        || [
            ".localhost",
            ".svc",
            ".cluster.local",
            ".local",
            ".internal",
        ]
        .iter()
        .any(|s| n.ends_with(s))
}

/// A resolver that returns only public addresses: the check runs where the connection's
/// addresses come from, so no later lookup can swap in an internal one.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to internal addresses; the AuthPolicy's allowInternalJwksUri allows them"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_in_every_spelling_are_internal() {
        for a in [
            "127.0.0.1",
            "10.96.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(is_internal(a.parse().expect("an address")), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_internal(a.parse().expect("an address")), "{a}");
        }
    }

    #[test]
    fn cluster_and_host_names_are_internal() {
        for n in [
            "localhost",
            "keys",
            "keys.default.svc",
            "keys.default.svc.cluster.local",
            "keys.default.svc.cluster.local.",
            "printer.local",
            "metadata.google.internal",
            "LOCALHOST",
            "a.localhost",
        ] {
            assert!(internal_name(n), "{n}");
        }
        for n in ["client.example.com", "login.microsoftonline.com"] {
            assert!(!internal_name(n), "{n}");
        }
    }

    #[test]
    fn a_published_set_keeps_its_signing_keys_and_skips_the_rest() {
        let ec = r#"{"kty":"EC","crv":"P-256","kid":"sig-1","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","x5t":"ignored"}"#;
        let enc = r#"{"kty":"EC","crv":"P-256","kid":"enc-1","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let p384 = r#"{"kty":"EC","crv":"P-384","kid":"big","x":"AA","y":"AA"}"#;
        let doc = format!(r#"{{"keys":[{ec},{enc},{p384}]}}"#);
        let keys = parse(doc.as_bytes()).expect("usable");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("sig-1"));
        assert_eq!(keys[0].alg, "ES256");
    }

    #[test]
    fn a_private_member_or_no_usable_key_refuses_the_set() {
        let private = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"secret"}]}"#;
        let e = parse(private.as_bytes()).expect_err("refused");
        assert!(e.contains("private key"), "{e}");
        assert!(!e.contains("secret"), "the value is never echoed: {e}");
        assert!(
            parse(br#"{"keys":[]}"#)
                .expect_err("refused")
                .contains("no usable")
        );
        assert!(
            parse(b"<html>")
                .expect_err("refused")
                .contains("not a JWKS")
        );
        assert!(
            parse(br#"{"keys":"x"}"#)
                .expect_err("refused")
                .contains("not a JWKS")
        );
    }
}
