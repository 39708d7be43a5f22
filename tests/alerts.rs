//! The chart's alerts and dashboard name only metrics the binaries expose: every `tessera_…`
//! name in `files/prometheus-rules.yaml` and `files/grafana-dashboard.json` is one the token
//! server's or the operator's registry encodes (`promtool` checks the syntax and the rules'
//! behaviour in CI; this checks that they watch something real).

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The sample names of an OpenMetrics/Prometheus text exposition, from its `# TYPE` lines.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if (parts.next(), parts.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Every `tessera_…` identifier in `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tessera_") {
        let start = i + at;
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        if start > 0 && ident(b[start - 1]) {
            i = start + 1;
            continue;
        }
        let mut end = start;
        while end < b.len() && ident(b[end]) {
            end += 1;
        }
        out.insert(text[start..end].to_owned());
        i = end;
    }
    out
}

#[test]
fn every_metric_the_alerts_and_dashboard_use_is_exposed() {
    // Labelled families are encoded once they have a series: give each one.
    let mut state = tessera_token_server::state::AppState::new(Default::default());
    let m = state.metrics.clone();
    m.record_request(
        "/oauth2/token",
        "client_credentials",
        None,
        std::time::Duration::ZERO,
    );
    m.record_auth("client_secret_basic");
    m.record_limited("ns/policy".into(), "rate");
    state.store.metrics.error("attempt");
    state.start_audit(tessera_token_server::audit::Sink::Writer(Box::new(
        std::io::sink(),
    )));
    state.audit.record(tessera_token_server::audit::Event::new(
        tessera_token_server::audit::Kind::TokenIssued,
        jiff_now(),
    ));
    let mut names = exposed(&m.encode(jiff_now()));
    let op = tessera_operator::metrics::Metrics::default();
    op.reconciled("Credential", "ok", 1);
    op.error(tessera_operator::error::ErrorKind::NotLeader);
    op.key_age
        .get_or_create(&tessera_operator::metrics::AlgLabels {
            alg: "ES256".into(),
        })
        .set(1.0);
    names.extend(exposed(&op.encode()));
    assert!(names.contains("tessera_requests_total"), "{names:?}");
    let files = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/tessera/files");
    for f in ["prometheus-rules.yaml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(files.join(f)).expect("read");
        let used = referenced(&text);
        assert!(used.len() >= 8, "{f}: {used:?}");
        let missing: Vec<_> = used.difference(&names).collect();
        assert!(
            missing.is_empty(),
            "{f} uses metrics no binary exposes: {missing:?}\nexposed: {names:?}"
        );
    }
}

fn jiff_now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}
