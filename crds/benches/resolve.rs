//! Resolving a large cluster: 100,000 Credentials, 300 ApiProxies, 300 Roles, 4 AuthPolicies.
//!
//! `cargo bench -p tessera-crds --bench resolve`. Two shapes: verifiers published in status (what
//! the in-cluster source sees) and secrets in referenced Secrets (the dir source, which hashes
//! each one). Target: under 1 s for 100,000 Credentials.

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tessera_crds::api_proxy::ApiProxySpec;
use tessera_crds::auth_policy::AuthPolicySpec;
use tessera_crds::common::{LocalRef, PublishedVerifier, SecretKeyRef};
use tessera_crds::credential::{CredentialSpec, CredentialStatus};
use tessera_crds::model::{ResourceSet, resolve};
use tessera_crds::role::RoleSpec;
use tessera_crds::secret::VerifierKey;
use tessera_crds::{ApiProxy, AuthPolicy, Credential, Role};

const CREDENTIALS: usize = 100_000;
const PROXIES: usize = 300;
const ROLES: usize = 300;

fn meta(name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some("bench".into()),
        ..Default::default()
    }
}

fn policy_spec(yaml: &str) -> AuthPolicySpec {
    serde_saphyr::from_str(yaml).expect("policy spec")
}

fn cluster(secrets_in_status: bool) -> ResourceSet {
    let key = VerifierKey::new(vec![5u8; 32]);
    let mut set = ResourceSet::default();
    for (i, spec) in [
        "{}",
        "{signingAlgorithm: ES256}",
        "{tokenType: OAuth2}",
        "{signingAlgorithm: EdDSA}",
    ]
    .iter()
    .enumerate()
    {
        set.auth_policies.push(Arc::new(AuthPolicy {
            metadata: meta(format!("policy-{i}")),
            spec: policy_spec(spec),
            status: None,
        }));
    }
    for i in 0..PROXIES {
        let spec = ApiProxySpec {
            audience: Some(format!("https://api.example.com/p{i}")),
            base_path: format!("/p{i}"),
            auth_policy_ref: None,
            proxy_key: None,
            retired: i % 50 == 49,
        };
        set.api_proxies.push(Arc::new(ApiProxy {
            metadata: meta(format!("proxy-{i}")),
            spec,
            status: None,
        }));
    }
    for i in 0..ROLES {
        let spec = RoleSpec {
            scope: Some(format!("scope:{i}")),
            api_proxies: (0..3)
                .map(|k| format!("proxy-{}", (i * 7 + k) % PROXIES))
                .collect(),
            description: None,
        };
        set.roles.push(Arc::new(Role {
            metadata: meta(format!("role-{i}")),
            spec,
            status: None,
        }));
    }
    for i in 0..CREDENTIALS {
        let name = format!("cred-{i}");
        let secret = format!("s3cret-{i:064}");
        let (secret_ref, status) = if secrets_in_status {
            let published = PublishedVerifier {
                verifier: key
                    .verifier(
                        &tessera_crds::secret::verifier_binding(
                            None,
                            "Credential",
                            "default",
                            &name,
                        ),
                        secret.as_bytes(),
                    )
                    .to_published(),
                not_after: None,
            };
            (
                None,
                Some(CredentialStatus {
                    client_id: Some(format!("client-{i}")),
                    secret_verifiers: vec![published],
                    ..Default::default()
                }),
            )
        } else {
            let secret_name = format!("{name}-secret");
            let data = BTreeMap::from([("client_secret".to_owned(), secret)]);
            set.secrets.push(Arc::new(Secret {
                metadata: meta(secret_name.clone()),
                string_data: Some(data),
                ..Default::default()
            }));
            (
                Some(SecretKeyRef {
                    name: secret_name,
                    key: None,
                }),
                None,
            )
        };
        let spec = CredentialSpec {
            client_id: (!secrets_in_status).then(|| format!("client-{i}")),
            secret_ref,
            rotation: None,
            rate_limit: None,
            quota: None,
            jwks: None,
            service_account: None,
            jwks_ref: None,
            jwks_uri: None,
            policy_ref: LocalRef {
                name: format!("policy-{}", i % 4),
            },
            acl: (0..2)
                .map(|k| format!("proxy-{}", (i + k * 13) % PROXIES))
                .collect(),
            introspects: Vec::new(),
            roles: (0..2)
                .map(|k| format!("role-{}", (i * 3 + k) % ROLES))
                .collect(),
            claims: BTreeMap::from([("tenant".to_owned(), format!("t{}", i % 100))]),
            mtls: None,
            disabled: false,
            expires_at: None,
            deletion_policy: Default::default(),
            secret_template: None,
        };
        set.credentials.push(Arc::new(Credential {
            metadata: meta(name),
            spec,
            status,
        }));
    }
    set
}

fn bench(c: &mut Criterion) {
    let key = VerifierKey::new(vec![5u8; 32]);
    let now = jiff::Timestamp::now();
    let mut g = c.benchmark_group("resolve_100k_credentials");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (label, in_status) in [("verifiers_in_status", true), ("secrets_in_secrets", false)] {
        let set = cluster(in_status);
        let snap = resolve(&set, &key, now);
        assert_eq!(
            snap.counts().clients,
            CREDENTIALS,
            "every credential resolves"
        );
        assert_eq!(snap.report().with_problems().len(), 0);
        g.bench_function(label, |b| {
            b.iter(|| black_box(resolve(black_box(&set), &key, now)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
