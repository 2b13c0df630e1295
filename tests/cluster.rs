//! Real-process clusters on 127.0.0.1 ephemeral ports: a `flotilla coordinator
//! start` and several `flotilla worker join`, driven through the CLI, including
//! kill -9 of a worker and of the coordinator, and a worker with a bad token.

mod support;

use std::path::Path;

use support::*;

fn experiment(dir: &Path, name: &str, runs_per_variation: u32, sleep: &str) -> std::path::PathBuf {
    let yaml = format!(
        r#"name: {name}
run:
  kind: command
  command: ["sh", "-c", "sleep {sleep}; cat data.txt >/dev/null && echo '{{{{\"v\": {{x}}, \"worker\": \"'$FLOTILLA_RUN_ID'\"}}}}'"]
  workdir: work
variations:
  - param: x
    values: [1, 2, 3, 4]
runs_per_variation: {runs_per_variation}
"#
    );
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("data.txt"), "shipped with the workdir\n").unwrap();
    write_experiment(dir, &format!("{name}.yaml"), &yaml)
}

/// Like `experiment`, but each run waits until the file `gate` exists.
fn gated_experiment(
    dir: &Path,
    name: &str,
    runs_per_variation: u32,
    gate: &Path,
) -> std::path::PathBuf {
    experiment(
        dir,
        name,
        runs_per_variation,
        &format!("0; while [ ! -e {} ]; do sleep 0.02; done", gate.display()),
    )
}

fn running_on(status: &serde_json::Value, worker: &str) -> u64 {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == worker)
        .and_then(|w| w["running"].as_u64())
        .unwrap_or(0)
}

fn finished_per_worker(status: &serde_json::Value) -> Vec<(String, u64)> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["finished"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn succeeded(status: &serde_json::Value) -> u64 {
    status["experiments"][0]["counts"]["succeeded"]
        .as_u64()
        .unwrap()
}

/// Every run succeeded, and exactly one attempt of each counted as success.
fn assert_each_run_succeeded_once(root: &Path, total: i64) {
    assert_eq!(
        count(root, "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"),
        total
    );
    assert_eq!(
        count(
            root,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'succeeded'"
        ),
        total
    );
    assert_eq!(
        count(root, "SELECT COUNT(*) FROM (SELECT 1 FROM attempts WHERE outcome = 'succeeded' GROUP BY experiment_id, variation, repetition HAVING COUNT(*) > 1)"),
        0
    );
}

#[test]
fn runs_spread_over_workers_including_one_that_joins_mid_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    // Runs wait on a gate: the sweep cannot end before the third worker joined.
    let gate = dir.path().join("gate");
    let file = gated_experiment(&dir.path().join("exp"), "spread", 10, &gate);
    let _w1 = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    let _w2 = coordinator.join_worker("w2", 2, &dir.path().join("w2"));

    let mut submit = coordinator.cli(&["submit", "--wait"]);
    submit.arg(&file);
    let mut submit = Process::spawn(submit);
    wait_until("the first two workers to be busy", || {
        coordinator
            .try_status_json("spread")
            .is_some_and(|s| running_on(&s, "w1") == 2 && running_on(&s, "w2") == 2)
    });
    let _w3 = coordinator.join_worker("w3", 2, &dir.path().join("w3"));
    wait_until("the worker that joined mid-sweep to get runs", || {
        running_on(&coordinator.status_json("spread"), "w3") > 0
    });
    std::fs::write(&gate, "open").unwrap();
    assert!(submit.wait_exit().success(), "{}", submit.log.join("\n"));

    let status = coordinator.status_json("spread");
    assert_eq!(status["experiments"][0]["state"], "completed");
    assert_eq!(succeeded(&status), 40);
    let per_worker = finished_per_worker(&status);
    assert_eq!(per_worker.len(), 3);
    assert!(
        per_worker.iter().all(|(_, finished)| *finished > 0),
        "every worker ran runs: {per_worker:?}"
    );
    assert_each_run_succeeded_once(&root, 40);
    // The coordinator writes the report once the experiment ends.
    let report = root.join("spread/analysis/analysis-report.md");
    wait_until("the automatic report", || report.exists());
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("# Analysis of `spread`"));
    let remote = text(&run_ok(&mut coordinator.cli(&["report", "spread"])).stdout);
    assert!(
        remote.contains("# Analysis of `spread`") && remote.contains("## v (undeclared"),
        "{remote}"
    );
    // A second experiment on the same grid, compared through the coordinator.
    let second = experiment(&dir.path().join("exp2"), "spread2", 2, "0.01");
    let mut submit = coordinator.cli(&["submit", "--wait"]);
    submit.arg(&second);
    run_ok(&mut submit);
    let comparison = text(&run_ok(&mut coordinator.cli(&["compare", "spread", "spread2"])).stdout);
    assert!(
        comparison.contains("# Comparison of `spread`, `spread2`")
            && comparison.contains("4 matched variation(s) per experiment, matched on x.")
            && comparison.contains("## v (undeclared"),
        "{comparison}"
    );
    assert!(root
        .join("comparisons/spread-vs-spread2/analysis-report.md")
        .exists());

    let list = text(&run_ok(&mut coordinator.cli(&["ls"])).stdout);
    assert!(
        list.contains("spread  completed  40 runs: 40 succeeded"),
        "{list}"
    );
    let human = text(&run_ok(&mut coordinator.cli(&["status", "spread"])).stdout);
    assert!(human.contains("var-004") && human.contains("w3"), "{human}");
    // Tables: experiments with their counts and spend, workers with what they serve.
    assert!(
        human.contains("name    state      runs  succeeded")
            && human.contains("spread  completed    40")
            && human.contains("slots  running  finished  serves")
            && human.contains("sim/*"),
        "{human}"
    );
}

