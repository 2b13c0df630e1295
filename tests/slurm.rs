//! deploy/slurm/ on a real one-node Slurm cluster started by the test (Debian's
//! `slurm-wlm` and `munge`, installed by `.ci/run`): `sbatch` starts a worker
//! through `srun`, an experiment runs to completion on it, and `scancel`
//! drains it, its runs going back to the queue without spending attempts.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// munged, slurmctld and slurmd for one node, `node1`, with the CPUs this
/// machine has; killed (with whatever jobs remain) when dropped.
struct Cluster {
    conf: PathBuf,
    _daemons: Vec<Process>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("munge"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let key = dir.join("munge/munge.key");
        let mut bytes = [0u8; 1024];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut bytes)
            .unwrap();
        std::fs::write(&key, bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = dir.join("munge/munge.socket");
        let mut munged = Command::new("munged");
        munged
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!(
                "--log-file={}",
                dir.join("log/munged.log").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.join("munge/munged.pid").display()
            ))
            .arg(format!(
                "--seed-file={}",
                dir.join("munge/munged.seed").display()
            ));
        let munged = Process::spawn(munged);
        wait_until("munged's socket", || socket.exists());

        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = dir.join("slurm.conf");
        let path = |sub: &str| dir.join(sub).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "ClusterName=flotilla-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
KillWait=15
NodeName=node1 NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=flotilla Nodes=node1 Default=YES MaxTime=INFINITE State=UP
",
                ctld_port = free_port(),
                d_port = free_port(),
                socket = socket.display(),
                state = path("state"),
                spool = path("spool"),
                dir = dir.display(),
                log = path("log"),
            ),
        )
        .unwrap();
        let daemon = |program: &str, extra: &[&str]| {
            let mut command = Command::new(program);
            command.arg("-D").arg("-f").arg(&conf).args(extra);
            Process::spawn(command)
        };
        let slurmctld = daemon("slurmctld", &[]);
        let slurmd = daemon("slurmd", &["-N", "node1"]);
        let cluster = Cluster {
            conf,
            _daemons: vec![slurmd, slurmctld, munged],
        };
        wait_until("node1 to be idle", || {
            cluster
                .command("sinfo")
                .args(["--noheader", "--format=%T"])
                .output()
                .is_ok_and(|out| text(&out.stdout).trim() == "idle")
        });
        cluster
    }

    /// A Slurm client command aimed at this cluster.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    fn jobs(&self) -> String {
        let out = self
            .command("squeue")
            .args(["--noheader", "--format=%i %T %r"])
            .output()
            .unwrap();
        text(&out.stdout).trim().to_string()
    }

    fn job_is_queued(&self, job: &str) -> bool {
        let out = self
            .command("squeue")
            .args(["--noheader", "--jobs", job, "--format=%T"])
            .output()
            .unwrap();
        !text(&out.stdout).trim().is_empty()
    }
}

impl Drop for Cluster {
    /// Jobs first, so that no step or worker outlives the daemons.
    fn drop(&mut self) {
        let _ = self.command("scancel").arg("--partition=flotilla").output();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.jobs().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// The workers connected now.
fn workers(coordinator: &CoordinatorProcess) -> Vec<serde_json::Value> {
    let output = run_ok(&mut coordinator.cli(&["status", "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    status["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w["connected"] == true)
        .collect()
}

#[test]
fn sbatch_starts_workers_that_run_an_experiment_and_scancel_drains_them() {
    if !system_tool("slurmctld", &["-V"], "slurm-wlm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("slurm"));
    let token = write_token(dir.path(), "slurm-token");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");

    // The script as a user submits it, with the sbatch line its README gives.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/slurm/flotilla-workers.sbatch");
    let output_pattern = dir.path().join("flotilla-workers-%j.out");
    let submitted = cluster
        .command("sbatch")
        .arg("--nodes=1")
        .arg("--cpus-per-task=2")
        .arg(format!("--output={}", output_pattern.display()))
        .arg(format!(
            "--export=ALL,FLOTILLA_COORDINATOR={},FLOTILLA_TOKEN_FILE={},FLOTILLA_BIN={},FLOTILLA_DRAIN_TIMEOUT=5s,TMPDIR={}",
            coordinator.address,
            token.display(),
            flotilla_bin().display(),
            dir.path().display()
        ))
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let job = text(&submitted.stdout)
        .trim()
        .strip_prefix("Submitted batch job ")
        .expect("sbatch names the job")
        .to_string();
    let job_output = dir.path().join(format!("flotilla-workers-{job}.out"));
    let worker_name = format!("node1-job{job}");
    let joined = || {
        workers(&coordinator)
            .iter()
            .any(|w| w["name"] == worker_name.as_str())
    };
    let started = std::time::Instant::now();
    while !joined() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no worker joined; jobs: {}; the job's output:\n{}",
            cluster.jobs(),
            std::fs::read_to_string(&job_output).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let worker = workers(&coordinator)
        .into_iter()
        .find(|w| w["name"] == worker_name.as_str())
        .unwrap();
    assert_eq!(worker["slots"], 2, "slots from --cpus-per-task: {worker}");

    // An experiment runs to completion on it.
    let quick = write_experiment(
        dir.path(),
        "quick.yaml",
        r#"name: quick
run:
  kind: command
  command: ["sh", "-c", "echo '{{\"score\": {i}}}'"]
variations:
  - {param: i, values: [1, 2, 3]}
runs_per_variation: 2
"#,
    );
    let waited = coordinator
        .cli(&["submit", "--wait", "--no-progress"])
        .arg(&quick)
        .output()
        .unwrap();
    assert!(waited.status.success(), "{}", text(&waited.stderr));
    let results = read_csv(&root.join("quick/results.csv"));
    assert_eq!(results.len(), 6);
    assert!(results
        .iter()
        .all(|row| row["status"] == "succeeded" && row["worker"] == worker_name));

    // Runs that are running when the job is cancelled go back to the queue.
    let slow = write_experiment(
        dir.path(),
        "slow.yaml",
        r#"name: slow
run:
  kind: command
  command: ["sh", "-c", "sleep 60 && echo '{{\"ok\": 1}}'"]
variations:
  - {param: i, values: [1, 2]}
runs_per_variation: 1
retries: {max_attempts: 1}
"#,
    );
    run_ok(coordinator.cli(&["submit"]).arg(&slow));
    wait_until("both slow runs to run", || {
        coordinator.status_json("slow")["experiments"][0]["counts"]["running"] == 2
    });
    let cancelled = cluster.command("scancel").arg(&job).output().unwrap();
    assert!(cancelled.status.success(), "{}", text(&cancelled.stderr));
    wait_until("the job to leave the queue", || {
        !cluster.job_is_queued(&job)
    });
    wait_until("the worker to leave the coordinator", || {
        !workers(&coordinator)
            .iter()
            .any(|w| w["name"] == worker_name.as_str())
    });
    assert_handed_back(&coordinator, "slow", 2, 2);
    // The worker drained and left by itself, before Slurm's KillWait.
    let said = std::fs::read_to_string(&job_output).unwrap_or_default();
    assert!(said.contains("draining"), "{said}");
    assert!(said.contains("drained; leaving"), "{said}");
}
