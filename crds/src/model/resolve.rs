//! The pure function from resources to a [`Snapshot`].

use super::problem::{Kind, ObjectRef, Reason, Report};
use super::snapshot::{
    AssertionKey, Client, ClientCa, ClientKind, Counts, Limits, Policy, RefreshPolicy,
    SecretVerifier, Snapshot, UserPool,
};
use crate::auth_policy::{ClientAuthMethod, GrantType, Management};
use crate::common::{PublishedVerifier, SecretKeyRef};
use crate::duration::parse_duration;
use crate::manifest::{DEFAULT_NAMESPACE, Resource};
use crate::secret::{CLIENT_SECRET_KEY, Verifier, VerifierKey};
use crate::validate::{self, DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL, FieldProblem};
use crate::{ApiProxy, AuthPolicy, Credential, Role};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

/// The input of [`resolve`]: every object of the four kinds, and the Secrets they may reference.
/// Objects are behind `Arc` so that a reflector's store can be passed without copying.
#[derive(Debug, Default, Clone)]
pub struct ResourceSet {
    /// ApiProxies.
    pub api_proxies: Vec<Arc<ApiProxy>>,
    /// AuthPolicies.
    pub auth_policies: Vec<Arc<AuthPolicy>>,
    /// Credentials.
    pub credentials: Vec<Arc<Credential>>,
    /// Roles.
    pub roles: Vec<Arc<Role>>,
    /// Secrets: client secrets, user pools, CA bundles.
    pub secrets: Vec<Arc<Secret>>,
    /// ConfigMaps: CA bundles.
    pub config_maps: Vec<Arc<k8s_openapi::api::core::v1::ConfigMap>>,
    /// ServiceAccounts, when the caller watches them (the operator): a Credential binding a
    /// missing one is reported. `None`: not known (the token server, a folder), not checked.
    pub service_accounts: Option<Vec<Arc<k8s_openapi::api::core::v1::ServiceAccount>>>,
}

impl ResourceSet {
    /// Adds one object.
    pub fn push(&mut self, r: Resource) {
        match r {
            Resource::ApiProxy(o) => self.api_proxies.push(Arc::new(o)),
            Resource::AuthPolicy(o) => self.auth_policies.push(Arc::new(o)),
            Resource::Credential(o) => self.credentials.push(Arc::new(o)),
            Resource::Role(o) => self.roles.push(Arc::new(o)),
            Resource::Secret(o) => self.secrets.push(Arc::new(o)),
            Resource::ConfigMap(o) => self.config_maps.push(Arc::new(o)),
        }
    }
}

impl FromIterator<Resource> for ResourceSet {
    fn from_iter<I: IntoIterator<Item = Resource>>(iter: I) -> Self {
        let mut set = ResourceSet::default();
        for r in iter {
            set.push(r);
        }
        set
    }
}

/// Name of the Secret the operator generates a Credential's secret into.
pub fn credential_secret_name(credential_name: &str) -> String {
    format!("{credential_name}-client")
}

/// Name of the Secret the operator generates a proxy key into.
pub fn proxy_key_secret_name(proxy_name: &str) -> String {
    format!("{proxy_name}-proxy-key")
}

type Key<'a> = (&'a str, &'a str);

fn key(meta: &ObjectMeta) -> Key<'_> {
    (
        meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn object_ref(kind: Kind, meta: &ObjectMeta) -> ObjectRef {
    let (ns, name) = key(meta);
    ObjectRef::new(kind, ns, name)
}

/// Sort key for "the older keeps it": creation time first (objects read from files have none
/// and sort after), then kind, namespace and name so the outcome never depends on input order.
fn age(kind: Kind, meta: &ObjectMeta) -> (bool, Option<Timestamp>, Kind, &str, &str) {
    let ts = meta.creation_timestamp.as_ref().map(|t| t.0);
    let (ns, name) = key(meta);
    (ts.is_none(), ts, kind, ns, name)
}

struct Ctx<'a> {
    report: Report,
    // Every object registered, for duplicate detection; dropped with the context.
    seen: HashSet<(Kind, &'a str, &'a str)>,
    secrets: HashMap<Key<'a>, &'a Secret>,
    verifier_key: &'a VerifierKey,
    now: Timestamp,
}

impl<'a> Ctx<'a> {
    /// Registers an object; false (and a `Duplicate` problem) if it was seen already.
    fn register(&mut self, meta: &'a ObjectMeta, r: &ObjectRef) -> bool {
        let (ns, name) = key(meta);
        if self.seen.insert((r.kind, ns, name)) {
            return true;
        }
        self.report.add(
            r,
            Reason::Duplicate,
            "metadata.name",
            format!(
                "{r} is defined more than once; the first definition is used, remove the others"
            ),
        );
        false
    }

