//! The operator's audit trail: one JSON line per change it makes that a security team asks
//! about (a secret generated, rotated or repaired, a key-set rotation step, and every Event it
//! publishes), in the token server's schema (`tessera.audit/v1`, README: Audit trail), on its
//! own stream (`--audit-log stdout|stderr|FILE|off`). The operator writes a few lines per
//! change, never per request, so lines are written in place, under a lock.

use std::io::Write;
use std::sync::Mutex;

/// The schema version every line carries.
pub const SCHEMA: &str = "tessera.audit/v1";

/// Where lines go; `off` writes nothing.
pub struct Audit {
    out: Option<Mutex<Box<dyn Write + Send>>>,
    /// This replica (`--identity`).
    identity: String,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("on", &self.out.is_some())
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// No trail.
    pub fn off() -> Self {
        Self {
            out: None,
            identity: String::new(),
        }
    }

    /// Opens `--audit-log`: `stdout`, `stderr`, `off`, or a file (appended to).
    pub fn open(spec: &str, identity: &str) -> std::io::Result<Self> {
        Ok(Self::to(
            match spec {
                "off" => return Ok(Self::off()),
                "stdout" => Box::new(std::io::stdout()),
                "stderr" => Box::new(std::io::stderr()),
                path => Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?,
                ),
            },
            identity,
        ))
    }

    /// A trail into `w`.
    pub fn to(w: Box<dyn Write + Send>, identity: &str) -> Self {
        Self {
            out: Some(Mutex::new(w)),
            identity: identity.to_owned(),
        }
    }

    /// Writes one event about `object` (`Kind namespace/name`). `note` is the Event's note: it
    /// names objects and fields, never a value.
    pub fn record(&self, event: &str, outcome: &str, object: &str, reason: &str, note: &str) {
        let Some(out) = &self.out else {
            return;
        };
        let line = serde_json::json!({
            "time": jiff::Timestamp::now().to_string(),
            "schema": SCHEMA,
            "event": event,
            "outcome": outcome,
            "actor": {"operator": self.identity},
            "target": {"object": object},
            "reason": if note.is_empty() { reason.to_owned() } else { format!("{reason}: {note}") },
        });
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk or a closed pipe loses the line; the Kubernetes Event still tells.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    /// The audit event name of a Kubernetes Event reason.
    pub fn event_name(reason: &str) -> &'static str {
        match reason {
            "SecretGenerated" => "secret.generated",
            "SecretRotated" => "secret.rotated",
            "SecretRepaired" => "secret.repaired",
            _ => "object.event",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_follow_the_schema() {
        let buf = Buffer::default();
        let a = Audit::to(Box::new(buf.clone()), "op-1");
        a.record(
            Audit::event_name("SecretRotated"),
            "success",
            "Credential shop/app",
            "SecretRotated",
            "rotated the client secret; the previous one works for 1h",
        );
        let text = String::from_utf8(buf.0.lock().expect("buffer").clone()).expect("utf8");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["event"], "secret.rotated");
        assert_eq!(v["actor"]["operator"], "op-1");
        assert_eq!(v["target"]["object"], "Credential shop/app");
        assert!(
            v["time"]
                .as_str()
                .expect("time")
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(Audit::event_name("Ready"), "object.event");
    }
}
