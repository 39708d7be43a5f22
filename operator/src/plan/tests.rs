//! Scenario tests of whole passes: the world, the plan, the world after the writes.

use super::secrets::is_generated_form;
use super::*;
use std::sync::Arc;
use tessera_crds::credential::{CredentialStatus, DeletionPolicy};
use tessera_crds::manifest::parse;
use tessera_crds::model::Kind;

struct Scripted(u8);
impl SecretSource for Scripted {
    fn new_secret(&mut self) -> String {
        self.0 += 1;
        char::from(b'a' + self.0)
            .to_string()
            .repeat(GENERATED_SECRET_LEN)
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("ts")
}

fn world(extra: &str) -> World {
    let yaml = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: p}}\nspec: {{management: ACL, grantTypes: [client_credentials]}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: c, uid: u-1, generation: 1}}\nspec: {{policyRef: {{name: p}}, rotation: {{interval: 24h, gracePeriod: 1h}}}}\n{extra}"
    );
    World {
        set: parse(&yaml, "t")
            .expect("parse")
            .resources
            .into_iter()
            .collect(),
    }
}

/// Applies a plan's writes to the world, as the API server would.
fn apply(w: &mut World, p: &Plan) {
    for o in &p.objects {
        for write in &o.writes {
            match write {
                Write::CreateSecret(s) | Write::ApplySecret(s) | Write::ReplaceSecret(s) => {
                    let mut s = (**s).clone();
                    s.metadata.creation_timestamp = None;
                    w.set.secrets.retain(|x| x.metadata.name != s.metadata.name);
                    w.set.secrets.push(Arc::new(s));
                }
                Write::Status { object, status } if object.kind == Kind::AuthPolicy => {
                    for c in w.set.auth_policies.iter_mut() {
                        let mut n = (**c).clone();
                        n.status = Some(serde_json::from_value(status.clone()).expect("status"));
                        *c = Arc::new(n);
                    }
                }
                Write::Status { object, status } => {
                    for c in w
                        .set
                        .credentials
                        .iter_mut()
                        .filter(|c| c.metadata.name.as_deref() == Some(&*object.name))
                    {
                        let mut n = (**c).clone();
                        n.status = Some(serde_json::from_value(status.clone()).expect("status"));
                        *c = Arc::new(n);
                    }
                }
            }
        }
    }
}

fn key() -> VerifierKey {
    VerifierKey::new(vec![7u8; 32])
}

fn settings() -> Settings {
    Settings {
        token_endpoint: "http://t/oauth2/token".into(),
    }
}

fn cred_status(w: &World) -> CredentialStatus {
    w.set.credentials[0].status.clone().unwrap_or_default()
}

#[test]
fn interval_rotation_and_grace_follow_the_clock() {
    let mut w = world("");
    let mut rng = Scripted(0);
    let p = plan(&w, &key(), &settings(), t(0), &mut rng);
    assert!(matches!(
        p.objects
            .iter()
            .find(|o| o.object.kind == Kind::Credential)
            .map(|o| &o.writes[0]),
        Some(Write::CreateSecret(_))
    ));
    apply(&mut w, &p);
    let first = cred_status(&w).secret_verifiers;
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].verifier,
        key()
            .verifier(
                &tessera_crds::secret::verifier_binding(
                    w.set.credentials[0].metadata.uid.as_deref(),
                    "Credential",
                    "default",
                    &w.set.credentials[0]
                        .metadata
                        .name
                        .clone()
                        .unwrap_or_default(),
                ),
                "b".repeat(43).as_bytes()
            )
            .to_published()
    );
    // The secret was stamped at t(0): rotation is due at t(24h) and the plan says so.
    let p = plan(&w, &key(), &settings(), t(60), &mut rng);
    assert!(p.objects.is_empty(), "{:?}", p.objects);
    assert_eq!(p.next_wake, Some(t(24 * 3600)));
    // Due: the new secret, and the old verifier with a one-hour grace period.
    let p = plan(&w, &key(), &settings(), t(24 * 3600), &mut rng);
    let writes: Vec<&str> = p
        .objects
        .iter()
        .flat_map(|o| o.writes.iter().map(Write::verb))
        .collect();
    assert_eq!(
        writes,
        ["status", "apply_secret"],
        "status (new + old verifier) before the Secret"
    );
    apply(&mut w, &p);
    let vs = cred_status(&w).secret_verifiers;
    assert_eq!(vs.len(), 2);
    assert_eq!(vs[1].verifier, first[0].verifier);
    // The grace period never ends early: 2 s of margin for the truncated clock and for the
    // Secret write that follows the status.
    let end = 25 * 3600 + 2;
    assert_eq!(vs[1].not_after, Some(ts(t(end))));
    assert_eq!(p.next_wake, Some(t(end)));
    // During grace: stable. After grace: the old verifier goes.
    assert!(
        plan(&w, &key(), &settings(), t(24 * 3600 + 10), &mut rng)
            .objects
            .is_empty()
    );
    let p = plan(&w, &key(), &settings(), t(end - 1), &mut rng);
    assert!(
        p.objects.is_empty(),
        "still in its grace period a second before the end"
    );
    let p = plan(&w, &key(), &settings(), t(end), &mut rng);
    apply(&mut w, &p);
    assert_eq!(cred_status(&w).secret_verifiers.len(), 1);
}

fn secret_named<'a>(w: &'a World, name: &str) -> Option<&'a Secret> {
    w.set
        .secrets
        .iter()
        .map(|s| &**s)
        .find(|s| s.metadata.name.as_deref() == Some(name))
}

fn writes_of(p: &Plan) -> Vec<&'static str> {
    p.objects
        .iter()
        .flat_map(|o| o.writes.iter().map(Write::verb))
        .collect()
}