    /// Records validation problems; true if there were none.
    fn valid(&mut self, r: &ObjectRef, problems: Vec<FieldProblem>) -> bool {
        let ok = problems.is_empty();
        for p in problems {
            self.report.add(r, Reason::Invalid, p.field, p.message);
        }
        ok
    }

    fn secret_value(&self, ns: &str, name: &str, data_key: &str) -> SecretLookup<'a> {
        let Some(s) = self.secrets.get(&(ns, name)) else {
            return SecretLookup::NoSecret;
        };
        // `stringData` wins over `data`, as the API server merges them on write.
        if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(data_key)) {
            return SecretLookup::Found(v.as_bytes());
        }
        match s.data.as_ref().and_then(|d| d.get(data_key)) {
            Some(v) => SecretLookup::Found(&v.0),
            None => SecretLookup::NoKey,
        }
    }

    /// The verifiers that authenticate a client: those published in status by the operator,
    /// else the referenced (or generated) Secret's value hashed with the verifier key.
    fn verifiers(&mut self, r: &ObjectRef, src: SecretSource<'_>) -> Option<Vec<SecretVerifier>> {
        if !src.published.is_empty() {
            let mut out = Vec::with_capacity(src.published.len());
            for (i, p) in src.published.iter().enumerate() {
                let verifier = Verifier::from_published(&p.verifier);
                let not_after = match p.not_after.as_deref().map(str::parse::<Timestamp>) {
                    None => Some(None),
                    Some(Ok(t)) => Some(Some(t)),
                    Some(Err(_)) => None,
                };
                match (verifier, not_after) {
                    (Some(verifier), Some(not_after)) => out.push(SecretVerifier { verifier, not_after }),
                    _ => self.report.add(r, Reason::Invalid, format!("status.secretVerifiers[{i}]"), "not a verifier the token server reads; the operator rewrites it on its next reconcile"),
                }
            }
            if !out.is_empty() {
                return Some(out);
            }
        }
        let (name, data_key, referenced) = match src.secret_ref {
            Some(sr) => (
                sr.name.clone(),
                sr.key_or(CLIENT_SECRET_KEY).to_owned(),
                true,
            ),
            None => (
                src.generated_name.clone(),
                CLIENT_SECRET_KEY.to_owned(),
                false,
            ),
        };
        let field = if referenced {
            format!("{}.name", src.field)
        } else {
            src.field.to_owned()
        };
        match self.secret_value(&r.namespace, &name, &data_key) {
            SecretLookup::Found([]) => {
                self.report.add(
                    r,
                    Reason::Invalid,
                    field,
                    format!(
                        "key `{data_key}` of Secret {name} is empty; put the client secret there"
                    ),
                );
                None
            }
            SecretLookup::Found(v) => Some(vec![SecretVerifier {
                verifier: self.verifier_key.verifier(src.binding, v),
                not_after: None,
            }]),
            SecretLookup::NoKey => {
                self.report.add(r, Reason::SecretKeyNotFound, field, format!("Secret {name} has no key `{data_key}`; add it, or name the right key in secretRef.key"));
                None
            }
            SecretLookup::NoSecret if referenced => {
                self.report.add(r, Reason::SecretNotFound, field, format!("Secret {name} not found in namespace {}; create it, or remove secretRef to have a secret generated", r.namespace));
                None
            }
            SecretLookup::NoSecret => {
                self.report.add(r, Reason::SecretPending, field, format!("the secret is generated by the operator into Secret {name}; when serving a folder of manifests, add that Secret with key `{CLIENT_SECRET_KEY}`"));
                None
            }
        }
    }
}

enum SecretLookup<'a> {
    Found(&'a [u8]),
    NoKey,
    NoSecret,
}

struct SecretSource<'s> {
    /// What the verifiers are bound to.
    binding: &'s str,
    published: &'s [PublishedVerifier],
    secret_ref: Option<&'s SecretKeyRef>,
    generated_name: String,
    field: &'s str,
}

/// Candidate client before client_id conflicts are settled.
struct Candidate<'a> {
    age: (bool, Option<Timestamp>, Kind, &'a str, &'a str),
    client: Arc<Client>,
}

