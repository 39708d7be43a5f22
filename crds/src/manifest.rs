//! Reading manifests: multi-document YAML (what `kubectl apply -f` takes) into typed resources.
//!
//! Tessera kinds and `v1/Secret` are read; other Kubernetes kinds are skipped (a folder of
//! manifests may hold a Deployment too) but reported; an unknown kind or version in the
//! `tessera.dev` group is an error, since it is almost certainly a typo.

// Errors are rare (a bad file) and carry the file, object and field users need; their size does
// not matter on this path.
#![allow(clippy::result_large_err)]

use crate::{ApiProxy, AuthPolicy, Credential, Role};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// API group of Tessera's resources.
pub const GROUP: &str = "tessera.dev";
/// `apiVersion` of Tessera's resources.
pub const API_VERSION: &str = "tessera.dev/v1alpha1";
/// Namespace of an object whose manifest names none (as `kubectl apply` would use).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Largest manifest file read.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// One typed object from a manifest.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    /// An ApiProxy.
    ApiProxy(ApiProxy),
    /// An AuthPolicy.
    AuthPolicy(AuthPolicy),
    /// A Credential.
    Credential(Credential),
    /// A Role.
    Role(Role),
    /// A Secret (client secrets, user pools, key sets, CA bundles).
    Secret(Secret),
    /// A ConfigMap (CA bundles).
    ConfigMap(ConfigMap),
}

/// Why a manifest could not be read. Every variant names the source and, where known, the
/// object and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The file is larger than [`MAX_MANIFEST_BYTES`].
    #[error(
        "{source_name}: {size} bytes is more than the {max} a manifest may have; split the file"
    )]
    TooLarge {
        /// File name.
        source_name: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not YAML.
    #[error("{source_name}: not valid YAML: {message}")]
    Yaml {
        /// File name.
        source_name: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A document is not a Kubernetes object.
    #[error("{source_name}: document {index}: {message}")]
    NotAnObject {
        /// File name.
        source_name: String,
        /// 1-based document number in the file.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A tessera.dev kind or version that does not exist.
    #[error(
        "{source_name}: document {index}: unknown {what} `{value}` in group tessera.dev; use apiVersion tessera.dev/v1alpha1 with kind ApiProxy, AuthPolicy, Credential or Role"
    )]
    UnknownKind {
        /// File name.
        source_name: String,
        /// 1-based document number.
        index: usize,
        /// `kind` or `apiVersion`.
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// An object whose fields do not fit its kind.
    #[error("{source_name}: {kind} {namespace}/{name}: field `{field}`: {message}")]
    Field {
        /// File name.
        source_name: String,
        /// Kind of the object.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Path of the offending field, e.g. `spec.accessToken.ttl`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What a manifest yielded.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    /// The objects read.
    pub resources: Vec<Resource>,
    /// `apiVersion/kind` of documents skipped because Tessera does not use them.
    pub skipped: Vec<String>,
}

/// Parses every document of a YAML manifest. `source_name` (a file name) goes into errors.
pub fn parse(text: &str, source_name: &str) -> Result<Parsed, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            source_name: source_name.to_owned(),
            size: text.len(),
            max: MAX_MANIFEST_BYTES,
        });
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, parse_options())
        .map_err(|e| ManifestError::Yaml {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
    let mut parsed = Parsed::default();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        match parse_object(doc, source_name, i + 1)? {
            Outcome::Resource(r) => parsed.resources.push(r),
            Outcome::Skipped(what) => parsed.skipped.push(what),
        }
    }
    Ok(parsed)
}

#[allow(clippy::large_enum_variant)]
/// Parser limits sized to [`MAX_MANIFEST_BYTES`]: the default budget stops at 1,024 documents per
/// file, which a folder of generated manifests passes easily; the byte limit already bounds the
/// work, so the budget only guards against alias and nesting bombs.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = MAX_MANIFEST_BYTES / 64;
    budget.max_nodes = MAX_MANIFEST_BYTES;
    budget.max_events = 2 * MAX_MANIFEST_BYTES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // No source snippets in errors: the lines around a syntax error may be a Secret's value, and
    // errors go to logs and /readyz. Line and column still point at the spot.
    options.with_snippet = false;
    // Manifests rarely use anchors; a few hundred bytes of nested aliases must not cost seconds.
    options.alias_limits.max_total_replayed_events = 10_000;
    options.alias_limits.max_alias_expansions_per_anchor = 100;
    options
}