#[test]
fn a_deleted_generated_secret_is_recreated_and_the_old_verifier_kept_for_its_grace() {
    let mut w = world("");
    let mut rng = Scripted(0);
    let p = plan(&w, &key(), &settings(), t(0), &mut rng);
    apply(&mut w, &p);
    let first = cred_status(&w).secret_verifiers;
    assert!(secret_named(&w, "c-client").is_some());
    // Someone deletes the generated Secret.
    w.set.secrets.clear();
    let p = plan(&w, &key(), &settings(), t(60), &mut rng);
    assert!(
        writes_of(&p).contains(&"create_secret"),
        "recreated: {:?}",
        writes_of(&p)
    );
    apply(&mut w, &p);
    assert!(secret_named(&w, "c-client").is_some());
    let vs = cred_status(&w).secret_verifiers;
    assert_eq!(
        vs.len(),
        2,
        "the new verifier and the previous one in grace: {vs:?}"
    );
    assert_ne!(vs[0].verifier, first[0].verifier, "a new secret");
    assert_eq!(vs[1].verifier, first[0].verifier);
    assert!(vs[1].not_after.is_some());
    // Then steady: nothing more to write until the grace period ends.
    let p = plan(&w, &key(), &settings(), t(120), &mut rng);
    assert!(p.objects.is_empty(), "{:?}", writes_of(&p));
}

#[test]
fn a_foreign_secret_with_the_generated_name_is_left_alone_and_reported() {
    let mut w = world(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: c-client}\nstringData: {client_secret: not-ours}\n",
    );
    let p = plan(&w, &key(), &settings(), t(0), &mut Scripted(0));
    let writes = writes_of(&p);
    assert!(
        !writes.contains(&"create_secret") && !writes.contains(&"apply_secret"),
        "the foreign Secret is never written: {writes:?}"
    );
    apply(&mut w, &p);
    assert!(
        cred_status(&w).secret_verifiers.is_empty(),
        "its value must not authenticate"
    );
    let status = serde_json::to_value(cred_status(&w)).expect("json");
    assert!(
        status.to_string().contains("SecretConflict"),
        "the condition says why: {status}"
    );
}

#[test]
fn orphan_leaves_the_generated_secret_without_an_owner_and_delete_sets_one() {
    let owners = |policy: DeletionPolicy| {
        let mut w = world("");
        let mut c = (*w.set.credentials[0]).clone();
        c.spec.deletion_policy = policy;
        w.set.credentials[0] = Arc::new(c);
        let p = plan(&w, &key(), &settings(), t(0), &mut Scripted(0));
        apply(&mut w, &p);
        secret_named(&w, "c-client")
            .expect("generated")
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
    };
    let delete = owners(DeletionPolicy::Delete);
    assert_eq!(
        delete.len(),
        1,
        "Delete: garbage-collected with its Credential"
    );
    assert_eq!(delete[0].uid, "u-1");
    assert!(
        owners(DeletionPolicy::Orphan).is_empty(),
        "Orphan: kept when the Credential goes"
    );
}

#[test]
fn a_credential_being_deleted_is_not_repaired() {
    // Its generated Secret is gone (the garbage collector or a namespace deletion took it):
    // re-creating it would fight the deletion (issue 20).
    let mut w = world("");
    let mut c = (*w.set.credentials[0]).clone();
    c.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0)));
    w.set.credentials[0] = Arc::new(c);
    let credential_writes = |p: &Plan| {
        p.objects
            .iter()
            .filter(|o| o.object.kind == Kind::Credential)
            .count()
    };
    let p = plan(&w, &key(), &settings(), t(10), &mut Scripted(0));
    assert_eq!(credential_writes(&p), 0, "{:?}", p.objects);
    // The same Credential not being deleted gets its Secret and status.
    let w = world("");
    let p = plan(&w, &key(), &settings(), t(10), &mut Scripted(0));
    assert_eq!(credential_writes(&p), 1, "{:?}", p.objects);
}

#[test]
fn an_expiring_credential_wakes_the_operator_and_is_reported_when_due() {
    let w = world(
        "---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: e, uid: u-2}\nspec: {policyRef: {name: p}, clientId: e, expiresAt: '2027-01-15T08:00:00Z'}\n",
    );
    let exp: Timestamp = "2027-01-15T08:00:00Z".parse().expect("ts");
    let before = plan(
        &w,
        &key(),
        &settings(),
        exp - SignedDuration::from_secs(60),
        &mut Scripted(0),
    );
    assert!(before.next_wake.is_some_and(|n| n <= exp));
    let after = plan(&w, &key(), &settings(), exp, &mut Scripted(0));
    let st = after
        .objects
        .iter()
        .find(|o| &*o.object.name == "e")
        .expect("e");
    let Write::Status { status, .. } = st
        .writes
        .iter()
        .find(|w| matches!(w, Write::Status { .. }))
        .expect("status")
    else {
        unreachable!()
    };
    assert_eq!(status["conditions"][0]["reason"], "Expired");
}

#[test]
fn generated_client_ids_are_stable_per_uid_and_differ_across_uids() {
    let m = |uid: &str| ObjectMeta {
        name: Some("app".into()),
        uid: Some(uid.into()),
        ..Default::default()
    };
    assert_eq!(generated_client_id(&m("a")), generated_client_id(&m("a")));
    assert_ne!(generated_client_id(&m("a")), generated_client_id(&m("b")));
    assert_eq!(generated_client_id(&ObjectMeta::default()), None);
}

#[test]
fn only_our_generated_form_counts_as_a_valid_secret() {
    assert!(is_generated_form("A".repeat(43).as_bytes()));
    assert!(!is_generated_form(b"short"));
    assert!(!is_generated_form("+".repeat(43).as_bytes()));
}
