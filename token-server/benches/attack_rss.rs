//! Memory under the adversarial review's two memory attacks, on the release binary over loopback:
//! `cargo bench -p tessera-token-server --bench attack_rss`.
//!
//! For each scenario it starts `token-server` on the quickstart folder, reads its idle RSS, runs
//! the attack, and reports idle, peak (`VmHWM`) and after, in MiB, with the answers by status:
//!
//! - 300 concurrent password requests, with the default budgets and with them lifted (every
//!   request reaches the password-check slots);
//! - 10,000 failed client authentications with distinct 256-byte client_ids in HTTP Basic (the
//!   longest a client_id can be), budgets lifted so each reaches the lockout tables;
//! - 2,000 with 20 KiB client_ids (refused before any check) and 2,000 with 200 KB ones (431 at
//!   the HTTP layer).
//!
//! The review measured 46 → 606 MB (30 concurrent password requests), 2.5 GB (300), and
//! 51 → 558 MB (2,000 failures with 200 KB ids) before the fixes. The target: peak within 50 MB
//! of idle.

#[path = "../tests/support/attack_load.rs"]
mod attack_load;
#[path = "../tests/support/server.rs"]
mod server;

use std::process::Stdio;

fn report(name: &str, pid: u32, idle: u64, codes: &attack_load::Codes) {
    let (now, peak) = attack_load::rss_kib(pid);
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:+.1} | {codes:?} |",
        mib(idle),
        mib(peak),
        mib(now),
        mib(peak.saturating_sub(idle))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("| attack | idle MiB | peak MiB | after MiB | peak − idle MiB | answers |");
    println!("|---|---|---|---|---|---|");
    for (name, extra) in [
        (
            "300 concurrent password requests (default budgets)",
            &[][..],
        ),
        (
            "300 concurrent password requests (budgets lifted)",
            &attack_load::NO_BUDGETS[..],
        ),
    ] {
        let s = server::start(extra, Stdio::null()).await;
        let pid = s.pid();
        let (idle, _) = attack_load::rss_kib(pid);
        let codes =
            attack_load::password_flood(&s.api, ("demo-app", "demo-secret-change-me"), 300).await;
        report(name, pid, idle, &codes);
    }
    let s = server::start(&attack_load::NO_BUDGETS, Stdio::null()).await;
    let pid = s.pid();
    let (idle, _) = attack_load::rss_kib(pid);
    let codes = attack_load::long_id_failures(&s.api, 10_000, 256, 32).await;
    report(
        "10,000 failures, 256-byte client_ids (budgets lifted)",
        pid,
        idle,
        &codes,
    );
    let codes = attack_load::long_id_failures(&s.api, 2_000, 20 * 1024, 32).await;
    report("then 2,000 failures, 20 KiB client_ids", pid, idle, &codes);
    let codes = attack_load::long_id_failures(&s.api, 2_000, 200 * 1024, 16).await;
    report("then 2,000 failures, 200 KB client_ids", pid, idle, &codes);
}
