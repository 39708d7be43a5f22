//! The committed `crds/*.yaml` equal what the types generate, are structural apiextensions/v1
//! CRDs with what `kubectl` users rely on, and their CEL rules agree with the Rust validation.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use std::path::Path;
use tessera_crds::{AuthPolicy, Credential, crd, manifest, validate};

/// The formats kube-apiserver's OpenAPI validation knows (k8s.io/kube-openapi `strfmt`).
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "date",
    "date-time",
    "duration",
    "password",
    "uuid",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uri",
];

const REGENERATE: &str = "cargo run -p tessera-operator -- crd --out crds/";

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let all = crd::all();
    assert_eq!(all.len(), 4);
    for (file, generated) in all {
        let want = crd::to_yaml(&generated).expect("serializes");
        let path = dir.join(file);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is missing or out of date with the Rust types; regenerate it with:\n    {REGENERATE}",
            path.display()
        );
        // And it reads back as a CustomResourceDefinition equal to the generated one.
        let parsed: CustomResourceDefinition =
            serde_saphyr::from_str(&have).expect("valid CRD YAML");
        assert_eq!(parsed, generated, "{file} does not round-trip");
    }
}

fn walk<'a>(path: String, s: &'a JSONSchemaProps, out: &mut Vec<(String, &'a JSONSchemaProps)>) {
    out.push((path.clone(), s));
    for (k, child) in s.properties.iter().flatten() {
        walk(format!("{path}.{k}"), child, out);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = &s.additional_properties {
        walk(format!("{path}.*"), child, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(child)) = &s.items {
        walk(format!("{path}[]"), child, out);
    }
}

#[test]
fn crds_are_structural_and_complete() {
    for (file, c) in crd::all() {
        assert_eq!(c.spec.group, "tessera.dev");
        assert_eq!(c.spec.scope, "Namespaced", "{file}");
        assert_eq!(
            c.spec.names.categories.as_deref(),
            Some(&["tessera".to_owned()][..]),
            "{file}: kubectl get tessera"
        );
        assert!(
            c.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{file}: short name"
        );
        assert_eq!(c.spec.versions.len(), 1);
        let v = &c.spec.versions[0];
        assert_eq!(
            (v.name.as_str(), v.served, v.storage),
            ("v1alpha1", true, true)
        );
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{file}: status subresource"
        );
        let cols = v
            .additional_printer_columns
            .as_ref()
            .expect("printer columns");
        assert!(
            cols.iter().any(|c| c.name == "Ready"),
            "{file}: READY column"
        );
        assert!(cols.iter().any(|c| c.name == "Age"), "{file}: AGE column");
        let root = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        let mut nodes = Vec::new();
        walk(String::new(), root, &mut nodes);
        for (path, node) in &nodes {
            // Structural: every node has a type, and no object is closed with properties.
            assert!(
                node.type_.is_some() || node.x_kubernetes_int_or_string == Some(true),
                "{file}{path}: no type"
            );
            assert!(
                !(node.properties.is_some() && node.additional_properties.is_some()),
                "{file}{path}: properties with additionalProperties is not structural"
            );
            // Only formats the API server knows: any other (schemars' `uint32`, say) is
            // accepted with a warning on every apply (issue 20).
            if let Some(f) = &node.format {
                assert!(
                    KNOWN_FORMATS.contains(&f.as_str()),
                    "{file}{path}: format {f:?} is unknown to the API server"
                );
            }
            // `kubectl explain` shows a description for every field under spec.
            if path.starts_with(".spec.") && !path.ends_with("[]") && !path.ends_with(".*") {
                assert!(
                    node.description.as_ref().is_some_and(|d| !d.is_empty()),
                    "{file}{path}: no description"
                );
            }
        }
        let status = nodes
            .iter()
            .find(|(p, _)| p == ".status")
            .map(|n| n.1)
            .expect("status schema");
        let props = status.properties.as_ref().expect("status fields");
        assert!(
            props.contains_key("observedGeneration") && props.contains_key("conditions"),
            "{file}"
        );
    }
}

#[test]
fn printer_columns_for_credentials() {
    let c = crd::all()
        .into_iter()
        .find(|(f, _)| f.starts_with("credentials"))
        .expect("credential CRD")
        .1;
    let cols: Vec<String> = c.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(cols, ["CLIENT ID", "POLICY", "READY", "REASON", "AGE"]);
}

fn policy(spec: &str) -> AuthPolicy {
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: p}}\nspec: {spec}\n"
    );
    match manifest::parse(&y, "t")
        .expect("parses")
        .resources
        .remove(0)
    {
        manifest::Resource::AuthPolicy(p) => p,
        _ => unreachable!(),
    }
}

fn credential(spec: &str) -> Credential {
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: c}}\nspec: {spec}\n"
    );
    match manifest::parse(&y, "t")
        .expect("parses")
        .resources
        .remove(0)
    {
        manifest::Resource::Credential(c) => c,
        _ => unreachable!(),
    }
}

