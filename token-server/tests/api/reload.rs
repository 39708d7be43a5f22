//! Reloads: a good change is served, a bad one is rejected whole and shown on `/readyz`.

use crate::harness::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

async fn readyz(h: &Harness) -> serde_json::Value {
    let resp = tessera_token_server::admin::router(h.state.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).expect("req"))
        .await
        .expect("resp");
    serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body"),
    )
    .expect("json")
}

fn reload_recording(h: &Harness) -> Result<(), String> {
    let r = h.reload();
    tessera_token_server::source::record(&h.state, &r, jiff::Timestamp::now());
    r
}

#[tokio::test]
async fn an_edit_is_served_and_a_broken_file_keeps_the_last_good_snapshot() {
    let h = Harness::new();
    let path = h.path().join("fixture.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        h.cc("/oauth2/token", "es-client", "es-secret", &[])
            .await
            .body["scope"],
        "orders:read orders:write"
    );
    std::fs::write(
        &path,
        text.replace("scope: \"orders:write\"", "scope: \"orders:admin\""),
    )
    .expect("write");
    reload_recording(&h).expect("reload");
    assert_eq!(
        h.cc("/oauth2/token", "es-client", "es-secret", &[])
            .await
            .body["scope"],
        "orders:admin orders:read"
    );
    let gen_before = readyz(&h).await["generation"].clone();

    // A broken file: rejected whole, the old behaviour stays, and /readyz says why.
    std::fs::write(&path, format!("{text}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {{name: x}}\nspec: {{scop: typo}}\n")).expect("write");
    let err = reload_recording(&h).expect_err("rejected");
    assert!(err.contains("unknown field `scop`"), "{err}");
    assert_eq!(
        h.cc("/oauth2/token", "es-client", "es-secret", &[])
            .await
            .body["scope"],
        "orders:admin orders:read"
    );
    let ready = readyz(&h).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["generation"], gen_before);
    assert!(
        ready["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("field `spec.scop`")),
        "{ready}"
    );

    // Fixed again: the error clears.
    std::fs::write(&path, &text).expect("write");
    reload_recording(&h).expect("reload");
    assert!(readyz(&h).await["lastError"].is_null());
}

#[tokio::test]
async fn a_bad_key_set_is_rejected_and_problems_are_listed() {
    let h = Harness::new();
    std::fs::write(h.path().join("keys.yaml"), "apiVersion: v1\nkind: Secret\nmetadata: {name: tessera-keys}\nstringData:\n  keyset.json: '{\"version\": 1}'\n").expect("write");
    let err = h.reload().expect_err("rejected");
    assert!(err.contains("Secret tessera-keys"), "{err}");
    assert_eq!(
        h.cc("/oauth2/token", "rs-client", "rs-secret", &[])
            .await
            .status,
        200,
        "still serving"
    );
    // A dangling reference is not a rejected change: the object is reported, the rest serves.
    let h = Harness::with_files(&[
        ("fixture.yaml", FIXTURE),
        (
            "extra.yaml",
            "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: lost}\nspec: {clientId: lost, policyRef: {name: missing}}\n",
        ),
    ]);
    let ready = readyz(&h).await;
    assert_eq!(ready["objectsWithProblems"], 1);
    assert!(
        ready["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("Credential default/lost") && p.contains("PolicyNotFound")),
        "{ready}"
    );
}

#[test]
fn every_example_folder_loads_through_the_dir_source_without_problems() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&examples).expect("examples") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let mut loader = tessera_token_server::source::dir::DirLoader::new(
            dir.clone(),
            "tessera-keys".into(),
            ISSUER.into(),
        );
        let served = loader
            .load(jiff::Timestamp::now())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(
            served.snapshot.report().is_empty(),
            "{}: {:?}",
            dir.display(),
            served.snapshot.report().with_problems()
        );
        assert!(served.snapshot.counts().clients >= 1, "{}", dir.display());
        n += 1;
    }
    assert_eq!(n, 11);
}
