//! The `dir` source: the manifests (CRs and Secrets) in one folder, watched for changes.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the folder is read (hidden entries, such
//! as the `..data` links of a mounted ConfigMap or Secret, are skipped; links are followed). The
//! key set is the Secret named `--keys-secret` (default `tessera-keys`), data key `keyset.json`;
//! without one, keys are generated at start and kept for the life of the process.
//!
//! A change is reloaded 100 ms after the last file event. A file that does not parse rejects the
//! whole change: the last good snapshot keeps serving and the error shows on `/readyz`.

use crate::source::record;
use crate::state::{AppState, Served};
use crate::token::keys::{KeySet, SECRET_DATA_KEY};
use jiff::Timestamp;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tessera_crds::manifest;
use tessera_crds::model::{ResourceSet, resolve};

/// Most files read from the folder.
pub const MAX_FILES: usize = 10_000;
/// Wait after the last file event before reloading, so an editor's or `kubectl cp`'s burst of
/// writes is read once.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Reads every manifest in `dir`.
pub fn read_folder(dir: &Path) -> Result<ResourceSet, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read the folder: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if matches!(ext, "yaml" | "yml" | "json") && path.is_file() {
            files.push(path);
        }
    }
    if files.len() > MAX_FILES {
        return Err(format!(
            "{}: {} manifest files is more than {MAX_FILES}; merge them",
            dir.display(),
            files.len()
        ));
    }
    files.sort();
    // One thread on purpose: parsing on both cores took a 100k-Credential folder from 6.1 s to
    // 4.1 s, but the exited parser threads' heaps stayed mapped (RSS 539 MB instead of 164 MB).
    let mut set = ResourceSet::default();
    for r in parse_files(&files)? {
        set.push(r);
    }
    Ok(set)
}

fn parse_files(files: &[PathBuf]) -> Result<Vec<manifest::Resource>, String> {
    let mut out = Vec::new();
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if meta.len() > manifest::MAX_MANIFEST_BYTES as u64 {
            return Err(format!(
                "{}: {} bytes is more than the {} a manifest may have; split the file",
                f.display(),
                meta.len(),
                manifest::MAX_MANIFEST_BYTES
            ));
        }
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.extend(
            manifest::parse(&text, &f.display().to_string())
                .map_err(|e| e.to_string())?
                .resources,
        );
    }
    Ok(out)
}

/// The loader's memory between loads.
pub struct DirLoader {
    /// The folder.
    pub dir: PathBuf,
    /// Name of the keys Secret.
    pub keys_secret: String,
    /// The `iss`.
    pub issuer: String,
    generated: Option<Arc<KeySet>>,
    generation: u64,
}

impl DirLoader {
    /// A loader for `dir`.
    pub fn new(dir: PathBuf, keys_secret: String, issuer: String) -> Self {
        Self {
            dir,
            keys_secret,
            issuer,
            generated: None,
            generation: 0,
        }
    }

    /// Reads the folder and builds a complete view, or says why not.
    pub fn load(&mut self, now: Timestamp) -> Result<Served, String> {
        let set = read_folder(&self.dir)?;
        let keys = match self.find_keys(&set)? {
            Some(k) => Arc::new(k),
            None => self.generated_keys(now)?,
        };
        let snapshot = resolve(&set, keys.verifier_key(), now);
        self.generation += 1;
        Ok(Served::new(
            snapshot,
            keys,
            self.generation,
            &self.issuer,
            now,
        ))
    }

    fn find_keys(&self, set: &ResourceSet) -> Result<Option<KeySet>, String> {
        let Some(secret) = set
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(self.keys_secret.as_str()))
        else {
            return Ok(None);
        };
        let from_string = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(SECRET_DATA_KEY))
            .map(|s| s.as_bytes().to_vec());
        let from_data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SECRET_DATA_KEY))
            .map(|b| b.0.clone());
        let json = from_string.or(from_data).ok_or_else(|| {
            format!(
                "Secret {}: no key `{SECRET_DATA_KEY}`; put the key set there",
                self.keys_secret
            )
        })?;
        KeySet::from_json(&json)
            .map(Some)
            .map_err(|e| format!("Secret {}: {e}", self.keys_secret))
    }

    fn generated_keys(&mut self, now: Timestamp) -> Result<Arc<KeySet>, String> {
        if let Some(k) = &self.generated {
            return Ok(k.clone());
        }
        tracing::warn!(
            secret = %self.keys_secret,
            "NO KEY SET FOUND: generated signing and encryption keys for this process only. Tokens will NOT survive a restart and other replicas will NOT accept them. Add a `{}` Secret (see the README) for real use.",
            self.keys_secret
        );
        let file = KeySet::generate_file(now).map_err(|e| e.to_string())?;
        let mut keys = KeySet::from_file(&file).map_err(|e| e.to_string())?;
        keys.ephemeral = true;
        let keys = Arc::new(keys);
        self.generated = Some(keys.clone());
        Ok(keys)
    }
}

/// Loads once; publishes on success, records the error otherwise.
async fn reload(st: &AppState, loader: DirLoader) -> DirLoader {
    let now = (st.clock)();
    // Resolving 100,000s of objects takes a good part of a second: keep it off the runtime.
    let joined = tokio::task::spawn_blocking(move || {
        let mut loader = loader;
        let r = loader.load(now);
        (loader, r)
    })
    .await;
    let (loader, result) = match joined {
        Ok(v) => v,
        Err(e) => {
            // The loader is lost only if the blocking task panicked; that is a bug worth a crash.
            panic!("loading the folder panicked: {e}");
        }
    };
    let outcome = result.map(|served| {
        tracing::info!(
            generation = served.generation,
            clients = served.snapshot.counts().clients,
            "serving a new snapshot"
        );
        st.publish(served);
    });
    record(st, &outcome, now);
    loader
}

/// Loads the folder, then reloads on every change until `shutdown` resolves.
pub async fn run(
    st: AppState,
    mut loader: DirLoader,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    st.status().source = format!("dir:{}", loader.dir.display());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reading the files ourselves raises access events; only changes matter.
        if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            // A full channel already means "reload"; dropping extra events is the debounce.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&loader.dir, RecursiveMode::NonRecursive)?;
    loader = reload(&st, loader).await;
    tokio::pin!(shutdown);
    loop {
        let next_key_change = st
            .served
            .load_full()
            .and_then(|s| s.keys.next_change((st.clock)()))
            .map(|t| {
                Duration::from_secs(((t.as_second() - (st.clock)().as_second()).max(0) as u64) + 1)
            })
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                loader = reload(&st, loader).await;
            }
            // A key starts signing or retires by the clock alone: rebuild JWKS and discovery.
            _ = tokio::time::sleep(next_key_change) => {
                loader = reload(&st, loader).await;
            }
        }
    }
}
