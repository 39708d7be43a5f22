//! The CRDs on a real API server: they establish, every example is accepted by a server-side
//! apply, and every CEL rule and a schema constraint of each kind rejects a bad manifest with a
//! message that names the field. The server is the test control plane (or the cluster
//! `TESSERA_E2E_KUBECONFIG` names).

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use std::path::PathBuf;
use tessera_e2e::{Cluster, MANAGER};

fn api_for(cluster: &Cluster, ns: &str, obj: &Value) -> (Api<DynamicObject>, String) {
    let (group, version) = obj["apiVersion"]
        .as_str()
        .expect("apiVersion")
        .rsplit_once('/')
        .map_or(
            ("", obj["apiVersion"].as_str().unwrap_or("v1")),
            |(g, v)| (g, v),
        );
    let kind = obj["kind"].as_str().expect("kind");
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk(&gvk);
    let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
    (Api::namespaced_with(cluster.admin.clone(), ns, &ar), name)
}

/// Server-side apply, dry run; the API server's answer.
async fn dry_apply(cluster: &Cluster, ns: &str, obj: &Value) -> Result<(), kube::core::Status> {
    let (api, name) = api_for(cluster, ns, obj);
    let mut obj = obj.clone();
    obj["metadata"]["namespace"] = Value::from(ns);
    let dynamic: DynamicObject = serde_json::from_value(obj).expect("object");
    let pp = PatchParams {
        dry_run: true,
        ..PatchParams::apply(MANAGER).force()
    };
    match api.patch(&name, &pp, &Patch::Apply(&dynamic)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(*e),
        Err(e) => panic!("applying {name}: {e}"),
    }
}

#[tokio::test]
async fn every_example_is_accepted_by_a_server_side_apply() {
    let cluster = Cluster::connect("crd-ex").await;
    let ns = cluster.namespace("examples").await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut applied = 0;
    let mut refused = Vec::new();
    for dir in std::fs::read_dir(&root).expect("examples").flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for doc in text.split("\n---") {
                let Ok(obj) = serde_saphyr::from_str::<Value>(doc) else {
                    continue;
                };
                if obj.is_null() || obj["kind"].is_null() {
                    continue;
                }
                match dry_apply(&cluster, &ns, &obj).await {
                    Ok(()) => applied += 1,
                    Err(e) => refused.push(format!("{}: {}", path.display(), e.message)),
                }
            }
        }
    }
    assert!(
        refused.is_empty(),
        "the API server refused examples:\n{}",
        refused.join("\n")
    );
    assert!(applied >= 19, "only {applied} example objects found");
    eprintln!("{applied} example objects accepted by a server-side apply (dry run)");
    cluster.cleanup().await;
}

