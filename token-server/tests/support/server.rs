//! The shipped binary on a folder of manifests, on free loopback ports: shared by the binary and
//! attack tests and the `attack_rss` benchmark.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_token-server");
/// The README's quickstart folder.
pub const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart");

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running server; killed when dropped.
pub struct Running {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:port` of the API.
    pub api: String,
    /// `127.0.0.1:port` of the admin port.
    pub admin: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(dead_code)] // each includer uses some of these
impl Running {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `http://` URL of an API path.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// `http://` URL of an admin path.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

/// Starts the binary on the quickstart folder with `extra` flags; its stderr goes to `stderr`.
/// Returns once `/readyz` answers 200.
pub async fn start(extra: &[&str], stderr: Stdio) -> Running {
    start_in(std::path::Path::new(QUICKSTART), extra, stderr).await
}

/// Starts the binary on the folder `dir`; otherwise as [`start`].
pub async fn start_in(dir: &std::path::Path, extra: &[&str], stderr: Stdio) -> Running {
    let (api, admin) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["--source", "dir", "--dir"])
        .arg(dir)
        .arg(format!("--listen=127.0.0.1:{api}"))
        .arg(format!("--admin-listen=127.0.0.1:{admin}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the token server");
    let r = Running {
        child,
        api: format!("127.0.0.1:{api}"),
        admin: format!("127.0.0.1:{admin}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(resp) = reqwest::get(r.admin_url("/readyz")).await
            && resp.status() == 200
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the token server never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