/// Resolves resources into a [`Snapshot`]: clients indexed by client_id, and problems per object.
///
/// Pure: the same input, key and time give the same snapshot. `now` decides which Credentials
/// have expired; the token server still checks expiry per request, since a snapshot outlives it.
pub fn resolve(set: &ResourceSet, verifier_key: &VerifierKey, now: Timestamp) -> Snapshot {
    let mut secrets = HashMap::with_capacity(set.secrets.len());
    for s in &set.secrets {
        secrets.entry(key(&s.metadata)).or_insert(&**s);
    }
    let mut cx = Ctx {
        report: Report::default(),
        seen: HashSet::with_capacity(
            set.credentials.len()
                + set.api_proxies.len()
                + set.roles.len()
                + set.auth_policies.len(),
        ),
        secrets,
        verifier_key,
        now,
    };

    let (policies, invalid_policies) = resolve_policies(&mut cx, set);
    let proxies = resolve_proxies(&mut cx, set);
    let (roles, scopes_by_proxy) = resolve_roles(&mut cx, set, &proxies);

    let mut candidates = Vec::with_capacity(set.credentials.len() + set.api_proxies.len());
    for c in &set.credentials {
        if let Some(cand) = credential_client(
            &mut cx,
            set,
            c,
            &policies,
            &invalid_policies,
            &proxies,
            &roles,
        ) {
            candidates.push(cand);
        }
    }
    for p in &set.api_proxies {
        if let Some(cand) = proxy_key_client(&mut cx, p, &policies, &proxies, &scopes_by_proxy) {
            candidates.push(cand);
        }
    }

    // The older object keeps a contested client_id: one pass, comparing ages only on a conflict.
    let mut held: HashMap<String, Candidate<'_>> = HashMap::with_capacity(candidates.len());
    let mut losers = Vec::new();
    for cand in candidates {
        match held.entry(cand.client.client_id.clone()) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(cand);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let loser = if cand.age < o.get().age {
                    o.insert(cand)
                } else {
                    cand
                };
                losers.push(loser);
            }
        }
    }
    for loser in losers {
        let holder = &held[&loser.client.client_id].client.owner;
        let msg =
            format!("client_id is already used by the older {holder}; choose another clientId");
        let field = match loser.client.kind {
            ClientKind::Credential => "spec.clientId",
            ClientKind::ProxyKey => "spec.proxyKey.clientId",
        };
        cx.report
            .add(&loser.client.owner, Reason::ClientIdConflict, field, msg);
    }
    let clients: HashMap<String, Arc<Client>> =
        held.into_iter().map(|(id, c)| (id, c.client)).collect();

    let mut audiences = HashMap::with_capacity(proxies.len());
    for (k, p) in &proxies {
        if let ProxyState::Serving(aud) = p {
            audiences.insert(aud.clone(), ObjectRef::new(Kind::ApiProxy, k.0, k.1));
        }
    }
    let counts = Counts {
        api_proxies: set.api_proxies.len(),
        auth_policies: set.auth_policies.len(),
        credentials: set.credentials.len(),
        roles: set.roles.len(),
        secrets: set.secrets.len(),
        clients: clients.len(),
    };
    Snapshot {
        clients,
        audiences,
        report: cx.report,
        counts,
    }
}

fn resolve_policies<'a>(
    cx: &mut Ctx<'a>,
    set: &'a ResourceSet,
) -> (HashMap<Key<'a>, Arc<Policy>>, HashSet<Key<'a>>) {
    let mut policies = HashMap::with_capacity(set.auth_policies.len());
    let mut invalid = HashSet::new();
    for p in &set.auth_policies {
        let r = object_ref(Kind::AuthPolicy, &p.metadata);
        if !cx.register(&p.metadata, &r) {
            continue;
        }
        if !cx.valid(&r, validate::auth_policy(p)) {
            invalid.insert(key(&p.metadata));
            continue;
        }
        let s = &p.spec;
        let users = s
            .user_pool
            .as_ref()
            .map(|pool| Arc::new(user_pool(cx, &r, &pool.name)));
        let ca = client_ca(cx, set, &r, s.client_ca.as_ref());
        // Validation passed, so the durations parse.
        let ttl = |v: &Option<String>, d| {
            v.as_deref()
                .and_then(|v| parse_duration(v).ok())
                .unwrap_or(d)
        };
        let policy = Policy {
            owner: r,
            token_type: s.token_type,
            management: s.management,
            grant_types: s.grant_types.clone(),
            access_ttl: (!s.access_token.immortal)
                .then(|| ttl(&s.access_token.ttl, DEFAULT_ACCESS_TTL)),
            refresh: s.refresh.enabled.then(|| RefreshPolicy {
                ttl: ttl(&s.refresh.ttl, DEFAULT_REFRESH_TTL),
                rotate: s.refresh.rotate,
                max_refreshes: s.refresh.max_refreshes,
            }),
            allow_url_parameters: s.allow_url_parameters,
            algorithm: s.signing_algorithm,
            auth_methods: s.client_auth_methods.clone(),
            users,
            token_management: s.token_management.clone(),
            client_ca: ca,
            limits: Limits::from_spec(s.rate_limit.as_ref(), s.quota.as_ref()),
            token_review: s.service_account_verification
                == crate::auth_policy::ServiceAccountVerification::TokenReview,
            allow_internal_jwks_uri: s.allow_internal_jwks_uri,
        };
        policies.insert(key(&p.metadata), Arc::new(policy));
    }
    (policies, invalid)
}

