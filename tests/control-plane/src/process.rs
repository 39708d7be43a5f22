//! Child processes that never outlive the test process.
//!
//! A control plane lives in a `static` (one per test process), and Rust runs no destructors for
//! statics at exit, so a `Drop` cannot stop it. Each binary therefore runs under a tiny `sh`
//! supervisor whose stdin is a pipe from the test process: when the test process exits for any
//! reason (success, a failed test, a panic, SIGKILL), the kernel closes the pipe, the supervisor
//! reads EOF and stops its binary (SIGTERM, then SIGKILL after 5 s). The same mechanism removes
//! the temp folder once everything is stopped.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

// A background job's stdin is /dev/null in a non-interactive shell, so the pipe is kept as fd 3.
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
# The watcher: EOF on stdin (the test process is gone) stops the binary.
(
  # Survive a signal to the whole process group (Ctrl-C, `timeout`) long enough to escalate.
  trap '' TERM INT HUP
  cat <&3 >/dev/null
  kill -TERM "$pid" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null
) &
# The supervisor lives exactly as long as the binary, and exits with its status.
wait "$pid"
"#;

/// A supervised binary: alive while this value (its supervisor's stdin) is held.
pub struct Supervised {
    /// The name it was started as (`etcd`, `kube-apiserver`, …).
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Child,
    _stdin: ChildStdin,
}

impl Supervised {
    /// Starts `bin args…` with its output in `log`.
    pub fn start(name: &str, bin: &Path, args: &[String], log: PathBuf) -> Supervised {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", bin.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        Supervised {
            name: name.to_owned(),
            log,
            child,
            _stdin: stdin,
        }
    }

    /// Panics naming the binary, its flags and its log tail if it has exited.
    pub fn check_alive(&mut self, args: &[String]) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) while the control plane started\nflags: {}\nlast lines of {}:\n{}",
                self.name,
                args.join(" "),
                self.log.display(),
                tail(&self.log, 30)
            );
        }
    }

    /// Stops the binary now (closing the pipe) and waits for its supervisor.
    pub fn stop(self) {
        let Supervised {
            mut child, _stdin, ..
        } = self;
        drop(_stdin);
        let _ = child.wait();
    }
}

/// Removes `dir` when the test process exits (after the binaries have stopped).
// Never waited for: it must outlive this process, which is the point.
#[allow(clippy::zombie_processes)]
pub fn remove_at_exit(dir: &Path, keep: bool) -> ChildStdin {
    let script = if keep {
        "cat >/dev/null"
    } else {
        r#"cat >/dev/null; sleep 6; rm -rf "$1""#
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cleanup supervisor");
    child.stdin.take().expect("piped stdin")
}

/// The last `n` lines of a log.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
