//! The Python package as a user gets it: the wheel maturin builds from
//! python/ (the release binary and the module), installed with pip into a
//! fresh venv, then python/tests run with pytest against what was installed.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{run_ok, text};

/// A venv with maturin (python/requirements-build.txt), made on first use
/// under target/ (`.ci/run` makes it before the tests).
fn maturin() -> PathBuf {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = repository.join("target/python-build");
    let maturin = venv.join("bin/maturin");
    if !maturin.exists() {
        run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run_ok(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "-r"])
                .arg(repository.join("python/requirements-build.txt")),
        );
    }
    maturin
}

/// Builds the wheel into `out` and returns its path. The release profile
/// keeps maturin's build of the binary out of target/debug, where the other
/// tests' binary lives (a no-op when `.ci/run` built it already).
fn build_wheel(out: &Path) -> PathBuf {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_ok(
        Command::new(maturin())
            .args(["build", "--release", "--quiet", "--out"])
            .arg(out)
            .current_dir(repository.join("python")),
    );
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert_eq!(
        wheels.len(),
        1,
        "one wheel expected in {}: {wheels:?}",
        out.display()
    );
    wheels[0].clone()
}

#[test]
fn pip_installs_the_command_and_the_module_and_their_tests_pass() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().unwrap();
    let wheel = build_wheel(&scratch.path().join("wheels"));

    let listing = run_ok(
        Command::new("python3")
            .args(["-m", "zipfile", "-l"])
            .arg(&wheel),
    );
    let listing = text(&listing.stdout);
    assert!(listing.contains(".data/scripts/flotilla"), "{listing}");
    assert!(listing.contains("flotilla/__init__.py"), "{listing}");
    assert!(listing.contains("flotilla/py.typed"), "{listing}");

    // A fresh venv: only what pip installs from the wheel and the test requirements.
    let venv = scratch.path().join("venv");
    run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    run_ok(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .arg(&wheel)
            .arg("-r")
            .arg(repository.join("python/requirements-test.txt")),
    );
    let version = run_ok(Command::new(venv.join("bin/flotilla")).arg("--version"));
    assert!(text(&version.stdout).contains("(commit "));

    // Not from the source tree: pytest imports the installed module.
    let tests = scratch.path().join("tests");
    std::fs::create_dir(&tests).unwrap();
    for entry in std::fs::read_dir(repository.join("python/tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, tests.join(path.file_name().unwrap())).unwrap();
        }
    }
    let pytest = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "tmp_path_retention_count=0",
        ])
        .arg(&tests)
        .current_dir(scratch.path())
        .env_remove("FLOTILLA_ROOT")
        .env_remove("FLOTILLA_COORDINATOR")
        .env_remove("FLOTILLA_TOKEN_FILE")
        .env_remove("FLOTILLA_BIN")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let said = format!("{}{}", text(&pytest.stdout), text(&pytest.stderr));
    assert!(pytest.status.success(), "pytest failed:\n{said}");
    assert!(said.contains(" passed"), "{said}");
    assert!(!said.contains("skipped"), "no test may skip here:\n{said}");
}
