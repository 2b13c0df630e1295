//! The web dashboard in a real browser (Debian's headless Chromium, driven
//! over the DevTools protocol by tests/browser.py): the experiment page's
//! numbers change as runs finish without a reload, each page renders, and
//! beyond loopback the login form comes first. Screenshots of each page are
//! kept under target/test-artifacts/dashboard/.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

struct Browser {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Browser {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser.py");
        let mut child = Command::new(python_with_clients())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let mut browser = Browser {
            child,
            input,
            output,
        };
        let ready = browser.answer();
        assert_eq!(ready["ready"], true, "{ready}");
        browser
    }

    fn answer(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn send(&mut self, command: serde_json::Value) -> serde_json::Value {
        writeln!(self.input, "{command}").unwrap();
        let answer = self.answer();
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        answer
    }

    fn goto(&mut self, url: &str) {
        self.send(serde_json::json!({"op": "goto", "url": url}));
    }

    fn eval(&mut self, expr: &str) -> serde_json::Value {
        self.send(serde_json::json!({"op": "eval", "expr": expr}))["value"].clone()
    }

    /// An element's text while the page may be navigating: `None` when the
    /// browser answers that the page it was asked about went away meanwhile.
    fn text_while_navigating(&mut self, id: &str) -> Option<String> {
        let command = serde_json::json!({"op": "eval", "expr": text_of(id)});
        writeln!(self.input, "{command}").unwrap();
        let answer = self.answer();
        if let Some(error) = answer.get("error") {
            assert!(
                error.to_string().contains("navigated or closed"),
                "{command}: {answer}"
            );
            return None;
        }
        Some(answer["value"].as_str().unwrap_or_default().to_string())
    }

    fn text(&mut self, id: &str) -> String {
        self.eval(&text_of(id))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn shot(&mut self, name: &str) {
        let dir = artifacts();
        self.send(serde_json::json!({"op": "shot", "path": dir.join(format!("{name}.png"))}));
        assert!(
            std::fs::metadata(dir.join(format!("{name}.png")))
                .unwrap()
                .len()
                > 1000
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "{{\"op\": \"quit\"}}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The script that reads an element's text, empty when it is absent.
fn text_of(id: &str) -> String {
    format!("(document.getElementById({id:?}) || {{}}).textContent || ''")
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A coordinator serving HTTP on `http_listen`; returns it and the HTTP port.
fn coordinator_with_http(dir: &Path, http_listen: &str) -> (CoordinatorProcess, u16) {
    let token = write_token(dir, "dashboard-token");
    CoordinatorProcess::start_with_http(&dir.join("root"), &token, http_listen)
}

/// 16 runs of 0.3 s; the runs of i = 3 fail.
const SWEEP: &str = r#"name: live
run:
  kind: command
  command: ["sh", "-c", "sleep 0.3; echo 'working on {i}'; if [ {i} = 3 ]; then echo 'model refused: quota' >&2; exit 2; fi; echo '{{\"score\": {i}}}'"]
variations:
  - {param: i, values: [1, 2, 3, 4]}
runs_per_variation: 4
metrics:
  - {name: score, goal: maximize}
"#;

#[test]
fn the_experiment_page_updates_live_and_every_page_renders() {
    if !system_tool("chromium", &["--version"], "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, port) = coordinator_with_http(dir.path(), "127.0.0.1:0");
    let file = write_experiment(dir.path(), "live.yaml", SWEEP);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut browser = Browser::start();
    let base = format!("http://127.0.0.1:{port}");
    browser.goto(&format!("{base}/experiments/live"));
    assert_eq!(browser.text("state"), "running");
    let first = browser.text("ended");
    // A marker only this page load has: a reload would lose it.
    browser.eval("window.flotillaMarker = 42");
    let _worker = coordinator.join_worker("w1", 1, &dir.path().join("w1"));
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the page did not update: {seen:?}"
        );
        let ended = browser.text("ended");
        if ended != first && browser.text("state") == "running" {
            assert_eq!(
                browser.eval("window.flotillaMarker"),
                42,
                "the page was reloaded"
            );
            seen.insert(ended);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        browser
            .eval("Number(document.body.dataset.updates)")
            .as_f64()
            .unwrap()
            >= 2.0
    );
    browser.shot("experiment-running");
    wait_until("the experiment to complete", || {
        coordinator.status_json("live")["experiments"][0]["state"] == "completed"
    });
    // After the end the page shows the final figures and the failures (its
    // figures are refreshed every few seconds: reloaded until they are).
    let mut failures = String::new();
    wait_until("the failures on the experiment page", || {
        browser.goto(&format!("{base}/experiments/live"));
        failures = browser.text("failures");
        failures.contains("model refused: quota")
    });
    assert_eq!(browser.text("state"), "completed");
    assert_eq!(browser.text("succeeded"), "12");
    let variations = browser.text("variations");
    assert!(
        variations.contains("score (mean, 95% CI)") && variations.contains("var-004"),
        "{variations}"
    );
    browser.shot("experiment");
    browser.goto(&format!("{base}/"));
    assert!(browser.text("experiments").contains("live"));
    browser.shot("experiments");
    browser.goto(&format!("{base}/workers"));
    assert!(browser.text("workers").contains("w1"));
    browser.shot("workers");
    browser.goto(&format!("{base}/experiments/live/runs/var-003-run-001"));
    assert!(browser.text("stderr").contains("model refused: quota"));
    assert!(browser.text("attempts").contains("failed"));
    browser.shot("run");
    // A page that does not exist says why, as a page.
    browser.goto(&format!("{base}/experiments/nope"));
    assert_eq!(browser.text("error"), "no experiment named 'nope'");
    // The same run as JSON.
    let run = browser.eval(&format!(
        "fetch('{base}/api/v1/experiments/live/runs/var-003-run-001').then(r => r.json())"
    ));
    assert_eq!(run["attempts"][0]["outcome"], "failed", "{run}");
    assert!(run["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("model refused"));
    // results.csv downloads with every run.
    let csv = browser.eval(&format!(
        "fetch('{base}/experiments/live/results.csv').then(r => r.text())"
    ));
    assert_eq!(csv.as_str().unwrap().lines().count(), 17);
}

#[test]
fn beyond_loopback_the_dashboard_asks_for_the_token_first() {
    if !system_tool("chromium", &["--version"], "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 0.0.0.0 listens beyond loopback; the browser only ever visits 127.0.0.1.
    let (coordinator, port) = coordinator_with_http(dir.path(), "0.0.0.0:0");
    let file = write_experiment(dir.path(), "live.yaml", SWEEP);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut browser = Browser::start();
    let base = format!("http://127.0.0.1:{port}");
    browser.goto(&format!("{base}/experiments/live"));
    assert_eq!(browser.eval("location.pathname"), "/login");
    browser.shot("login");
    browser.eval("document.getElementById('token').value = 'not-it'; document.querySelector('form').submit()");
    browser.send(serde_json::json!({"op": "settle"}));
    assert!(browser
        .eval("document.body.textContent")
        .as_str()
        .unwrap()
        .contains("does not match"));
    browser.eval("document.getElementById('token').value = 'dashboard-token'; document.querySelector('form').submit()");
    browser.send(serde_json::json!({"op": "settle"}));
    assert_eq!(browser.eval("location.pathname"), "/");
    assert!(browser.text("experiments").contains("live"));
    // The cookie now opens every page.
    browser.goto(&format!("{base}/experiments/live"));
    assert_eq!(browser.text("state"), "running");
}

/// Four runs, one at a time; the last to run fails.
const LAST_FAILS: &str = r#"name: last-fails
description: "The last run fails: its failure must show when the experiment ends."
run:
  kind: command
  command: ["sh", "-c", "sleep 0.3; if [ {i} = 2 ] && [ $FLOTILLA_REPETITION = 2 ]; then echo 'ran out of patience' >&2; exit 3; fi; echo '{{\"score\": {i}}}'"]
variations:
  - {param: i, values: [1, 2]}
runs_per_variation: 2
retries: {max_attempts: 1}
"#;

#[test]
fn the_open_experiment_page_shows_a_failure_at_the_very_end_and_when_it_started() {
    if !system_tool("chromium", &["--version"], "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, port) = coordinator_with_http(dir.path(), "127.0.0.1:0");
    let file = write_experiment(dir.path(), "last.yaml", LAST_FAILS);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/experiments/last-fails"));
    browser.eval("window.flotillaMarker = 7");
    assert_eq!(
        browser.text("description"),
        "The last run fails: its failure must show when the experiment ends."
    );
    let started = browser.text("started");
    assert!(
        started.len() == "2026-12-04 16:35:51 UTC".len() && started.ends_with(" UTC"),
        "{started}"
    );
    assert!(browser.text("elapsed").ends_with('s'));
    assert!(browser.text("failures").contains("No failures"));
    let _worker = coordinator.join_worker("w1", 1, &dir.path().join("w1"));
    wait_until("the page to show the end", || {
        browser.text("state") == "completed"
    });
    // The same update that says it ended shows the last run's failure: the
    // page was not reloaded, and no figures from before the end remain.
    assert_eq!(
        browser.eval("window.flotillaMarker"),
        7,
        "the page was reloaded"
    );
    let failures = browser.text("failures");
    assert!(failures.contains("ran out of patience"), "{failures}");
    assert_eq!(browser.text("failed"), "1");
    browser.shot("experiment-ended-with-a-failure");
}

#[test]
fn the_experiment_page_says_what_the_response_cache_saved() {
    if !system_tool("chromium", &["--version"], "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, port) = coordinator_with_http(dir.path(), "127.0.0.1:0");
    let _worker = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    for name in ["asked", "answered-again"] {
        let file = write_experiment(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nrun:\n  kind: chat\n  model: sim/echo\n  prompt: \"Say {{word}}.\"\n\
                 variations:\n  - param: word\n    values: [alpha, beta]\nruns_per_variation: 2\n"
            ),
        );
        run_ok(
            coordinator
                .cli(&["submit", "--wait", "--no-progress"])
                .arg(&file),
        );
    }
    let mut browser = Browser::start();
    let base = format!("http://127.0.0.1:{port}");
    browser.goto(&format!("{base}/experiments/asked"));
    assert_eq!(browser.text("cache"), "0 of 4 calls");
    browser.goto(&format!("{base}/experiments/answered-again"));
    let cache = browser.text("cache");
    assert!(
        cache.starts_with("4 of 4 calls, $") && cache.ends_with(" saved"),
        "{cache}"
    );
    browser.shot("experiment-cache");
}

#[test]
fn the_experiment_page_shows_each_variation_live_eliminated_or_decided() {
    if !system_tool("chromium", &["--version"], "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, port) = coordinator_with_http(dir.path(), "127.0.0.1:0");
    let _worker = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    // The sim judge scores echoes of a word far above random answers.
    let file = write_experiment(
        dir.path(),
        "adaptive.yaml",
        "name: adaptive\nrun:\n  kind: chat\n  model: \"{model}\"\n  prompt: \"Say {word}.\"\n\
         \x20 score:\n    - {metric: said, regex: \"{word}\"}\n\
         params: {word: alpha}\nvariations:\n  - param: model\n    values: [sim/echo, sim/always-defect]\n\
         runs_per_variation: 40\ncache: off\nmetrics:\n  - {name: said, goal: maximize}\n\
         sampling: {mode: adaptive, metric: said}\n",
    );
    run_ok(
        coordinator
            .cli(&["submit", "--wait", "--no-progress"])
            .arg(&file),
    );
    let mut browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/experiments/adaptive"));
    let standings = browser.eval(
        "Array.from(document.querySelectorAll('.standing')).map(e => e.textContent).join(' | ')",
    );
    let standings = standings.as_str().unwrap_or_default().to_string();
    assert!(
        standings.starts_with("best, the last standing")
            && standings.contains("eliminated by var-001"),
        "{standings}"
    );
    browser.shot("experiment-adaptive");
}

/// 60 runs over two colours; a run's score is 100 × variation + repetition.
const EXPLORED: &str = r#"name: explored
run:
  kind: command
  command: ["sh", "-c", "echo \"{{\\\"score\\\": $((FLOTILLA_VARIATION * 100 + FLOTILLA_REPETITION))}}\""]
variations:
  - {param: color, values: [red, blue]}
runs_per_variation: 30
metrics:
  - {name: score, goal: maximize}
"#;

#[test]
fn the_runs_explorer_pages_sorts_filters_and_opens_runs() {
    if !system_tool("chromium", &["--version"], "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, port) = coordinator_with_http(dir.path(), "127.0.0.1:0");
    let _worker = coordinator.join_worker("w1", 4, &dir.path().join("w1"));
    let file = write_experiment(dir.path(), "explored.yaml", EXPLORED);
    run_ok(
        coordinator
            .cli(&["submit", "--wait", "--no-progress"])
            .arg(&file),
    );
    let mut browser = Browser::start();
    let base = format!("http://127.0.0.1:{port}");
    let rows = "document.querySelectorAll('#runs tr').length - 1";
    let first_cell = |browser: &mut Browser, column: usize| -> String {
        browser
            .eval(&format!(
                "document.querySelectorAll('#runs tr')[1].children[{column}].textContent"
            ))
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // The experiment page shows its config and progress over time, and links
    // to every run, 50 to a page.
    browser.goto(&format!("{base}/experiments/explored"));
    let config = browser.text("config");
    assert!(
        config.contains("name: explored") && config.contains("runs_per_variation: 30"),
        "{config}"
    );
    let chart = browser.eval("document.querySelector('#progress-chart figcaption').textContent");
    assert!(
        chart
            .as_str()
            .unwrap()
            .starts_with("■ runs ended: 60 of 60 · ■ spent: $0.00 · over "),
        "{chart}"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#progress-chart polyline').length"),
        1
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#actions form').length"),
        0,
        "an ended experiment has nothing to cancel"
    );
    let href = browser.eval("document.getElementById('runs-link').href");
    browser.goto(href.as_str().unwrap());
    let seen = browser.eval("location.href + ' ' + document.body.innerText.slice(0, 300)");
    assert_eq!(browser.text("matching"), "60 runs match", "{seen}");
    assert_eq!(browser.eval(rows), 50);
    assert_eq!(first_cell(&mut browser, 0), "var-001-run-001");
    browser.shot("runs-explorer");
    let next = browser.eval("document.getElementById('next').href");
    browser.goto(next.as_str().unwrap());
    assert_eq!(browser.text("page"), "2");
    assert_eq!(browser.eval(rows), 10);

    // The score column's header sorts by it; a second click reverses.
    let score_header = "[...document.querySelectorAll('#runs th a')].find(a => a.textContent.startsWith('score')).href";
    let ascending = browser.eval(score_header);
    browser.goto(ascending.as_str().unwrap());
    assert_eq!(first_cell(&mut browser, 0), "var-001-run-001");
    let descending = browser.eval(score_header);
    browser.goto(descending.as_str().unwrap());
    assert_eq!(first_cell(&mut browser, 0), "var-002-run-030");
    assert_eq!(first_cell(&mut browser, 7), "230");

    // The filter form keeps the sort: blue's runs only, best first.
    browser.eval(
        "document.querySelector('select[name=\"p.color\"]').value = 'blue'; \
         document.getElementById('filters').submit(); true",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    // Polled while the submitted form navigates: an answer may come from the page leaving.
    while browser.text_while_navigating("matching").as_deref() != Some("30 runs match") {
        assert!(Instant::now() < deadline, "the filter did not apply");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(first_cell(&mut browser, 6), "blue");
    assert_eq!(first_cell(&mut browser, 7), "230");

    // A variation's row on the experiment page opens its runs; a run's row opens the run.
    browser.goto(&format!("{base}/experiments/explored"));
    let variation =
        browser.eval("document.querySelector('#variations a[href$=\"runs?variation=1\"]').href");
    browser.goto(variation.as_str().unwrap());
    assert_eq!(browser.text("matching"), "30 runs match");
    // A variation's page shows each metric's distribution over all its runs.
    let caption = browser.eval("document.querySelector('figure.distribution[data-metric=\"score\"] figcaption').textContent");
    assert_eq!(
        caption,
        "score: n=30, mean 115.5, median 115.5, from 101 to 130"
    );
    browser.shot("runs-of-a-variation");
    let run = browser.eval("document.querySelector('#runs tr:nth-child(2) a').href");
    browser.goto(run.as_str().unwrap());
    let heading = browser.eval("document.querySelector('h1').textContent");
    assert!(
        heading.as_str().unwrap().contains("var-001-run-001"),
        "{heading}"
    );

    // A bad query says what was wrong and what would be valid.
    browser.goto(&format!("{base}/experiments/explored/runs?sort=colour"));
    let error = browser.text("error");
    assert!(error.contains("sort 'colour' is not a column"), "{error}");
}

#[test]
fn the_experiment_page_cancels_and_resumes() {
    if !system_tool("chromium", &["--version"], "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, port) = coordinator_with_http(dir.path(), "127.0.0.1:0");
    let _worker = coordinator.join_worker("w1", 1, &dir.path().join("w1"));
    let file = write_experiment(
        dir.path(),
        "slow.yaml",
        "name: slow\nrun: {kind: command, command: [sh, -c, \"sleep 0.2; echo '{{\\\"score\\\": 1}}'\"]}\n\
         variations: [{param: i, values: [1, 2]}]\nruns_per_variation: 30\n",
    );
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut browser = Browser::start();
    let page = format!("http://127.0.0.1:{port}/experiments/slow");
    browser.goto(&page);
    assert_eq!(browser.text("state"), "running");
    let wait_for_state = |browser: &mut Browser, state: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            browser.goto(&page);
            if browser.text("state") == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the experiment never became {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    browser.eval("document.querySelector('#cancel button').click(); true");
    // The coordinator has the click before the page is read again (a new
    // navigation would abort the form's POST).
    let state = |coordinator: &CoordinatorProcess| {
        coordinator
            .try_status_json("slow")
            .map(|s| {
                s["experiments"][0]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    wait_until("the cancel button's POST", || {
        state(&coordinator) == "cancelled"
    });
    wait_for_state(&mut browser, "cancelled");
    let cancelled = coordinator.status_json("slow");
    assert!(
        cancelled["experiments"][0]["counts"]["cancelled"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{cancelled}"
    );
    browser.shot("experiment-cancelled");
    browser.eval("document.querySelector('#resume button').click(); true");
    wait_until("the resume button's POST", || {
        state(&coordinator) != "cancelled"
    });
    wait_for_state(&mut browser, "completed");
    assert_eq!(browser.text("succeeded"), "60");

    // A form posted from another site's page is refused.
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /experiments/slow/resume HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://elsewhere.example\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("cannot act on this dashboard"), "{answer}");
}