/// The API server (CEL) and the dir source (Rust) must accept and refuse the same policies.
#[test]
fn cel_rules_agree_with_rust_validation_for_policies() {
    let cases = [
        ("{}", true),
        (
            "{grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, ttl: 2h}, accessToken: {ttl: 30m}}",
            true,
        ),
        (
            "{grantTypes: [client_credentials, refresh_token], refresh: {enabled: true}}",
            true,
        ),
        ("{accessToken: {immortal: true}}", true),
        ("{grantTypes: [password], userPool: {name: u}}", true),
        ("{accessToken: {immortal: true, ttl: 1h}}", false),
        (
            "{accessToken: {immortal: true}, grantTypes: [client_credentials, refresh_token], refresh: {enabled: true}}",
            false,
        ),
        (
            "{accessToken: {ttl: 2h}, grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, ttl: 1h}}",
            false,
        ),
        (
            "{accessToken: {ttl: 48h}, grantTypes: [client_credentials, refresh_token], refresh: {enabled: true}}",
            false,
        ),
        (
            "{accessToken: {ttl: 1h30m}, grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, ttl: 1h30m}}",
            false,
        ),
        ("{grantTypes: [client_credentials, refresh_token]}", false),
        ("{refresh: {enabled: true}}", false),
        ("{grantTypes: [password]}", false),
        (
            "{grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, rotate: false, maxRefreshes: 3}}",
            false,
        ),
        (
            "{grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, maxRefreshes: 3}}",
            true,
        ),
    ];
    for (spec, ok) in cases {
        let p = policy(spec);
        let cel = kube::core::cel::validate_cel(&p);
        let rust = validate::auth_policy(&p);
        assert_eq!(cel.is_ok(), ok, "CEL on {spec}: {cel:?}");
        assert_eq!(rust.is_empty(), ok, "Rust on {spec}: {rust:?}");
    }
}

#[test]
fn cel_rules_agree_with_rust_validation_for_credentials() {
    let cases = [
        ("{policyRef: {name: p}}", true),
        (
            "{policyRef: {name: p}, claims: {tenant: acme}, mtls: {subjectDn: CN=x, san: {dns: a.example}}}",
            true,
        ),
        (
            "{policyRef: {name: p}, rotation: {interval: 24h, gracePeriod: 2h}}",
            true,
        ),
        ("{policyRef: {name: p}, claims: {sub: root}}", false),
        ("{policyRef: {name: p}, claims: {client_id: other}}", false),
        (
            "{policyRef: {name: p}, secretRef: {name: s}, rotation: {interval: 24h}}",
            false,
        ),
        (
            "{policyRef: {name: p}, rotation: {interval: 1h, gracePeriod: 1h}}",
            false,
        ),
        ("{policyRef: {name: p}, rotation: {interval: 30m}}", false),
        ("{policyRef: {name: p}, mtls: {}}", false),
        (
            "{policyRef: {name: p}, mtls: {san: {dns: a, email: b@c}}}",
            false,
        ),
    ];
    for (spec, ok) in cases {
        let c = credential(spec);
        let cel = kube::core::cel::validate_cel(&c);
        let rust = validate::credential(&c);
        assert_eq!(cel.is_ok(), ok, "CEL on {spec}: {cel:?}");
        assert_eq!(rust.is_empty(), ok, "Rust on {spec}: {rust:?}");
    }
}

#[test]
fn client_id_is_immutable_once_set() {
    let old = credential("{clientId: a, policyRef: {name: p}}");
    let changed = credential("{clientId: b, policyRef: {name: p}}");
    let removed = credential("{policyRef: {name: p}}");
    let unset = credential("{policyRef: {name: p}}");
    assert!(kube::core::cel::validate_cel_update(&old, &old).is_ok());
    assert!(kube::core::cel::validate_cel_update(&changed, &old).is_err());
    assert!(kube::core::cel::validate_cel_update(&removed, &old).is_err());
    assert!(
        kube::core::cel::validate_cel_update(&old, &unset).is_ok(),
        "setting it the first time is allowed"
    );
}

#[test]
fn the_helm_chart_ships_the_same_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = |dir: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        v.sort();
        v
    };
    let chart = root.join("../charts/tessera/crds");
    assert_eq!(
        names(root),
        names(&chart),
        "charts/tessera/crds must hold exactly crds/*.yaml: cp crds/*.yaml charts/tessera/crds/"
    );
    for n in names(root) {
        assert_eq!(
            std::fs::read_to_string(root.join(&n)).expect("read"),
            std::fs::read_to_string(chart.join(&n)).expect("read"),
            "charts/tessera/crds/{n} differs from crds/{n}: cp crds/*.yaml charts/tessera/crds/"
        );
    }
}
