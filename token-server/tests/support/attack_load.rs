//! The two memory attacks of the adversarial review, as load against a running token server:
//! shared by the attack tests (which assert the bound) and the `attack_rss` benchmark (which
//! reports the figures for the release build).

use base64::Engine as _;
use std::time::Duration;

/// Budgets lifted, so that every request reaches the work under test (the slots, the tables).
#[allow(dead_code)] // not every includer lifts them
pub const NO_BUDGETS: [&str; 6] = [
    "--free-failed-auth",
    "1000000",
    "--max-failed-auth-per-client",
    "1000000",
    "--max-failed-auth-per-address",
    "1000000",
];

/// Resident and peak resident memory of a process, in KiB (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Counts of the answers, by status code.
pub type Codes = std::collections::BTreeMap<u16, usize>;

/// `n` password-grant requests at once (wrong passwords for random users of `client`), each on
/// its own connection.
pub async fn password_flood(api: &str, client: (&str, &str), n: usize) -> Codes {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let url = format!("http://{api}/oauth2/token");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            let body = format!(
                "grant_type=password&client_id={}&client_secret={}&username=user-{i}&password=guess-{i}",
                client.0, client.1
            );
            tokio::spawn(async move {
                http.post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            })
        })
        .collect();
    let mut codes = Codes::new();
    for t in tasks {
        *codes.entry(t.await.unwrap_or(0)).or_default() += 1;
    }
    codes
}

/// `n` failed client authentications with distinct client_ids of `len` bytes in HTTP Basic,
/// `concurrency` at a time.
pub async fn long_id_failures(api: &str, n: usize, len: usize, concurrency: usize) -> Codes {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let url = format!("http://{api}/oauth2/token");
    let pad = "x".repeat(len.saturating_sub(12));
    let mut codes = Codes::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(concurrency) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|i| {
                let (http, url) = (http.clone(), url.clone());
                let auth = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{pad}{i:012}:wrong"))
                );
                tokio::spawn(async move {
                    http.post(url)
                        .header("authorization", auth)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body("grant_type=client_credentials")
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16())
                })
            })
            .collect();
        for t in tasks {
            *codes.entry(t.await.unwrap_or(0)).or_default() += 1;
        }
    }
    codes
}