/// Loads a user pool; entries that are not argon2id PHC strings are reported and left out.
fn user_pool(cx: &mut Ctx<'_>, r: &ObjectRef, secret_name: &str) -> UserPool {
    let mut pool = UserPool::default();
    let Some(secret) = cx.secrets.get(&(&*r.namespace, secret_name)).copied() else {
        cx.report.add(r, Reason::SecretNotFound, "spec.userPool.name", format!("user pool Secret {secret_name} not found in namespace {}; create it (keys: usernames, values: argon2id hashes) — until then the password grant authenticates nobody", r.namespace));
        return pool;
    };
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k, String::from_utf8(v.0.clone()).ok()));
    let string_data = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, Some(v.clone())));
    let mut bad = Vec::new();
    for (user, hash) in data.chain(string_data) {
        match hash {
            Some(h) if is_argon2id(&h) => {
                pool.users.insert(user.clone(), h);
            }
            _ => bad.push(user.as_str()),
        }
    }
    if !bad.is_empty() {
        bad.sort_unstable();
        bad.dedup();
        let shown: Vec<_> = bad.iter().take(10).copied().collect();
        cx.report.add(r, Reason::UserPoolInvalid, "spec.userPool.name", format!("in Secret {secret_name}, the entries for {} are not argon2id PHC hashes ($argon2id$v=19$...); those users cannot sign in until re-hashed", shown.join(", ")));
    }
    pool
}

/// The CA bundle of a policy, read from its Secret or ConfigMap. A missing one is reported and
/// fails closed: `tls_client_auth` then admits nobody under this policy.
fn client_ca(
    cx: &mut Ctx<'_>,
    set: &ResourceSet,
    r: &ObjectRef,
    ca: Option<&crate::auth_policy::ClientCaRef>,
) -> ClientCa {
    let Some(ca) = ca else {
        return ClientCa::Global;
    };
    let ns = &*r.namespace;
    let (field, what, name, key) = match (&ca.secret_ref, &ca.config_map_ref) {
        (Some(sr), _) => (
            "spec.clientCa.secretRef",
            "Secret",
            sr.name.as_str(),
            sr.key_or(crate::auth_policy::DEFAULT_CA_KEY),
        ),
        (None, Some(cr)) => (
            "spec.clientCa.configMapRef",
            "ConfigMap",
            cr.name.as_str(),
            cr.key_or(crate::auth_policy::DEFAULT_CA_KEY),
        ),
        (None, None) => return ClientCa::Unavailable,
    };
    let found = referenced_value(cx, set, ns, what == "Secret", name, key);
    match found {
        Some(Some(pem)) if pem.contains("-----BEGIN CERTIFICATE-----") => {
            ClientCa::Pem(Arc::from(pem))
        }
        Some(Some(_)) => {
            cx.report.add(
                r,
                Reason::Invalid,
                format!("{field}.key"),
                format!(
                    "key `{key}` of {what} {name} holds no PEM certificate; put the CA bundle there"
                ),
            );
            ClientCa::Unavailable
        }
        Some(None) => {
            cx.report.add(
                r,
                Reason::SecretKeyNotFound,
                format!("{field}.key"),
                format!("{what} {name} has no key `{key}`; add the CA bundle there"),
            );
            ClientCa::Unavailable
        }
        None => {
            cx.report.add(r, Reason::SecretNotFound, format!("{field}.name"), format!("{what} {name} not found in namespace {ns}; until it exists tls_client_auth admits nobody under this policy"));
            ClientCa::Unavailable
        }
    }
}