#[test]
fn workdir_is_shipped_to_workers_that_lack_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let exp_dir = dir.path().join("exp");
    let file = experiment(&exp_dir, "shipped", 2, "0");
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    // The submitter's copy disappears: workers can only get it from the coordinator.
    std::fs::rename(exp_dir.join("work"), dir.path().join("moved-away")).unwrap();
    let work_dir = dir.path().join("w1");
    let _worker = coordinator.join_worker("w1", 2, &work_dir);
    wait_until("the sweep to finish", || {
        coordinator.status_json("shipped")["experiments"][0]["state"] == "completed"
    });
    assert_each_run_succeeded_once(&root, 8);
    let cached: Vec<_> = std::fs::read_dir(work_dir.join("workdirs"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "fetched once, cached by hash");
}

#[test]
fn killed_worker_runs_are_requeued_and_finish_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "1500ms");
    let file = experiment(&dir.path().join("exp"), "victim", 6, "0.3");
    let mut doomed = coordinator.join_worker("doomed", 2, &dir.path().join("doomed"));
    let _survivor = coordinator.join_worker("survivor", 2, &dir.path().join("survivor"));
    run_ok(coordinator.cli(&["submit"]).arg(&file));

    wait_until("the doomed worker to be running runs", || {
        let status = coordinator.status_json("victim");
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "doomed" && w["running"].as_u64() > Some(0))
            && succeeded(&status) >= 2
    });
    doomed.kill9();

    wait_until("the sweep to finish", || {
        coordinator.status_json("victim")["experiments"][0]["state"] == "completed"
    });
    assert_each_run_succeeded_once(&root, 24);
    assert!(
        count(
            &root,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'lost' AND worker = 'doomed'"
        ) > 0
    );
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM runs WHERE attempts = 2"),
        count(
            &root,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'lost'"
        )
    );
}

