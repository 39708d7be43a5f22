//! The audit trail: one JSON line per security-relevant event, on its own stream
//! (`--audit-log stdout|stderr|FILE|off`), apart from the diagnostic log.
//!
//! A request never waits for it: events go into a bounded queue that one writer thread drains,
//! serialising and writing off the request path; when the queue is full the event is dropped
//! and counted (`tessera_audit_events_dropped_total`). Events carry who (client, Credential,
//! user), what (token id, audience, scope), from where (source address) and the request id,
//! and never a secret, password, token, assertion or Authorization header: the types below
//! have no field that could hold one.

use serde::Serialize;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

/// The schema version every event carries.
pub const SCHEMA: &str = "tessera.audit/v1";
/// Events queued at most; past it they are dropped (and counted).
pub const QUEUE: usize = 65_536;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A token was issued.
    TokenIssued,
    /// A client failed to authenticate.
    ClientAuthFailed,
    /// A user's password was wrong (password grant).
    UserAuthFailed,
    /// A client or user is told to wait after failed attempts.
    LockoutStarted,
    /// A token request over the client's rate limit or quota.
    RateLimited,
    /// A refresh token was presented again: the chain is revoked.
    RefreshReuse,
    /// A token was revoked (RFC 7009).
    TokenRevoked,
    /// The signing keys served changed (a key started signing, or retired).
    KeysChanged,
}

/// Written as its name ([`Kind::as_str`]): one spelling of each event.
impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Kind {
    /// The event name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TokenIssued => "token.issued",
            Kind::ClientAuthFailed => "client.authentication_failed",
            Kind::UserAuthFailed => "user.authentication_failed",
            Kind::LockoutStarted => "lockout.started",
            Kind::RateLimited => "rate_limit.exceeded",
            Kind::RefreshReuse => "refresh.reuse_detected",
            Kind::TokenRevoked => "token.revoked",
            Kind::KeysChanged => "keys.changed",
        }
    }
}

/// Who acted.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    /// The client_id presented or authenticated (clipped to 256 bytes; never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Arc<str>>,
    /// `namespace/name` of the Credential or ApiProxy that is the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<Object>,
    /// How the client authenticated (`client_secret_basic`, `private_key_jwt`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// The user of a password grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What it acted on.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// `namespace/name` of the AuthPolicy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Object>,
    /// The grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<&'static str>,
    /// The token's audiences.
    #[serde(
        skip_serializing_if = "crate::token::claims::Audience::is_empty",
        serialize_with = "audiences"
    )]
    pub audience: crate::token::claims::Audience,
    /// The token's scope (joined with spaces by the writer).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "joined")]
    pub scope: Vec<Arc<str>>,
    /// `jwt` or `opaque`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// The token's id (`jti`): names the token without being it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Seconds until the token expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// Key ids, for `keys.changed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kids: Vec<String>,
}

/// One audit event.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339, UTC (formatted by the writer, off the request path).
    #[serde(serialize_with = "rfc3339")]
    pub time: jiff::Timestamp,
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// What happened.
    pub event: Kind,
    /// `success` or `failure`.
    pub outcome: &'static str,
    /// The request's id (`X-Request-Id`, or the trace id of `traceparent`, or generated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Arc<str>>,
    /// The source address (after `--trusted-proxies`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<std::net::IpAddr>,
    /// Who.
    pub actor: Actor,
    /// What.
    pub target: Target,
    /// Why it failed: the OAuth error code and its description (which never echoes a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds to wait, for lockouts and limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Event {
    /// Names `client` as the actor (its client_id, Credential and `method`) and its policy as
    /// the target's.
    pub fn by_client(
        &mut self,
        client: &tessera_crds::model::Client,
        method: Option<&'static str>,
    ) {
        self.actor.client_id = Some(client.client_id.as_str().into());
        self.actor.credential = Some(object(&client.owner));
        self.actor.method = method;
        self.target.policy = Some(object(&client.policy.owner));
    }

    /// An event of `kind` now, outcome `success` unless set.
    pub fn new(kind: Kind, now: jiff::Timestamp) -> Self {
        Self {
            time: now,
            schema: SCHEMA,
            event: kind,
            outcome: "success",
            request_id: None,
            source_address: None,
            actor: Actor::default(),
            target: Target::default(),
            reason: None,
            retry_after: None,
        }
    }
}