/// The value of `key` in the Secret (else ConfigMap) `name` of `ns`: `None` when the object is
/// missing, `Some(None)` when it has no such key.
fn referenced_value(
    cx: &Ctx<'_>,
    set: &ResourceSet,
    ns: &str,
    secret: bool,
    name: &str,
    key: &str,
) -> Option<Option<String>> {
    if secret {
        return cx.secrets.get(&(ns, name)).map(|s| {
            s.string_data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
                .or_else(|| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .and_then(|b| String::from_utf8(b.0.clone()).ok())
                })
        });
    }
    set.config_maps
        .iter()
        .find(|c| self::key(&c.metadata) == (ns, name))
        .map(|c| c.data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// A Credential's public keys: inline, or read from its `jwksRef` (problems reported, and
/// then no keys: the client cannot authenticate with an assertion until they are fixed).
fn credential_jwks(
    cx: &mut Ctx<'_>,
    set: &ResourceSet,
    r: &ObjectRef,
    c: &crate::credential::CredentialSpec,
) -> Option<crate::credential::Jwks> {
    if let Some(j) = &c.jwks {
        return Some(j.clone());
    }
    let jr = c.jwks_ref.as_ref()?;
    let (field, what, kr) = match (&jr.secret_ref, &jr.config_map_ref) {
        (Some(k), _) => ("spec.jwksRef.secretRef", "Secret", k),
        (None, Some(k)) => ("spec.jwksRef.configMapRef", "ConfigMap", k),
        (None, None) => return None,
    };
    let (name, key) = (
        kr.name.as_str(),
        kr.key_or(crate::credential::DEFAULT_JWKS_KEY),
    );
    let ns = r.namespace.to_string();
    match referenced_value(cx, set, &ns, what == "Secret", name, key) {
        None => {
            cx.report.add(r, Reason::SecretNotFound, format!("{field}.name"), format!("{what} {name} not found in namespace {ns}; create it with the client's JWKS under `{key}`"));
            None
        }
        Some(None) => {
            cx.report.add(
                r,
                Reason::SecretKeyNotFound,
                format!("{field}.key"),
                format!("{what} {name} has no key `{key}`; put the client's JWKS there"),
            );
            None
        }
        Some(Some(text)) => {
            let parsed: Result<crate::credential::Jwks, _> = serde_json::from_str(&text);
            match parsed {
                Err(e) => {
                    cx.report.add(
                        r,
                        Reason::Invalid,
                        format!("{field}.key"),
                        format!(
                            "key `{key}` of {what} {name} is not a JWKS of public keys: {}",
                            crate::validate::clip(&e.to_string())
                        ),
                    );
                    None
                }
                Ok(j) => {
                    let problems = crate::validate::jwks_problems(&j);
                    if let Some((f, why)) = problems.first() {
                        let inner = f.trim_start_matches("spec.jwks.");
                        cx.report.add(
                            r,
                            Reason::Invalid,
                            format!("{field}.key"),
                            format!("{what} {name}, {inner}: {why}"),
                        );
                        return None;
                    }
                    Some(j)
                }
            }
        }
    }
}

fn is_argon2id(s: &str) -> bool {
    argon2::PasswordHash::new(s).is_ok_and(|h| h.algorithm == argon2::ARGON2ID_IDENT)
}

/// The audiences of the ApiProxies a Credential's `spec.<field>` names; missing ones are reported
/// on the Credential (the others are still granted).
fn named_audiences(
    cx: &mut Ctx<'_>,
    r: &ObjectRef,
    proxies: &HashMap<Key<'_>, ProxyState>,
    names: &[String],
    field: &str,
    what: &str,
) -> Vec<Arc<str>> {
    let ns = &*r.namespace;
    let mut out = Vec::with_capacity(names.len());
    for (i, p) in names.iter().enumerate() {
        match proxies.get(&(ns, p.as_str())) {
            Some(ProxyState::Serving(aud)) => out.push(aud.clone()),
            Some(ProxyState::Inert) => {}
            None => cx.report.add(r, Reason::ProxyNotFound, format!("spec.{field}[{i}]"), format!("ApiProxy {p} not found in namespace {ns}; create it or remove it from {what} (the others are still granted)")),
        }
    }
    out
}

/// An ApiProxy as other objects see it.
enum ProxyState {
    /// Granted under this audience.
    Serving(Arc<str>),
    /// Exists but grants nothing (retired, or its audience is held by an older proxy).
    Inert,
}

fn resolve_proxies<'a>(cx: &mut Ctx<'a>, set: &'a ResourceSet) -> HashMap<Key<'a>, ProxyState> {
    let mut valid = Vec::with_capacity(set.api_proxies.len());
    for p in &set.api_proxies {
        let r = object_ref(Kind::ApiProxy, &p.metadata);
        if cx.register(&p.metadata, &r) && cx.valid(&r, validate::api_proxy(p)) {
            valid.push((p, r));
        }
    }
    // Audiences are unique across the cluster: a proxy in another namespace must not be able to
    // obtain tokens another team's gateway accepts. The older proxy keeps it.
    valid.sort_unstable_by(|a, b| {
        age(Kind::ApiProxy, &a.0.metadata).cmp(&age(Kind::ApiProxy, &b.0.metadata))
    });
    let mut holders: HashMap<&str, &ObjectRef> = HashMap::with_capacity(valid.len());
    let mut proxies = HashMap::with_capacity(valid.len());
    let mut conflicts = Vec::new();
    for (p, r) in &valid {
        let state = if p.spec.retired {
            ProxyState::Inert
        } else if let Some(holder) = holders.get(p.audience()) {
            conflicts.push((r.clone(), format!("audience `{}` is already used by the older {holder}; set a distinct spec.audience", p.audience())));
            ProxyState::Inert
        } else {
            holders.insert(p.audience(), r);
            ProxyState::Serving(Arc::from(p.audience()))
        };
        proxies.insert(key(&p.metadata), state);
    }
    for (r, msg) in conflicts {
        cx.report
            .add(&r, Reason::AudienceConflict, "spec.audience", msg);
    }
    proxies
}

type RoleGrant = (Arc<str>, Vec<Arc<str>>);
type ScopesByProxy<'a> = HashMap<Key<'a>, Vec<Arc<str>>>;

fn resolve_roles<'a>(
    cx: &mut Ctx<'a>,
    set: &'a ResourceSet,
    proxies: &HashMap<Key<'a>, ProxyState>,
) -> (HashMap<Key<'a>, RoleGrant>, ScopesByProxy<'a>) {
    let mut roles = HashMap::with_capacity(set.roles.len());
    let mut scopes_by_proxy: HashMap<Key<'a>, Vec<Arc<str>>> = HashMap::new();
    for role in &set.roles {
        let r = object_ref(Kind::Role, &role.metadata);
        if !cx.register(&role.metadata, &r) || !cx.valid(&r, validate::role(role)) {
            continue;
        }
        let (ns, _) = key(&role.metadata);
        let scope: Arc<str> = Arc::from(role.scope());
        let mut audiences = Vec::with_capacity(role.spec.api_proxies.len());
        for (i, name) in role.spec.api_proxies.iter().enumerate() {
            match proxies.get(&(ns, name.as_str())) {
                Some(ProxyState::Serving(aud)) => {
                    audiences.push(aud.clone());
                    scopes_by_proxy.entry((ns, name.as_str())).or_default().push(scope.clone());
                }
                Some(ProxyState::Inert) => {}
                None => cx.report.add(&r, Reason::ProxyNotFound, format!("spec.apiProxies[{i}]"), format!("ApiProxy {name} not found in namespace {ns}; create it or remove it from the list (the other proxies are still granted)")),
            }
        }
        roles.insert(key(&role.metadata), (scope, audiences));
    }
    (roles, scopes_by_proxy)
}