#[test]
fn killed_coordinator_restarts_without_losing_acknowledged_results() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let mut coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "3s");
    let address = coordinator.address.clone();
    let file = experiment(&dir.path().join("exp"), "phoenix", 8, "0.1");
    let _w1 = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    let _w2 = coordinator.join_worker("w2", 2, &dir.path().join("w2"));
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    wait_until("some results", || {
        succeeded(&coordinator.status_json("phoenix")) >= 6
    });

    coordinator.process.kill9();
    let committed_before = count(
        &root,
        "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'",
    );
    assert!(committed_before >= 6);

    // Same root, same address: the workers reconnect by themselves.
    let coordinator = CoordinatorProcess::start(&root, &token, &address, "3s");
    wait_until("both workers to come back", || {
        let status = coordinator.status_json("phoenix");
        let workers = status["workers"].as_array().unwrap();
        workers.len() == 2 && workers.iter().all(|w| w["connected"] == true)
    });
    let after_restart = count(
        &root,
        "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'",
    );
    assert!(
        after_restart >= committed_before,
        "no committed result lost"
    );
    wait_until("the sweep to finish", || {
        coordinator.status_json("phoenix")["experiments"][0]["state"] == "completed"
    });
    assert_each_run_succeeded_once(&root, 32);
    let names: Vec<String> = finished_per_worker(&coordinator.status_json("phoenix"))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["w1", "w2"]);
    assert_eq!(read_csv(&root.join("phoenix/results.csv")).len(), 32);
    // Scripts ask the coordinator for the runs.
    let exported = run_ok(&mut coordinator.cli(&["export", "phoenix", "--format", "jsonl"]));
    assert_eq!(text(&exported.stdout).lines().count(), 32);
    assert_eq!(
        text(&exported.stdout),
        std::fs::read_to_string(root.join("phoenix/results.jsonl")).unwrap()
    );
}

#[test]
fn worker_with_a_wrong_token_is_refused_and_gets_no_work() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    // Work is waiting when the intruder knocks.
    let file = experiment(&dir.path().join("exp"), "guarded", 1, "0");
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    assert_eq!(
        coordinator.status_json("guarded")["experiments"][0]["counts"]["pending"],
        4
    );
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess\n").unwrap();
    let output = flotilla(&["worker", "join", &coordinator.address, "--name", "intruder"])
        .arg("--token-file")
        .arg(&wrong)
        .arg("--work-dir")
        .arg(dir.path().join("intruder"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("token"), "{stderr}");
    assert!(!stderr.contains("joined"), "{stderr}");
    let status = coordinator.status_json("guarded");
    assert!(status["workers"].as_array().unwrap().is_empty(), "{status}");

    // An honest worker then runs all of it: the intruder ran nothing.
    let _honest = coordinator.join_worker("honest", 2, &dir.path().join("honest"));
    wait_until("the sweep to finish", || {
        coordinator.status_json("guarded")["experiments"][0]["state"] == "completed"
    });
    assert_each_run_succeeded_once(&root, 4);
    assert_eq!(
        count(
            &root,
            "SELECT COUNT(*) FROM attempts WHERE worker <> 'honest'"
        ),
        0
    );

    // Clients with a wrong token are refused too.
    let output = flotilla(&["status", "--coordinator", &coordinator.address])
        .arg("--token-file")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
}

#[test]
fn a_root_serves_one_process_and_worker_names_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let file = experiment(&dir.path().join("exp"), "locked", 1, "0");
    let output = flotilla(&["run"])
        .arg(&file)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("in use"),
        "{}",
        text(&output.stderr)
    );

    let _first = coordinator.join_worker("twin", 1, &dir.path().join("twin-a"));
    let mut second = flotilla(&["worker", "join", &coordinator.address, "--name", "twin"]);
    second
        .arg("--token-file")
        .arg(&token)
        .arg("--work-dir")
        .arg(dir.path().join("twin-b"));
    let mut second = Process::spawn(second);
    second.wait_for_line("already connected");
}

#[test]
fn workers_of_one_name_under_two_coordinators_each_get_a_work_dir_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let mut workers = Vec::new();
    let mut coordinators = Vec::new();
    for side in ["a", "b"] {
        let coordinator = CoordinatorProcess::start(
            &dir.path().join(format!("root-{side}")),
            &token,
            "127.0.0.1:0",
            "10s",
        );
        // No --work-dir: the default must not be shared between the two.
        let mut join = flotilla(&["worker", "join", &coordinator.address, "--name", "gpu-box"]);
        join.arg("--token-file").arg(&token).arg("--slots").arg("1");
        let mut worker = Process::spawn(join);
        worker.wait_for_line("joined");
        let file = experiment(&dir.path().join(format!("exp-{side}")), "twins", 1, "0");
        run_ok(coordinator.cli(&["submit"]).arg(&file).arg("--wait"));
        workers.push(worker);
        coordinators.push(coordinator);
    }
    for coordinator in &coordinators {
        assert_eq!(succeeded(&coordinator.status_json("twins")), 4);
    }
    // Each leaves with its directory.
    let names: Vec<String> = workers
        .iter()
        .map(|w| format!("flotilla-worker-gpu-box-{}", w.child.id()))
        .collect();
    let own_dirs = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|entry| {
                names
                    .iter()
                    .any(|name| entry.file_name().to_string_lossy() == *name)
            })
            .count()
    };
    assert_eq!(own_dirs(), 2);
    for worker in &workers {
        unsafe { libc::kill(worker.child.id() as i32, libc::SIGTERM) };
    }
    for worker in &mut workers {
        assert!(worker.wait_exit().success(), "{}", worker.log.join("\n"));
    }
    assert_eq!(
        own_dirs(),
        0,
        "the default work dirs are removed when their workers leave"
    );
}

