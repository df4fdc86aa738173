//! The third-party tools that contract tests check Agora with (a client
//! generator, the AsyncAPI parser, a CloudEvents SDK, a browser), pinned in
//! `ops/tools/` and installed on first use by `ops/scripts/tools.sh`, so
//! `cargo test` needs no step before it. Installs are cached; concurrent
//! tests wait for one another's install.

use std::path::{Path, PathBuf};
use std::process::Output;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the repository")
        .to_path_buf()
}

/// A file of `ops/tools/`.
pub fn file(name: &str) -> PathBuf {
    root().join("ops/tools").join(name)
}

/// Runs `ops/scripts/tools.sh <what>` and returns the path it prints.
async fn install(what: &str) -> PathBuf {
    let output = tokio::process::Command::new("bash")
        .arg(root().join("ops/scripts/tools.sh"))
        .arg(what)
        .output()
        .await
        .expect("run ops/scripts/tools.sh");
    assert!(
        output.status.success(),
        "ops/scripts/tools.sh {what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// `bin/` of the venv of `ops/tools/requirements.txt`.
pub async fn python_bin() -> PathBuf {
    install("python").await
}

/// `node_modules/` of `ops/tools/package-lock.json`.
pub async fn node_modules() -> PathBuf {
    install("node").await
}

/// Runs `program` with `args`, with the tools' node_modules on `NODE_PATH`,
/// and returns what it did; never panics on a failed run, so the caller can
/// print the tool's own words.
pub async fn run(program: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let modules = node_modules().await;
    tokio::process::Command::new(program)
        .args(args)
        .env("NODE_PATH", &modules)
        .env("SCARF_ANALYTICS", "false")
        .current_dir(root())
        .output()
        .await
        .unwrap_or_else(|err| panic!("run {}: {err}", program.display()))
}

/// A tool's stdout and stderr, for a failure message.
pub fn said(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
