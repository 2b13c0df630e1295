//! Nothing acknowledged that is not on disk (ARCHITECTURE.md, invariant 4),
//! tried on a really full file system: the experiments root is a small tmpfs
//! that a ballast file fills. The sweep stops assigning, says why, keeps its
//! results with the workers, and once the ballast is removed it finishes by
//! itself with every run's files complete and every run counted once.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const RUNS: usize = 30;
/// Each run prints this much: the runs together need more than the free space.
const OUTPUT_BYTES: usize = 100_000;

/// A tmpfs mounted for the test, unmounted (lazily) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "this test mounts a small tmpfs and needs root (CI runs as root): mount failed with {status}"
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A root on an 8 MiB tmpfs filled by 6.5 MiB of ballast, and an experiment
/// whose runs together print more than the space left.
struct FullDisk {
    dir: tempfile::TempDir,
    tmpfs: Tmpfs,
    ballast: PathBuf,
    experiment: PathBuf,
}

impl FullDisk {
    fn new() -> FullDisk {
        let dir = tempfile::tempdir().unwrap();
        let tmpfs = Tmpfs::mount(&dir.path().join("root"), "8m");
        let ballast = tmpfs.path.join("ballast");
        std::fs::write(&ballast, vec![0u8; 6_500_000]).unwrap();
        let work = dir.path().join("work");
        write_experiment(
            &work,
            "scenario.py",
            &format!("import sys\nsys.stdout.write('x' * {OUTPUT_BYTES} + '\\n')\nprint('{{\"ok\": true}}')\n"),
        );
        let experiment = write_experiment(
            &work,
            "experiment.yaml",
            &format!(
                "name: full\nrun:\n  kind: command\n  command: [python3, scenario.py]\nruns_per_variation: {RUNS}\n"
            ),
        );
        FullDisk {
            dir,
            tmpfs,
            ballast,
            experiment,
        }
    }

    fn root(&self) -> &Path {
        &self.tmpfs.path
    }

    fn problem_prefix(&self) -> String {
        format!("cannot write under {}:", self.root().display())
    }

    /// Every run's files complete, every run counted once, the outputs whole.
    fn assert_complete(&self) {
        let root = self.root();
        let experiment_dir = root.join("full");
        assert_eq!(
            count(root, "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"),
            RUNS as i64
        );
        assert_eq!(
            count(root, "SELECT COUNT(*) FROM attempts"),
            RUNS as i64,
            "every run counted once"
        );
        for repetition in 1..=RUNS {
            let run = experiment_dir.join(format!("runs/var-001-run-{repetition:03}"));
            let stdout = std::fs::read_to_string(run.join("stdout.log")).unwrap();
            assert_eq!(
                stdout.len(),
                OUTPUT_BYTES + "\n{\"ok\": true}\n".len(),
                "{}",
                run.display()
            );
            assert_eq!(read_json(&run.join("result.json"))["status"], "succeeded");
            assert!(!run.join("stderr.log").exists(), "no empty log files");
            assert!(!run.join("artifacts").exists(), "no empty artifacts/");
        }
        let rows = read_csv(&experiment_dir.join("results.csv"));
        assert_eq!(rows.len(), RUNS);
        assert!(rows.iter().all(|row| row["status"] == "succeeded"));
        let summary = read_json(&experiment_dir.join("batch-summary.json"));
        assert_eq!(summary["succeeded"], RUNS);
    }
}

#[test]
fn flotilla_run_holds_results_back_on_a_full_disk_until_space_returns() {
    let disk = FullDisk::new();
    let mut command = flotilla(&["run"]);
    command
        .arg(&disk.experiment)
        .arg("--root")
        .arg(disk.root())
        .args(["--workers", "2"]);
    let mut sweep = Process::spawn(command);

    let said = sweep.wait_for_line(&disk.problem_prefix());
    assert!(said.contains("results waiting on workers"), "{said}");
    let recorded_while_full = count(
        disk.root(),
        "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'",
    );
    assert!((recorded_while_full as usize) < RUNS);

    std::fs::remove_file(&disk.ballast).unwrap();
    let status = sweep.wait_exit();
    let log = sweep.log.join("\n");
    assert!(
        status.success(),
        "the sweep finishes by itself: {status}\n{log}"
    );
    assert!(log.contains("results are being written again"), "{log}");
    let failing_reports = sweep
        .log
        .iter()
        .filter(|line| line.contains("cannot write under the root"))
        .count();
    assert_eq!(
        failing_reports, 1,
        "logged once per change of state:\n{log}"
    );
    disk.assert_complete();
}

#[test]
fn flotilla_status_says_why_results_wait_and_the_coordinator_carries_on() {
    let disk = FullDisk::new();
    let token_file = write_token(disk.dir.path(), "full-disk-token");
    let mut coordinator = CoordinatorProcess::start(disk.root(), &token_file, "127.0.0.1:0", "10s");
    let _worker = coordinator.join_worker("w1", 2, &disk.dir.path().join("w1"));
    run_ok(&mut coordinator.cli(&["submit", disk.experiment.to_str().unwrap()]));

    let mut status_text = String::new();
    wait_until("flotilla status to say the disk is full", || {
        let output = run_ok(&mut coordinator.cli(&["status", "full"]));
        status_text = text(&output.stdout);
        status_text.contains(&disk.problem_prefix())
    });
    assert!(
        status_text.contains("results waiting on workers"),
        "{status_text}"
    );
    let json = coordinator.status_json("full");
    assert!(json["store_problem"]
        .as_str()
        .is_some_and(|p| p.starts_with(&disk.problem_prefix())));

    std::fs::remove_file(&disk.ballast).unwrap();
    wait_until("the experiment to complete", || {
        coordinator.status_json("full")["experiments"][0]["state"] == "completed"
    });
    assert!(coordinator.status_json("full")["store_problem"].is_null());
    disk.assert_complete();
    coordinator.process.kill9();
}