fn accepts_certificates(policy: &Policy) -> bool {
    policy.allows_auth(ClientAuthMethod::TlsClientAuth)
        || policy.allows_auth(ClientAuthMethod::SelfSignedTlsClientAuth)
}

fn sorted_unique(mut v: Vec<Arc<str>>) -> Vec<Arc<str>> {
    v.sort_unstable();
    v.dedup();
    v
}

fn credential_client<'a>(
    cx: &mut Ctx<'a>,
    set: &ResourceSet,
    c: &'a Credential,
    policies: &HashMap<Key<'a>, Arc<Policy>>,
    invalid_policies: &HashSet<Key<'a>>,
    proxies: &HashMap<Key<'a>, ProxyState>,
    roles: &HashMap<Key<'a>, RoleGrant>,
) -> Option<Candidate<'a>> {
    let r = object_ref(Kind::Credential, &c.metadata);
    if !cx.register(&c.metadata, &r) || !cx.valid(&r, validate::credential(c)) {
        return None;
    }
    let s = &c.spec;
    let (ns, name) = key(&c.metadata);
    let status = c.status.as_ref();
    let expires_at = s
        .expires_at
        .as_deref()
        .and_then(|e| e.parse::<Timestamp>().ok());
    if s.disabled {
        cx.report.add(&r, Reason::Disabled, "spec.disabled", "the Credential is disabled and authenticates nothing; set disabled to false to re-enable it");
        return None;
    }
    if expires_at.is_some_and(|t| t <= cx.now) {
        cx.report.add(&r, Reason::Expired, "spec.expiresAt", "the Credential has expired and authenticates nothing; move expiresAt forward to re-enable it");
        return None;
    }
    let policy_name = s.policy_ref.name.as_str();
    let Some(policy) = policies.get(&(ns, policy_name)) else {
        let why = if invalid_policies.contains(&(ns, policy_name)) {
            "is not valid (see its status)"
        } else {
            "was not found"
        };
        cx.report.add(
            &r,
            Reason::PolicyNotFound,
            "spec.policyRef.name",
            format!("AuthPolicy {policy_name} {why} in namespace {ns}; fix or create it"),
        );
        return None;
    };
    if policy.management != Management::Acl {
        cx.report.add(&r, Reason::PolicyModeMismatch, "spec.policyRef.name", format!("AuthPolicy {policy_name} has management Policy: its clients are ApiProxy proxy keys, not Credentials; reference a policy with management ACL"));
        return None;
    }

    let mut audiences = named_audiences(cx, &r, proxies, &s.acl, "acl", "the ACL");
    let introspects = named_audiences(
        cx,
        &r,
        proxies,
        &s.introspects,
        "introspects",
        "introspects",
    );
    let mut scopes = Vec::with_capacity(s.roles.len());
    for (i, role) in s.roles.iter().enumerate() {
        match roles.get(&(ns, role.as_str())) {
            Some((scope, auds)) => {
                scopes.push(scope.clone());
                audiences.extend(auds.iter().cloned());
            }
            None => cx.report.add(&r, Reason::RoleNotFound, format!("spec.roles[{i}]"), format!("Role {role} not found (or not valid) in namespace {ns}; create it or remove it (the others are still granted)")),
        }
    }

    let Some(client_id) = s
        .client_id
        .clone()
        .or_else(|| status.and_then(|st| st.client_id.clone()))
    else {
        cx.report.add(&r, Reason::ClientIdPending, "spec.clientId", "no clientId yet: the operator generates one; when serving a folder of manifests, set spec.clientId");
        return None;
    };
    let binding = crate::secret::verifier_binding(
        c.metadata.uid.as_deref(),
        Kind::Credential.as_str(),
        &r.namespace,
        &r.name,
    );
    let src = SecretSource {
        binding: &binding,
        published: status
            .map(|st| st.secret_verifiers.as_slice())
            .unwrap_or_default(),
        secret_ref: s.secret_ref.as_ref(),
        generated_name: credential_secret_name(name),
        field: "spec.secretRef",
    };
    if let (Some(sa), Some(all)) = (&s.service_account, &set.service_accounts)
        && !all
            .iter()
            .any(|a| key(&a.metadata) == (ns, sa.name.as_str()))
    {
        cx.report.add(&r, Reason::ServiceAccountNotFound, "spec.serviceAccount.name", format!("ServiceAccount {} not found in namespace {ns}; create it (its pods' projected tokens authenticate this client)", sa.name));
    }
    if s.service_account.is_some() && !policy.allows_auth(ClientAuthMethod::PrivateKeyJwt) {
        cx.report.add(&r, Reason::Invalid, "spec.serviceAccount", format!("AuthPolicy {policy_name} does not accept jwt-bearer assertions, so this ServiceAccount's tokens authenticate nothing; add private_key_jwt to its clientAuthMethods"));
    }
    // A client with public keys, or bound to a ServiceAccount, under a policy that accepts
    // private_key_jwt needs no secret.
    let jwks = credential_jwks(cx, set, &r, s);
    let keyed = (jwks.is_some() || s.jwks_uri.is_some() || s.service_account.is_some())
        && policy.allows_auth(ClientAuthMethod::PrivateKeyJwt);
    // Declared keys or a ServiceAccount, and no secretRef: no secret is generated for it.
    let secretless = s.secret_ref.is_none()
        && (jwks.is_some()
            || s.jwks_ref.is_some()
            || s.jwks_uri.is_some()
            || s.service_account.is_some());
    if secretless && !keyed && s.mtls.is_none() {
        cx.report.add(&r, Reason::Invalid, "spec.policyRef", format!("this Credential proves itself with keys or its ServiceAccount and has no secret, but AuthPolicy {policy_name} does not accept private_key_jwt; add it to the policy's clientAuthMethods"));
        return None;
    }
    let verifiers = if secretless {
        Vec::new()
    } else if policy.uses_secrets() {
        match cx.verifiers(&r, src) {
            Some(v) => v,
            // A certificate-bound client of a policy that also accepts certificates can still
            // authenticate; the missing secret stays reported.
            None if s.mtls.is_some() && accepts_certificates(policy) => Vec::new(),
            None if keyed => Vec::new(),
            None => return None,
        }
    } else if keyed {
        Vec::new()
    } else if policy.allows_auth(ClientAuthMethod::PrivateKeyJwt) && s.mtls.is_none() {
        cx.report.add(&r, Reason::Invalid, "spec.jwks", format!("AuthPolicy {policy_name} accepts no client secrets; give this Credential the public keys it signs its assertions with in spec.jwks (or bind a certificate with spec.mtls)"));
        return None;
    } else if s.mtls.is_none() {
        cx.report.add(&r, Reason::Invalid, "spec.mtls", format!("AuthPolicy {policy_name} accepts only client certificates; bind this Credential to one with spec.mtls"));
        return None;
    } else {
        Vec::new()
    };
    let not_before = status
        .and_then(|st| st.not_before.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    Some(Candidate {
        age: age(Kind::Credential, &c.metadata),
        client: Arc::new(Client {
            client_id,
            owner: r,
            kind: ClientKind::Credential,
            binding: binding.into(),
            verifiers,
            policy: policy.clone(),
            audiences: sorted_unique(audiences),
            introspects: sorted_unique(introspects),
            scopes: sorted_unique(scopes),
            claims: s.claims.clone(),
            mtls: s.mtls.clone().map(Box::new),
            expires_at,
            not_before,
            limits: policy
                .limits
                .overridden_by(Limits::from_spec(s.rate_limit.as_ref(), s.quota.as_ref())),
            assertion_keys: jwks
                .iter()
                .flat_map(|j| &j.keys)
                .filter_map(|k| {
                    // validate::credential refused the object if any key is unusable.
                    let alg = validate::jwk_algorithm(k).ok()?;
                    Some(AssertionKey {
                        kid: k.kid.clone(),
                        alg,
                        jwk: k.clone(),
                    })
                })
                .collect(),
            service_account: s
                .service_account
                .as_ref()
                .map(|sa| (ns.to_string(), sa.name.clone())),
            jwks_uri: s.jwks_uri.as_deref().map(Arc::from),
        }),
    })
}

