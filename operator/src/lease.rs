//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Every write to the Lease is a replace guarded by the resourceVersion that was read, so of two
//! replicas racing for an expired lease exactly one succeeds. A leader that cannot renew steps
//! down after `renew_deadline` (shorter than the lease duration), before anyone else may take
//! over, so two replicas never both believe they lead.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// What to do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nobody holds it (or the holder let it expire): take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it until then.
    Follow(Timestamp),
}

/// Decides from the Lease's spec (None: no Lease yet).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseAction {
    let Some(spec) = spec else {
        return LeaseAction::Acquire;
    };
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    if holder == Some(identity) {
        return LeaseAction::Renew;
    }
    let Some(_) = holder else {
        return LeaseAction::Acquire;
    };
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    match renewed.and_then(|r| r.checked_add(duration).ok()) {
        Some(until) if until > now => LeaseAction::Follow(until),
        _ => LeaseAction::Acquire,
    }
}

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// How often to try (renew or acquire).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A leader that has not renewed for this long stops acting as leader.
    pub fn renew_deadline(&self) -> Duration {
        self.duration.mul_f64(2.0 / 3.0)
    }
}

fn lease_spec(
    cfg: &LeaseConfig,
    now: Timestamp,
    acquired: Option<MicroTime>,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs().max(1).try_into().unwrap_or(15)),
        acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// One attempt: read, decide, write. Returns whether we lead now.
pub async fn step(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    match decide(spec, &cfg.identity, now) {
        LeaseAction::Follow(_) => Ok(false),
        action => {
            let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
            let (acquired, transitions) = match action {
                LeaseAction::Renew => (spec.and_then(|s| s.acquire_time.clone()), transitions),
                _ => (None, transitions + i32::from(current.is_some())),
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    resource_version: current
                        .as_ref()
                        .and_then(|l| l.metadata.resource_version.clone()),
                    ..Default::default()
                },
                spec: Some(lease_spec(cfg, now, acquired, transitions)),
            };
            let pp = PostParams {
                field_manager: Some(crate::FIELD_MANAGER.into()),
                ..Default::default()
            };
            let result = match current {
                Some(_) => api.replace(&cfg.name, &pp, &lease).await.map(|_| ()),
                None => api.create(&pp, &lease).await.map(|_| ()),
            };
            match result {
                Ok(()) => Ok(true),
                // Someone else wrote first: they lead.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the Lease up (on shutdown), so a standby takes over at once instead of after expiry.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    if let Some(mut l) = api.get_opt(&cfg.name).await?
        && l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(cfg.identity.as_str())
    {
        if let Some(s) = l.spec.as_mut() {
            s.holder_identity = None;
            s.renew_time = None;
            s.acquire_time = None;
        }
        let pp = PostParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..Default::default()
        };
        api.replace(&cfg.name, &pp, &l).await?;
    }
    Ok(())
}

/// Whether this replica may write, checked before every write rather than once per pass.
///
/// The election publishes the instant its leadership ends unless renewed (`renew_deadline` after
/// the start of the last successful renewal). A pass that outlives it, or an election stuck in a
/// hanging API call, stops writing at that instant without waiting for the election to notice.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Option<tokio::time::Instant>>);

/// The election's end of a [`Leadership`].
pub type LeadershipSender = watch::Sender<Option<tokio::time::Instant>>;

/// A leadership the election updates, not leading to begin with.
pub fn leadership() -> (LeadershipSender, Leadership) {
    let (tx, rx) = watch::channel(None);
    (tx, Leadership(rx))
}

impl Leadership {
    /// Leading for good: one replica without leader election.
    pub fn always() -> Self {
        // About 30 years: far enough, and no overflow adding it to a tokio Instant.
        let until = tokio::time::Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600);
        Self(watch::channel(Some(until)).1)
    }

    /// Leading now: the last renewal's deadline has not passed.
    pub fn leads(&self) -> bool {
        self.0
            .borrow()
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// When the leadership as last published ends.
    pub fn until(&self) -> Option<tokio::time::Instant> {
        *self.0.borrow()
    }

    /// Resolves when the election publishes a change; never, once the election is gone.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs the election until `shutdown`, publishing until when this replica leads.
pub async fn run(
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: LeadershipSender,
    mut shutdown: watch::Receiver<bool>,
) {
    let leading = |l: &LeadershipSender| l.borrow().is_some();
    let mut last_renew: Option<tokio::time::Instant> = None;
    loop {
        // The renewal writes renewTime = now: the deadline counts from before the request.
        let started = tokio::time::Instant::now();
        match step(&api, &cfg).await {
            Ok(true) => {
                last_renew = Some(started);
                if !leading(&leader) {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
                }
                leader.send_replace(Some(started + cfg.renew_deadline()));
            }
            Ok(false) => {
                if leading(&leader) {
                    tracing::warn!(identity = %cfg.identity, "lost the lease to another replica");
                }
                last_renew = None;
                leader.send_replace(None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                if last_renew.is_some_and(|t| t.elapsed() >= cfg.renew_deadline()) {
                    tracing::warn!(identity = %cfg.identity, "could not renew the lease in time; stepping down");
                    last_renew = None;
                    leader.send_replace(None);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry_period) => {}
            _ = shutdown.changed() => break,
        }
    }
    if leading(&leader) {
        leader.send_replace(None);
        if let Err(e) = release(&api, &cfg).await {
            tracing::warn!(error = %e, "releasing the lease failed; a standby takes over when it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("ts"))),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    #[test]
    fn no_lease_or_no_holder_is_acquired() {
        assert_eq!(decide(None, "a", t(100)), LeaseAction::Acquire);
        assert_eq!(
            decide(Some(&spec(None, 100, 15)), "a", t(100)),
            LeaseAction::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some(""), 100, 15)), "a", t(100)),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed_even_if_expired() {
        assert_eq!(
            decide(Some(&spec(Some("a"), 0, 15)), "a", t(100)),
            LeaseAction::Renew
        );
    }

    #[test]
    fn another_holder_is_followed_until_expiry_then_taken_over() {
        let s = spec(Some("b"), 100, 15);
        assert_eq!(decide(Some(&s), "a", t(110)), LeaseAction::Follow(t(115)));
        assert_eq!(decide(Some(&s), "a", t(114)), LeaseAction::Follow(t(115)));
        assert_eq!(decide(Some(&s), "a", t(115)), LeaseAction::Acquire);
    }

    #[test]
    fn renew_deadline_is_shorter_than_the_lease() {
        let cfg = LeaseConfig {
            namespace: "n".into(),
            name: "l".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        };
        assert_eq!(cfg.renew_deadline(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_its_deadline_without_a_word_from_the_election() {
        let (tx, l) = leadership();
        assert!(!l.leads(), "not leading before the first renewal");
        tx.send_replace(Some(tokio::time::Instant::now() + Duration::from_secs(10)));
        assert!(l.leads());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(l.leads());
        // The election is stuck (no renewal, no step-down): the deadline alone ends it.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!l.leads());
        assert!(Leadership::always().leads());
    }
}
