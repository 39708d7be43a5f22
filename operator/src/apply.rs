//! The one write path. Every write a plan returns ([`Write`]) and every Event goes through
//! [`Applier`], which checks the Lease before each one: a replica whose leadership ended in the
//! middle of a pass writes nothing more, even when its election has not noticed yet.

use crate::FIELD_MANAGER;
use crate::error::{Error, ErrorKind};
use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::plan::{API_VERSION, Write};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use std::sync::Arc;
use tessera_crds::model::Kind;
use tessera_crds::{ApiProxy, AuthPolicy, Credential, Role};

/// What a write left on the API server: the object and the resourceVersion the caches should
/// reach before the next pass plans from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The kind written (`None`: a Secret).
    pub kind: Option<Kind>,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its resourceVersion after the write.
    pub resource_version: String,
}

impl Written {
    fn of(kind: Option<Kind>, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// Carries out writes (see the module documentation).
pub struct Applier {
    client: Client,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    audit: Arc<crate::audit::Audit>,
}

impl Applier {
    /// An applier writing as `identity` (the Events' reporting instance) while `leadership`
    /// says this replica leads.
    pub fn new(
        client: Client,
        leadership: Leadership,
        metrics: Arc<Metrics>,
        identity: String,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity),
            },
        );
        Self {
            client,
            leadership,
            metrics,
            recorder,
            audit: Arc::new(crate::audit::Audit::off()),
        }
    }

    /// Writes an audit line for every Event from now on.
    pub fn set_audit(&mut self, audit: Arc<crate::audit::Audit>) {
        self.audit = audit;
    }

    /// The audit trail.
    pub fn audit(&self) -> &crate::audit::Audit {
        &self.audit
    }

    /// Replaces the leadership writes are checked against.
    pub fn set_leadership(&mut self, leadership: Leadership) {
        self.leadership = leadership;
    }

    /// The client writes go through (for reads the write path needs, such as re-reading the
    /// key set after a conflict).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Refuses when this replica does not lead now; counts it.
    fn check_lease(&self) -> Result<(), Error> {
        if self.leadership.leads() {
            return Ok(());
        }
        self.metrics.error(ErrorKind::NotLeader);
        Err(Error::NotLeader)
    }

    /// Carries out one write, if this replica leads now. Failures are counted by kind.
    pub async fn apply(&self, w: &Write) -> Result<Written, Error> {
        self.check_lease()?;
        self.metrics.writes.inc();
        let r = self.send(w).await.map_err(|source| Error::Write {
            verb: w.verb(),
            source,
        });
        if let Err(e) = &r {
            self.metrics.error(e.kind());
        }
        r
    }

    /// Publishes an Event about the object `regarding` (`kind` in `api_version`), if this
    /// replica leads now. The note is cut to the 1 KiB the API keeps.
    pub async fn event(
        &self,
        regarding: &ObjectMeta,
        kind: &str,
        api_version: &str,
        reason: &str,
        note: &str,
        warning: bool,
    ) -> Result<(), Error> {
        self.check_lease()?;
        self.audit.record(
            crate::audit::Audit::event_name(reason),
            if warning { "failure" } else { "success" },
            &format!(
                "{kind} {}/{}",
                regarding.namespace.as_deref().unwrap_or_default(),
                regarding.name.as_deref().unwrap_or_default()
            ),
            reason,
            note,
        );
        let reference = ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: regarding.name.clone(),
            namespace: regarding.namespace.clone(),
            uid: regarding.uid.clone(),
            ..Default::default()
        };
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.metrics.writes.inc();
        self.recorder
            .publish(&ev, &reference)
            .await
            .map_err(|source| {
                let e = Error::Write {
                    verb: "event",
                    source,
                };
                self.metrics.error(e.kind());
                e
            })
    }

    async fn send(&self, w: &Write) -> Result<Written, kube::Error> {
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let post = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let secrets = |s: &Secret| {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let name = s.metadata.name.clone().unwrap_or_default();
            (Api::<Secret>::namespaced(self.client.clone(), &ns), name)
        };
        match w {
            Write::CreateSecret(s) => {
                let (api, name) = secrets(s);
                let out = api.create(&post, s).await?;
                tracing::info!(secret = %format!("{}/{name}", out.metadata.namespace.as_deref().unwrap_or_default()), "Secret created");
                Ok(Written::of(None, &out.metadata))
            }
            Write::ReplaceSecret(s) => {
                let (api, name) = secrets(s);
                let out = api.replace(&name, &post, s).await?;
                tracing::info!(secret = %format!("{}/{name}", out.metadata.namespace.as_deref().unwrap_or_default()), "Secret replaced");
                Ok(Written::of(None, &out.metadata))
            }
            Write::ApplySecret(s) => {
                let (api, name) = secrets(s);
                let out = api.patch(&name, &apply, &Patch::Apply(&**s)).await?;
                tracing::info!(secret = %format!("{}/{name}", out.metadata.namespace.as_deref().unwrap_or_default()), "generated Secret updated");
                Ok(Written::of(None, &out.metadata))
            }
            Write::Status { object, status } => {
                let body = json!({"apiVersion": API_VERSION, "kind": object.kind.as_str(), "status": status});
                let (ns, name) = (&*object.namespace, &*object.name);
                let c = || self.client.clone();
                let meta = match object.kind {
                    Kind::Credential => {
                        Api::<Credential>::namespaced(c(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                    Kind::ApiProxy => {
                        Api::<ApiProxy>::namespaced(c(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                    Kind::AuthPolicy => {
                        Api::<AuthPolicy>::namespaced(c(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                    Kind::Role => {
                        Api::<Role>::namespaced(c(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                };
                tracing::debug!(object = %object, "status written");
                Ok(Written::of(Some(object.kind), &meta))
            }
        }
    }
}