fn audiences<S: serde::Serializer>(
    a: &crate::token::claims::Audience,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(a.as_slice())
}

fn joined<S: serde::Serializer>(v: &[Arc<str>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&v.join(" "))
}

/// An object named `namespace/name` in an event: two reference-count increments on the
/// request path, formatted by the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object(pub tessera_crds::model::ObjectRef);

impl Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}/{}", self.0.namespace, self.0.name))
    }
}

fn rfc3339<S: serde::Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// A sink held in memory, read back as text: for tests, and for embedding the server.
#[derive(Clone, Default, Debug)]
pub struct MemorySink(Arc<std::sync::Mutex<Vec<u8>>>);

impl MemorySink {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for MemorySink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where events go.
pub enum Sink {
    /// Nowhere (`--audit-log off`).
    Off,
    /// A writer (stdout, stderr, a file, or a buffer in tests).
    Writer(Box<dyn Write + Send>),
}

/// The queue's sending side; cheap to clone into the state.
#[derive(Clone)]
pub struct Audit {
    tx: Option<SyncSender<Event>>,
    counters: Counters,
    writer: Option<Arc<Writer>>,
}

/// The writer thread, to stop it at shutdown with nothing lost.
struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The audit log's metrics, registered with the others.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    dropped: prometheus_client::metrics::counter::Counter,
    events: prometheus_client::metrics::family::Family<
        KindLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Counters {
    /// Registers `audit_events` and `audit_events_dropped`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "audit_events",
            "Audit events queued for the audit log, by event",
            self.events.clone(),
        );
        registry.register(
            "audit_events_dropped",
            "Audit events dropped because the audit log's queue was full (the writer could not keep up)",
            self.dropped.clone(),
        );
    }
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("on", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

/// The `event` label of the audit counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabel {
    event: &'static str,
}

impl Audit {
    /// No audit trail.
    pub fn off() -> Self {
        Self {
            tx: None,
            counters: Counters::default(),
            writer: None,
        }
    }

