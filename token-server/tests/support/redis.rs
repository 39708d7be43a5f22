//! A real `redis-server` (Debian's package; `.ci/run` installs it) on a free loopback port, with
//! no persistence, killed when dropped. It can be killed and started again on the same port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or deliberately stopped) redis-server.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(dead_code)] // each includer uses some of these
impl Redis {
    /// Starts one; fails the test (never skips it) when redis-server is not installed.
    pub async fn start() -> Self {
        let mut r = Self {
            child: None,
            port: super::server::free_port(),
        };
        r.restart().await;
        r
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it at once (SIGKILL: no goodbye to the clients). Its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is not installed: `apt-get install redis-server` (.ci/run does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.query(&["PING"]).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server never answered PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one command and returns its reply.
    pub async fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await
    }

    /// Commands the server has processed (INFO stats `total_commands_processed`).
    pub async fn commands_processed(&self) -> u64 {
        let info: String = match self.query(&["INFO", "stats"]).await {
            Ok(v) => redis::from_redis_value(v).unwrap_or_default(),
            Err(e) => panic!("INFO stats: {e}"),
        };
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total_commands_processed in INFO stats"))
    }

    /// Every key, for tests that look at what is stored.
    pub async fn keys(&self) -> Vec<String> {
        let v = self.query(&["KEYS", "*"]).await.expect("KEYS");
        redis::from_redis_value(v).expect("keys")
    }
}
