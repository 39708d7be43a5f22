//! `operator crd` prints, and `operator crd --out DIR` writes, exactly the committed CRDs.

use std::path::Path;
use std::process::Command;

fn committed(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const FILES: [&str; 4] = [
    "apiproxies.tessera.dev.yaml",
    "authpolicies.tessera.dev.yaml",
    "credentials.tessera.dev.yaml",
    "roles.tessera.dev.yaml",
];

#[test]
fn crd_prints_every_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("crd")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let want: String = FILES
        .iter()
        .map(|f| format!("---\n{}", committed(f)))
        .collect();
    assert_eq!(stdout, want);
}

#[test]
fn crd_out_writes_one_file_per_crd() {
    let dir = std::env::temp_dir().join(format!("tessera-crd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(["crd", "--out"])
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(out.status.success());
    for f in FILES {
        assert_eq!(
            std::fs::read_to_string(dir.join(f)).expect("written"),
            committed(f),
            "{f}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn crd_out_to_a_missing_folder_fails_with_the_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(["crd", "--out", "/nonexistent/tessera/crds"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tessera/crds"));
}