#[allow(clippy::large_enum_variant)]
enum Outcome {
    Resource(Resource),
    Skipped(String),
}

fn parse_object(doc: Value, source_name: &str, index: usize) -> Result<Outcome, ManifestError> {
    let not_object = |message: &str| ManifestError::NotAnObject {
        source_name: source_name.to_owned(),
        index,
        message: message.to_owned(),
    };
    let obj = doc
        .as_object()
        .ok_or_else(|| not_object("expected a mapping with apiVersion, kind and metadata"))?;
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            not_object("missing `apiVersion`; add e.g. `apiVersion: tessera.dev/v1alpha1`")
        })?
        .to_owned();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| not_object("missing `kind`; add e.g. `kind: Credential`"))?
        .to_owned();
    let unknown = |what, value: &str| ManifestError::UnknownKind {
        source_name: source_name.to_owned(),
        index,
        what,
        value: value.to_owned(),
    };
    if api_version.split('/').next() == Some(GROUP) {
        if api_version != API_VERSION {
            return Err(unknown("apiVersion", &api_version));
        }
        let typed =
            |r: fn(Value) -> Result<Resource, (String, String)>| -> Result<Outcome, ManifestError> {
                let (namespace, name) = ident(&doc);
                r(doc.clone())
                    .map(Outcome::Resource)
                    .map_err(|(field, message)| ManifestError::Field {
                        source_name: source_name.to_owned(),
                        kind: kind.clone(),
                        namespace,
                        name,
                        field,
                        message,
                    })
            };
        return match kind.as_str() {
            "ApiProxy" => typed(|v| typed_object(v).map(Resource::ApiProxy)),
            "AuthPolicy" => typed(|v| typed_object(v).map(Resource::AuthPolicy)),
            "Credential" => typed(|v| typed_object(v).map(Resource::Credential)),
            "Role" => typed(|v| typed_object(v).map(Resource::Role)),
            other => Err(unknown("kind", other)),
        };
    }
    if api_version == "v1" && kind == "Secret" {
        let (namespace, name) = ident(&doc);
        // A deserializer's message may quote the value, and a Secret's values are secrets: name the
        // field and the fix only.
        return typed_object(doc).map(|s| Outcome::Resource(Resource::Secret(s))).map_err(|(field, _)| ManifestError::Field {
            source_name: source_name.to_owned(),
            kind,
            namespace,
            name,
            field,
            message: "this value does not fit the field (values under `data` are base64, under `stringData` plain text; keys are letters, digits, `-`, `_`, `.`)".into(),
        });
    }
    if api_version == "v1" && kind == "ConfigMap" {
        let (namespace, name) = ident(&doc);
        return typed_object(doc)
            .map(|c| Outcome::Resource(Resource::ConfigMap(c)))
            .map_err(|(field, message)| ManifestError::Field {
                source_name: source_name.to_owned(),
                kind,
                namespace,
                name,
                field,
                message,
            });
    }
    Ok(Outcome::Skipped(format!("{api_version}/{kind}")))
}

/// Namespace and name as written, for error messages.
fn ident(doc: &Value) -> (String, String) {
    let meta = doc.get("metadata");
    let get = |k| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    (
        get("namespace").unwrap_or(DEFAULT_NAMESPACE).to_owned(),
        get("name").unwrap_or("<no name>").to_owned(),
    )
}

/// Deserializes with the path of the failing field, and fills in the default namespace.
fn typed_object<T: DeserializeOwned + kube::Resource<DynamicType: Default>>(
    doc: Value,
) -> Result<T, (String, String)> {
    let mut obj: T = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." {
                "(root)".to_owned()
            } else {
                path
            },
            // serde's message quotes the offending value, which in a Secret is secret.
            if T::kind(&Default::default()) == "Secret" {
                "a missing field, or a value of the wrong type or encoding (the value is not shown: it may be secret)".to_owned()
            } else {
                e.into_inner().to_string()
            },
        )
    })?;
    let meta = obj.meta_mut();
    if meta.namespace.is_none() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: Role