/// An Ollama farm: two workers, each beside an "Ollama host" (a sim-server
/// serving models under their own names) with different models. Runs go only
/// to the worker that serves their model; a model nobody serves waits, said so.
#[test]
fn runs_go_to_the_workers_whose_ollama_serves_their_model() {
    let python = python_with_clients();
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let mut hosts = Vec::new();
    // Host b counts a token per byte, as a model with another tokenizer would.
    for (host, model, bytes_per_token) in [("a", "llama3.2", 4), ("b", "qwen2.5", 1)] {
        let config = dir.path().join(format!("{host}.yaml"));
        std::fs::write(
            &config,
            format!(
                "models:\n  - {{name: {model}, answers: echo, bytes_per_token: {bytes_per_token}}}\n"
            ),
        )
        .unwrap();
        hosts.push(sim_server(&["--config", config.to_str().unwrap()]));
    }
    let mut workers = Vec::new();
    for (number, (_, address)) in hosts.iter().enumerate() {
        let name = format!("w{}", number + 1);
        let mut command = flotilla(&[
            "worker",
            "join",
            &coordinator.address,
            "--name",
            &name,
            "--slots",
            "2",
        ]);
        command
            .arg("--token-file")
            .arg(&token)
            .arg("--work-dir")
            .arg(dir.path().join(&name))
            .arg("--ollama-url")
            .arg(format!("http://{address}"));
        let mut process = Process::spawn(command);
        process.wait_for_line("joined");
        workers.push(process);
    }
    std::fs::write(
        dir.path().join("farm.py"),
        "import json, sys, ollama\nreply = ollama.Client().chat(model=sys.argv[1], messages=[{'role': 'user', 'content': 'who serves me?'}])\nprint(json.dumps({'answer': reply.message.content}))\n",
    )
    .unwrap();
    let file = write_experiment(
        dir.path(),
        "farm.yaml",
        &format!(
            "name: farm\nrun:\n  kind: command\n  command: [{:?}, farm.py, \"{{model}}\"]\n\
             variations:\n  - param: model\n    values: [ollama/llama3.2, ollama/qwen2.5, ollama/mistral]\nruns_per_variation: 3\n",
            python.display().to_string()
        ),
    );
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut waiting = String::new();
    wait_until("the served runs to finish and the rest to wait", || {
        let status = coordinator.status_json("farm");
        waiting = status["experiments"][0]["waiting"]
            .as_str()
            .unwrap_or("")
            .to_string();
        succeeded(&status) == 6
    });
    let status_line = text(&run_ok(&mut coordinator.cli(&["status", "farm"])).stdout);
    assert!(
        status_line.contains("waiting: no worker serves ollama/mistral; connected workers serve"),
        "{status_line}"
    );
    assert!(
        waiting.contains("ollama/llama3.2") && waiting.contains("ollama/qwen2.5"),
        "{waiting}"
    );
    for (variation, worker) in [(1, "w1"), (2, "w2")] {
        assert_eq!(
            count(
                &root,
                &format!("SELECT COUNT(*) FROM attempts WHERE variation = {variation} AND worker = '{worker}' AND outcome = 'succeeded'")
            ),
            3,
            "variation {variation} ran on {worker} only"
        );
    }
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM attempts WHERE variation = 3"),
        0
    );
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM calls WHERE provider = 'ollama' AND model IN ('llama3.2', 'qwen2.5')"),
        6
    );
    // "who serves me?" is 14 bytes: metered from each host's own usage.
    assert_eq!(
        count(
            &root,
            "SELECT MAX(input_tokens) FROM calls WHERE model = 'llama3.2'"
        ),
        4
    );
    assert_eq!(
        count(
            &root,
            "SELECT MAX(input_tokens) FROM calls WHERE model = 'qwen2.5'"
        ),
        14
    );
    run_ok(&mut coordinator.cli(&["cancel", "farm"]));
}

