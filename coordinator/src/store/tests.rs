//! The store's promises, tested on its functions: groups commit whole, a
//! group with a failed write commits nothing and acknowledges nothing until
//! a retry succeeds, and unknown states in the database are errors.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use super::*;

fn database(root: &Path) -> Connection {
    let mut connection = Connection::open(root.join(DATABASE_FILE)).unwrap();
    schema::migrate(&mut connection).unwrap();
    connection
}

fn experiment_row(root: &Path) -> Write {
    Write::Experiment(Box::new(ExperimentRow {
        id: 1,
        name: "e".into(),
        config_yaml: "name: e\nrun: {kind: noop}\n".into(),
        config_json: "{}".into(),
        config_hash: "h".into(),
        state: ExperimentState::Running,
        workdir_path: None,
        workdir_hash: None,
        started_at_ms: 0,
        finished_at_ms: None,
        spent_usd: 0.0,
        cache: Default::default(),
        dir: root.join("e"),
    }))
}

fn runs(count: u32) -> Write {
    Write::Runs {
        experiment_id: 1,
        runs: (1..=count).map(|r| (1, r)).collect(),
    }
}

/// A summary write into `dir`: fails while `dir` is a regular file.
fn summary_into(dir: PathBuf) -> Write {
    Write::Summary {
        dir,
        summary: Summary {
            name: "e".into(),
            state: ExperimentState::Running,
            counts: Default::default(),
            spent_usd: 0.0,
            budget_usd: None,
            budget: None,
            reason: None,
            started_at_ms: 0,
            finished_at_ms: None,
            now_ms: 0,
            config_hash: "h".into(),
        },
    }
}

fn run_rows(connection: &Connection) -> i64 {
    connection
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap()
}

fn request(writes: Vec<Write>, committed: &std_mpsc::Sender<i64>) -> Request {
    let committed = committed.clone();
    Request::Writes {
        writes,
        on_commit: Some(Box::new(move |at| {
            let _ = committed.send(at);
        })),
    }
}

#[test]
fn a_group_commits_in_one_transaction_and_then_acknowledges_each_request() {
    let root = tempfile::tempdir().unwrap();
    let mut connection = database(root.path());
    let health = StoreHealth::new(root.path().to_path_buf());
    let (committed, acknowledged) = std_mpsc::channel();
    let group = vec![
        request(vec![experiment_row(root.path())], &committed),
        request(vec![runs(3)], &committed),
        request(vec![summary_into(root.path().join("e"))], &committed),
    ];
    commit_until_durable(&mut connection, group, &health);
    let times: Vec<i64> = acknowledged.try_iter().collect();
    assert_eq!(times.len(), 3, "every request of the group is acknowledged");
    assert!(
        times.windows(2).all(|w| w[0] == w[1]),
        "one commit: {times:?}"
    );
    assert_eq!(run_rows(&connection), 3);
    assert!(root.path().join("e/batch-summary.json").exists());
    assert!(!health.is_failing());
}

#[test]
fn a_group_with_a_failed_write_rolls_back_whole_and_acknowledges_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut connection = database(root.path());
    let (committed, acknowledged) = std_mpsc::channel();
    // A file where a directory must be: the summary write fails.
    let blocked = root.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let mut group = vec![
        request(vec![experiment_row(root.path()), runs(2)], &committed),
        request(vec![summary_into(blocked.join("e"))], &committed),
    ];
    let failure = commit_group(&mut connection, &mut group, 1).unwrap_err();
    assert!(failure.cause().contains("Not a directory"), "{failure}");
    assert_eq!(
        run_rows(&connection),
        0,
        "the rows before the failed write rolled back"
    );
    drop(group);
    assert!(acknowledged.try_recv().is_err(), "nothing acknowledged");
}

#[test]
fn a_failing_group_is_retried_until_the_disk_takes_it() {
    let root = tempfile::tempdir().unwrap();
    let blocked = root.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let health = Arc::new(StoreHealth::new(root.path().to_path_buf()));
    let (committed, acknowledged) = std_mpsc::channel();
    let writer = {
        let (root, health, blocked) = (root.path().to_path_buf(), health.clone(), blocked.clone());
        std::thread::spawn(move || {
            let mut connection = database(&root);
            let group = vec![request(
                vec![
                    experiment_row(&root),
                    runs(2),
                    summary_into(blocked.join("e")),
                ],
                &committed,
            )];
            commit_until_durable(&mut connection, group, &health);
            run_rows(&connection)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health.is_failing() {
        assert!(Instant::now() < deadline, "the failure was never reported");
        std::thread::sleep(Duration::from_millis(10));
    }
    let problem = health.problem().unwrap();
    assert!(
        problem.starts_with(&format!(
            "cannot write under {}: Not a directory",
            root.path().display()
        )),
        "{problem}"
    );
    assert!(
        acknowledged.try_recv().is_err(),
        "nothing acknowledged while failing"
    );
    // Space returns: the same writes go through, once.
    std::fs::remove_file(&blocked).unwrap();
    assert_eq!(writer.join().unwrap(), 2);
    assert!(acknowledged.recv_timeout(Duration::from_secs(1)).is_ok());
    assert!(!health.is_failing());
    assert!(blocked.join("e/batch-summary.json").exists());
}

#[test]
fn an_unknown_state_in_the_database_is_an_error_not_a_default() {
    let root = tempfile::tempdir().unwrap();
    {
        let connection = database(root.path());
        connection
            .execute(
                "INSERT INTO experiments (id, name, config_yaml, config_json, config_hash, state, started_at_ms) \
                 VALUES (1, 'e', '', '{}', 'h', 'runing', 0)",
                [],
            )
            .unwrap();
    }
    let error = open(root.path()).err().expect("refused").to_string();
    assert!(
        error.contains("unknown experiment state 'runing'; expected one of: running, completed, failed, cancelled"),
        "{error}"
    );
}

#[test]
fn an_experiment_is_finished_when_its_final_write_commits() {
    let root = tempfile::tempdir().unwrap();
    let mut connection = database(root.path());
    let health = StoreHealth::new(root.path().to_path_buf());
    let config =
        flotilla_shared::config::parse_experiment("name: e\nrun: {kind: noop}\n", "e.yaml")
            .unwrap();
    let Write::Summary { summary, .. } = summary_into(root.path().join("e")) else {
        unreachable!()
    };
    let (committed, acknowledged) = std_mpsc::channel();
    let group = vec![request(
        vec![
            experiment_row(root.path()),
            runs(1),
            Write::Finalize {
                experiment_id: 1,
                dir: root.path().join("e"),
                summary: Summary {
                    state: ExperimentState::Completed,
                    // Whatever the actor thought, the commit decides.
                    finished_at_ms: Some(1),
                    ..summary
                },
                config: Box::new(config),
            },
        ],
        &committed,
    )];
    commit_until_durable(&mut connection, group, &health);
    let committed_at = acknowledged.try_recv().unwrap();
    let (state, finished): (String, i64) = connection
        .query_row("SELECT state, finished_at_ms FROM experiments", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), finished), ("completed", committed_at));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("e/batch-summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary["finished_at"],
        flotilla_shared::clock::rfc3339(committed_at)
    );
}