metadata: {name: reader, namespace: shop}
spec: {apiProxies: [orders]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {client_secret: demo}
---
"#;

    #[test]
    fn reads_tessera_kinds_and_secrets_and_skips_the_rest() {
        let p = parse(GOOD, "good.yaml").expect("parses");
        assert_eq!(p.resources.len(), 2);
        assert_eq!(p.skipped, vec!["apps/v1/Deployment".to_owned()]);
        let Resource::Secret(s) = &p.resources[1] else {
            panic!("secret expected")
        };
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn a_malformed_secret_is_reported_without_its_values() {
        for y in [
            "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\ndata: {keyset.json: \"MIIEvgIBADANBgkq!!not-base64\"}\n",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {keyset.json: {pkcs8: MIIEvgIBADANBgkq}}\n",
        ] {
            let msg = parse(y, "keys.yaml").expect_err("malformed").to_string();
            assert!(msg.contains("Secret default/k"), "{msg}");
            assert!(!msg.contains("MIIEvgIBADANBgkq"), "the value leaked: {msg}");
        }
    }

    #[test]
    fn unknown_field_names_object_and_field() {
        let y = "apiVersion: tessera.dev/v1alpha1\nkind: ApiProxy\nmetadata: {name: orders, namespace: shop}\nspec: {basePath: /o, audiance: x}\n";
        let err = parse(y, "f.yaml").expect_err("unknown field");
        let msg = err.to_string();
        assert!(
            msg.contains("f.yaml: ApiProxy shop/orders: field `spec.audiance`"),
            "{msg}"
        );
        assert!(msg.contains("unknown field `audiance`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let y = "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: p}\nspec: {accessToken: {immortal: sometimes}}\n";
        let msg = parse(y, "f.yaml").expect_err("wrong type").to_string();
        assert!(msg.contains("field `spec.accessToken.immortal`"), "{msg}");
    }

    #[test]
    fn typo_in_tessera_kind_or_version_is_an_error() {
        let y = "apiVersion: tessera.dev/v1alpha1\nkind: Credentail\nmetadata: {name: c}\n";
        assert!(matches!(
            parse(y, "f").expect_err("kind"),
            ManifestError::UnknownKind { what: "kind", .. }
        ));
        let y = "apiVersion: tessera.dev/v1\nkind: Credential\nmetadata: {name: c}\n";
        assert!(matches!(
            parse(y, "f").expect_err("ver"),
            ManifestError::UnknownKind {
                what: "apiVersion",
                ..
            }
        ));
    }

    #[test]
    fn files_with_thousands_of_documents_parse() {
        let doc = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {client_secret: x}\n---\n";
        let p = parse(&doc.repeat(3000), "big.yaml").expect("3000 documents");
        assert_eq!(p.resources.len(), 3000);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        assert!(parse(bomb, "bomb.yaml").is_err());
    }

    #[test]
    fn errors_never_echo_a_secret_value() {
        let syntax = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n  client_secret: \"topsecret-value\n  other: [unclosed\n";
        let msg = parse(syntax, "s.yaml").expect_err("syntax").to_string();
        assert!(!msg.contains("topsecret"), "{msg}");
        assert!(msg.contains("line"), "still says where: {msg}");
        let typed = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {client_secret: 'topsecret-not-base64!'}\n";
        let msg = parse(typed, "s.yaml").expect_err("not base64").to_string();
        assert!(
            !msg.contains("topsecret") && msg.contains("field `data.client_secret`"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_documents() {
        assert!(matches!(
            parse("a: [1, 2", "f").expect_err("yaml"),
            ManifestError::Yaml { .. }
        ));
        assert!(matches!(
            parse("- 1\n- 2\n", "f").expect_err("list"),
            ManifestError::NotAnObject { .. }
        ));
        assert!(matches!(
            parse("kind: Role\n", "f").expect_err("no apiVersion"),
            ManifestError::NotAnObject { .. }
        ));
        let dup = "apiVersion: v1\nkind: Secret\nkind: Secret\nmetadata: {name: s}\n";
        assert!(matches!(
            parse(dup, "f").expect_err("duplicate key"),
            ManifestError::Yaml { .. }
        ));
        let big = "#".repeat(MAX_MANIFEST_BYTES + 1);
        assert!(matches!(
            parse(&big, "f").expect_err("size"),
            ManifestError::TooLarge { .. }
        ));
    }
}