    /// Writes what is queued and stops the writer (at shutdown, after the last request).
    pub fn finish(&self) {
        let Some(w) = &self.writer else {
            return;
        };
        w.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let handle = w.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Starts the writer thread for `sink`; `queue` events wait at most. `counters`: the
    /// registered metrics.
    pub fn start(sink: Sink, queue: usize, counters: Counters) -> Self {
        let Sink::Writer(w) = sink else {
            return Self::off();
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(queue);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_all(rx, w, &stopping))
            .map_or_else(
                |e| {
                    tracing::error!(error = %e, "could not start the audit writer; audit events are dropped");
                    Self::off()
                },
                |h| Self {
                    tx: Some(tx),
                    counters,
                    writer: Some(Arc::new(Writer {
                        stop,
                        handle: std::sync::Mutex::new(Some(h)),
                    })),
                },
            )
    }

    /// Opens `--audit-log`: `stdout`, `stderr`, `off`, or a file path (appended to).
    pub fn open(spec: &str) -> std::io::Result<Sink> {
        Ok(match spec {
            "off" => Sink::Off,
            "stdout" => Sink::Writer(Box::new(std::io::stdout())),
            "stderr" => Sink::Writer(Box::new(std::io::stderr())),
            path => Sink::Writer(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        })
    }

    /// Whether events are recorded at all (callers skip building them when not).
    pub fn on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `event`, or drops and counts it when the queue is full. Never blocks.
    pub fn record(&self, event: Event) {
        let Some(tx) = &self.tx else {
            return;
        };
        let kind = event.event;
        match tx.try_send(event) {
            Ok(()) => {
                self.counters
                    .events
                    .get_or_create(&KindLabel {
                        event: kind.as_str(),
                    })
                    .inc();
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.inc();
            }
        }
    }

    /// Records a `kind` event of the request `rq` at `now`, filled in by `fill`; nothing is
    /// built when the audit log is off.
    pub fn emit(
        &self,
        kind: Kind,
        now: jiff::Timestamp,
        rq: &RequestCx,
        fill: impl FnOnce(&mut Event),
    ) {
        if !self.on() {
            return;
        }
        let mut e = Event::new(kind, now);
        e.request_id = rq.request_id.clone();
        e.source_address = rq.source;
        fill(&mut e);
        self.record(e);
    }
}

/// The request an event comes from.
#[derive(Clone, Debug, Default)]
pub struct RequestCx {
    /// Its id.
    pub request_id: Option<Arc<str>>,
    /// Its source address.
    pub source: Option<std::net::IpAddr>,
}

/// An object as events name it (`namespace/name`).
pub fn object(r: &tessera_crds::model::ObjectRef) -> Object {
    Object(r.clone())
}

/// How often the writer drains the queue.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer thread: every [`DRAIN_EVERY`] it writes what is queued and flushes. It never
/// blocks on the queue: a receiver waiting in `recv` would be woken by every event, a futex
/// call and a context switch per token (measured: 27% of the server's CPU with the writer
/// woken per event, on one CPU).
fn write_all(rx: Receiver<Event>, w: Box<dyn Write + Send>, stop: &std::sync::atomic::AtomicBool) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, w);
    let mut line = Vec::with_capacity(512);
    loop {
        // Read before draining: once set, this pass drains all that was sent before it.
        let stopping = stop.load(std::sync::atomic::Ordering::SeqCst);
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(ev) => {
                    line.clear();
                    if serde_json::to_writer(&mut line, &ev).is_ok() {
                        line.push(b'\n');
                        // A full disk or a closed pipe loses the event; nothing to do but go on.
                        let _ = out.write_all(&line);
                        wrote = true;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
        }
        if stopping {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines_with_the_schema_fields() {
        let buf = MemorySink::default();
        let a = Audit::start(Sink::Writer(Box::new(buf.clone())), 16, Counters::default());
        let mut e = Event::new(Kind::TokenIssued, jiff::Timestamp::UNIX_EPOCH);
        e.actor.client_id = Some("app".into());
        e.target.audience = crate::token::claims::Audience::Many(vec!["https://api.test".into()]);
        a.record(e);
        drop(a);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = buf.text();
            if let Some(line) = text.lines().next() {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                assert_eq!(v["event"], "token.issued");
                assert_eq!(v["schema"], SCHEMA);
                assert_eq!(v["outcome"], "success");
                assert_eq!(v["time"], "1970-01-01T00:00:00Z");
                assert_eq!(v["actor"]["client_id"], "app");
                assert_eq!(v["target"]["audience"][0], "https://api.test");
                assert!(v.get("reason").is_none(), "absent fields are left out");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no line written");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// A writer that never returns: the queue fills, and recording goes on without waiting.
    struct Stuck;
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(())
        }
    }

    #[test]
    fn a_stuck_writer_drops_events_and_counts_them_never_blocks() {
        let a = Audit::start(Sink::Writer(Box::new(Stuck)), 8, Counters::default());
        // Were recording to wait for the writer, this loop would never end.
        for _ in 0..10_000 {
            a.record(Event::new(
                Kind::ClientAuthFailed,
                jiff::Timestamp::UNIX_EPOCH,
            ));
        }
        // The writer drains what it can until it blocks (its buffer takes a few hundred lines),
        // the queue holds 8; the rest were dropped, and counted.
        let dropped = a.counters.dropped.get();
        assert!(dropped >= 9_000, "dropped {dropped}");
    }
}