#[test]
fn ollama_farm_example_places_each_model_on_the_worker_whose_host_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ollama-farm");
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let hosts: Vec<(Process, String)> = ["host-a", "host-b"]
        .iter()
        .map(|host| {
            let config = example.join(format!("stand-ins/{host}.yaml"));
            sim_server(&["--config", config.to_str().unwrap()])
        })
        .collect();
    let path = path_with_clients();
    let mut workers = Vec::new();
    for (name, (_, address)) in ["a", "b"].iter().zip(&hosts) {
        let mut command = flotilla(&["worker", "join", &coordinator.address, "--name", name]);
        command
            .arg("--token-file")
            .arg(&token)
            .arg("--work-dir")
            .arg(dir.path().join(name))
            .arg("--ollama-url")
            .arg(format!("http://{address}"))
            .env("PATH", &path);
        let mut process = Process::spawn(command);
        process.wait_for_line("joined");
        workers.push(process);
    }
    run_ok(
        coordinator
            .cli(&["submit", "--wait"])
            .arg(example.join("experiment.yaml")),
    );
    let rows = read_csv(&root.join("ollama-farm/results.csv"));
    assert_eq!(rows.len(), 12);
    for row in &rows {
        assert_eq!(row["status"], "succeeded", "{row:?}");
        let expected = if row["model"] == "ollama/llama3.2" {
            "a"
        } else {
            "b"
        };
        assert_eq!(row["worker"], expected, "{row:?}");
        assert_eq!(row["answered"], "true");
    }
}

#[test]
fn setup_runs_once_per_worker_a_failed_one_keeps_that_worker_off_and_teardown_follows() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let _w1 = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    let _w2 = coordinator.join_worker("w2", 2, &dir.path().join("w2"));
    let exp = dir.path().join("exp");
    let file = write_experiment(
        &exp,
        "hooked.yaml",
        r#"name: hooked
run:
  kind: command
  command: ["sh", "-c", "echo '{{\"v\": 1}}'"]
  setup: {command: ["sh", "-c", "echo setup on $FLOTILLA_WORKER for $FLOTILLA_EXPERIMENT; test $FLOTILLA_WORKER != w2"], timeout: 30s}
  teardown: ["sh", "-c", "echo teardown on $FLOTILLA_WORKER; touch torn-down-$FLOTILLA_WORKER"]
runs_per_variation: 8
"#,
    );
    run_ok(coordinator.cli(&["submit", "--wait"]).arg(&file));
    // Every run succeeded, on w1, with one attempt each: declined runs spent none.
    let rows = read_csv(&root.join("hooked/results.csv"));
    assert_eq!(rows.len(), 8);
    for row in &rows {
        assert_eq!(
            (
                row["status"].as_str(),
                row["worker"].as_str(),
                row["attempt"].as_str()
            ),
            ("succeeded", "w1", "1"),
            "{row:?}"
        );
    }
    assert_eq!(count(&root, "SELECT COUNT(*) FROM attempts"), 8);
    let said = text(&run_ok(&mut coordinator.cli(&["status", "hooked"])).stdout);
    assert!(
        said.contains("setup failed on w2: exited with code 1 (see workers/w2/setup.log); that worker takes no runs of it"),
        "{said}"
    );
    let log = |worker: &str, hook: &str| {
        std::fs::read_to_string(root.join(format!("hooked/workers/{worker}/{hook}.log")))
            .unwrap_or_default()
    };
    assert_eq!(log("w1", "setup"), "setup on w1 for hooked\n");
    assert_eq!(log("w2", "setup"), "setup on w2 for hooked\n");
    // The teardown runs on the worker that ran the experiment, once it ended.
    wait_until("w1's teardown", || {
        log("w1", "teardown") == "teardown on w1\n"
    });
    assert!(exp.join("torn-down-w1").exists());
    assert!(
        !exp.join("torn-down-w2").exists(),
        "no teardown after a failed setup"
    );
}