/// One bad manifest per CEL rule of the CRDs and per kind of schema constraint, with the field
/// the API server's message must name.
const BAD: &[(&str, &str, &str)] = &[
    // CEL rules (x-kubernetes-validations).
    (
        "AuthPolicy",
        "{accessToken: {immortal: true, ttl: 1h}}",
        "accessToken",
    ),
    (
        "AuthPolicy",
        "{accessToken: {immortal: true}, refresh: {enabled: true}, grantTypes: [client_credentials, refresh_token]}",
        "refresh",
    ),
    (
        "AuthPolicy",
        "{accessToken: {ttl: 2h}, refresh: {enabled: true, ttl: 1h}, grantTypes: [client_credentials, refresh_token]}",
        "refresh",
    ),
    (
        "AuthPolicy",
        "{grantTypes: [client_credentials, refresh_token]}",
        "grantTypes",
    ),
    (
        "AuthPolicy",
        "{refresh: {enabled: true, rotate: false, maxRefreshes: 3}, grantTypes: [client_credentials, refresh_token]}",
        "maxRefreshes",
    ),
    ("AuthPolicy", "{grantTypes: [password]}", "userPool"),
    (
        "AuthPolicy",
        "{clientCa: {secretRef: {name: a}, configMapRef: {name: b}}}",
        "clientCa",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, claims: {sub: someone-else}}",
        "claims",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, mtls: {san: {dns: a.example, uri: 'https://a.example'}}}",
        "san",
    ),
    ("Credential", "{policyRef: {name: p}, mtls: {}}", "mtls"),
    (
        "Credential",
        "{policyRef: {name: p}, jwksRef: {secretRef: {name: a}, configMapRef: {name: b}}}",
        "jwksRef",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, jwksUri: 'http://keys.example.com/jwks'}",
        "jwksUri",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, jwksUri: 'https://k.example.com/j', jwksRef: {secretRef: {name: a}}}",
        "jwksUri",
    ),
    // Ranges of the limits and the key types of a JWKS.
    (
        "AuthPolicy",
        "{rateLimit: {requestsPerSecond: 0}}",
        "requestsPerSecond",
    ),
    ("AuthPolicy", "{quota: {tokensPerDay: 0}}", "tokensPerDay"),
    (
        "Credential",
        "{policyRef: {name: p}, jwks: {keys: [{kty: oct, x: AAAA}]}}",
        "kty",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, secretRef: {name: s}, rotation: {interval: 24h}}",
        "rotation",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, rotation: {interval: 1h, gracePeriod: 2h}}",
        "rotation",
    ),
    // Schema constraints: enum, pattern, maxLength, minimum/maximum, maxItems, required, type.
    ("AuthPolicy", "{tokenType: Bearer}", "spec.tokenType"),
    ("AuthPolicy", "{management: Manual}", "spec.management"),
    (
        "AuthPolicy",
        "{signingAlgorithm: HS256}",
        "spec.signingAlgorithm",
    ),
    (
        "AuthPolicy",
        "{accessToken: {ttl: 'one hour'}}",
        "spec.accessToken.ttl",
    ),
    (
        "AuthPolicy",
        "{refresh: {enabled: true, maxRefreshes: 0}, grantTypes: [client_credentials, refresh_token]}",
        "spec.refresh.maxRefreshes",
    ),
    (
        "AuthPolicy",
        "{refresh: {enabled: true, maxRefreshes: 100001}, grantTypes: [client_credentials, refresh_token]}",
        "spec.refresh.maxRefreshes",
    ),
    ("AuthPolicy", "{grantTypes: [implicit]}", "spec.grantTypes"),
    (
        "Credential",
        "{policyRef: {name: p}, clientId: 'has space'}",
        "spec.clientId",
    ),
    (
        "Credential",
        "{policyRef: {name: 'Not_A_Name'}}",
        "spec.policyRef.name",
    ),
    ("Credential", "{policyRef: {}}", "spec.policyRef.name"),
    (
        "Credential",
        "{policyRef: {name: p}, mtls: {thumbprintSha256: short}}",
        "spec.mtls.thumbprintSha256",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, deletionPolicy: Keep}",
        "spec.deletionPolicy",
    ),
    (
        "Credential",
        "{policyRef: {name: p}, disabled: 'yes'}",
        "spec.disabled",
    ),
    ("ApiProxy", "{basePath: [not, a, string]}", "spec.basePath"),
    ("Role", "{apiProxies: ['Bad Name']}", "spec.apiProxies"),
];

#[tokio::test]
async fn every_cel_rule_and_schema_constraint_rejects_a_bad_manifest_naming_the_field() {
    let cluster = Cluster::connect("crd-bad").await;
    let ns = cluster.namespace("bad").await;
    // A long list item and a long value: the maxItems and maxLength constraints.
    let many: Vec<String> = (0..257).map(|i| format!("proxy-{i}")).collect();
    let long_id = "x".repeat(257);
    let extra = [
        (
            "Credential".to_owned(),
            format!("{{policyRef: {{name: p}}, acl: [{}]}}", many.join(", ")),
            "spec.acl",
        ),
        (
            "Credential".to_owned(),
            format!("{{policyRef: {{name: p}}, clientId: {long_id}}}"),
            "spec.clientId",
        ),
    ];
    let cases = BAD
        .iter()
        .map(|(k, spec, field)| ((*k).to_owned(), (*spec).to_owned(), *field))
        .chain(extra);
    let mut wrong = Vec::new();
    let mut n = 0;
    for (kind, spec, field) in cases {
        n += 1;
        let yaml = format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: bad-{n}}}\nspec: {spec}\n"
        );
        let obj: Value = serde_saphyr::from_str(&yaml).expect("yaml");
        match dry_apply(&cluster, &ns, &obj).await {
            Ok(()) => wrong.push(format!("{kind} {spec}: accepted")),
            // 422 Invalid; a wrong type fails earlier in server-side apply ("failed to create
            // typed patch object", 500 on kube-apiserver 1.36), naming the field all the same.
            Err(e) if matches!(e.code, 422 | 500) && e.message.contains(field) => {}
            Err(e) => wrong.push(format!(
                "{kind} {spec}: {} {}: does not name `{field}`",
                e.code, e.message
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {n} cases:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    eprintln!("{n} bad manifests refused by the API server, each naming its field");
    cluster.cleanup().await;
}
