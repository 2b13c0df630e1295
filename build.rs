//! Records the commit the binary is built from, for `flotilla --version`.
//!
//! From `git` when the source is a checkout; from `FLOTILLA_COMMIT` when it is
//! not (a source archive); "unknown" otherwise. Reruns when HEAD moves.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FLOTILLA_COMMIT");
    let commit = std::env::var("FLOTILLA_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(commit_from_git)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FLOTILLA_COMMIT={commit}");
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn commit_from_git() -> Option<String> {
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    let git_dir = Path::new(&git_dir);
    // HEAD names a branch; the branch's ref (loose or packed) names the commit.
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!(
        "cargo:rerun-if-changed={}",
        git_dir.join("packed-refs").display()
    );
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!(
            "cargo:rerun-if-changed={}",
            git_dir.join(reference).display()
        );
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