fn proxy_key_client<'a>(
    cx: &mut Ctx<'a>,
    p: &'a ApiProxy,
    policies: &HashMap<Key<'a>, Arc<Policy>>,
    proxies: &HashMap<Key<'a>, ProxyState>,
    scopes_by_proxy: &HashMap<Key<'a>, Vec<Arc<str>>>,
) -> Option<Candidate<'a>> {
    let k = key(&p.metadata);
    let policy_ref = p.spec.auth_policy_ref.as_ref()?;
    let audience = match proxies.get(&k)? {
        ProxyState::Serving(aud) => aud.clone(),
        ProxyState::Inert => return None,
    };
    let r = object_ref(Kind::ApiProxy, &p.metadata);
    let Some(policy) = policies.get(&(k.0, policy_ref.name.as_str())) else {
        cx.report.add(
            &r,
            Reason::PolicyNotFound,
            "spec.authPolicyRef.name",
            format!(
                "AuthPolicy {} not found (or not valid) in namespace {}; fix or create it",
                policy_ref.name, k.0
            ),
        );
        return None;
    };
    if policy.management != Management::Policy {
        return None; // an ACL policy's clients are Credentials; the proxy is only an audience
    }
    let status = p.status.as_ref();
    let spec_id = p
        .spec
        .proxy_key
        .as_ref()
        .and_then(|pk| pk.client_id.clone());
    let Some(client_id) = spec_id.or_else(|| status.and_then(|st| st.client_id.clone())) else {
        cx.report.add(&r, Reason::ClientIdPending, "spec.proxyKey.clientId", "no proxy key yet: the operator generates one; when serving a folder of manifests, set spec.proxyKey.clientId");
        return None;
    };
    let binding = crate::secret::verifier_binding(
        p.metadata.uid.as_deref(),
        Kind::ApiProxy.as_str(),
        &r.namespace,
        &r.name,
    );
    let src = SecretSource {
        binding: &binding,
        published: status
            .map(|st| st.secret_verifiers.as_slice())
            .unwrap_or_default(),
        secret_ref: p
            .spec
            .proxy_key
            .as_ref()
            .and_then(|pk| pk.secret_ref.as_ref()),
        generated_name: proxy_key_secret_name(k.1),
        field: "spec.proxyKey.secretRef",
    };
    // With a proxy key, the password and refresh_token grants send client_secret `-` (the
    // gateway product's convention): users authenticate, the proxy key only names the API. So
    // only client_credentials needs the proxy key's secret.
    let needs_secret = policy.allows_grant(GrantType::ClientCredentials);
    let verifiers = if needs_secret {
        cx.verifiers(&r, src)?
    } else {
        Vec::new()
    };
    let scopes = scopes_by_proxy.get(&k).cloned().unwrap_or_default();
    Some(Candidate {
        age: age(Kind::ApiProxy, &p.metadata),
        client: Arc::new(Client {
            client_id,
            owner: r,
            kind: ClientKind::ProxyKey,
            binding: binding.into(),
            verifiers,
            policy: policy.clone(),
            audiences: vec![audience.clone()],
            // The proxy key is the API's own identity: its gateway introspects tokens for it.
            introspects: vec![audience],
            scopes: sorted_unique(scopes),
            claims: Default::default(),
            mtls: None,
            expires_at: None,
            not_before: None,
            limits: policy.limits,
            assertion_keys: Vec::new(),
            service_account: None,
            jwks_uri: None,
        }),
    })
}
