//! The live display in a real terminal: `flotilla run` in a tmux pane, whose
//! captured contents must show the display updating, provider limits that
//! bind, and an ETA that comes true.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// A tmux server of the test's own (its own socket), killed with what runs in it.
struct Tmux {
    socket: String,
    server_pid: Option<i32>,
    program_pid_file: PathBuf,
}

impl Tmux {
    fn start(socket: String, script: &Path, program_pid_file: PathBuf) -> Tmux {
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "170", "-y", "45", "bash"])
            .arg(script)
            .status()
            .expect("tmux is installed (.ci/run installs it)");
        assert!(status.success());
        let mut tmux = Tmux {
            socket,
            server_pid: None,
            program_pid_file,
        };
        let pid = tmux.command(&["display-message", "-p", "#{pid}"]);
        tmux.server_pid = pid.trim().parse().ok();
        tmux
    }

    fn command(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        text(&output.stdout)
    }

    fn screen(&self) -> String {
        self.command(&["capture-pane", "-p"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let pids = [
            std::fs::read_to_string(&self.program_pid_file)
                .ok()
                .and_then(|pid| pid.trim().parse().ok()),
            self.server_pid,
        ];
        for pid in pids.into_iter().flatten() {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// `ETA 1m05s` → 65 s.
fn eta_of(screen: &str) -> Option<Duration> {
    let words = screen.split("ETA ").nth(1)?.split_whitespace().next()?;
    let mut seconds = 0u64;
    let mut number = String::new();
    for c in words.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let value: u64 = number.parse().ok()?;
                number.clear();
                seconds += value
                    * match c {
                        'h' => 3600,
                        'm' => 60,
                        _ => 1,
                    };
            }
            _ => break,
        }
    }
    Some(Duration::from_secs(seconds))
}

/// `[====>   ] 9/24 ended` → 9.
fn ended_of(screen: &str) -> Option<u64> {
    let before = screen.split("/24 ended").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

#[test]
fn the_terminal_display_shows_progress_limits_that_bind_and_an_eta_that_comes_true() {
    if !system_tool("tmux", &["-V"], "tmux") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The example at 240 requests a minute per model and 4 rounds: 72 calls
    // of the busiest model, about 20 s where the limit binds throughout.
    let (copy, _server) = prisoners_dilemma_copy(dir.path(), 240);
    let experiment = std::fs::read_to_string(copy.join("experiment.yaml"))
        .unwrap()
        .replace("rounds: 10", "rounds: 4");
    std::fs::write(copy.join("experiment.yaml"), experiment).unwrap();
    let done = dir.path().join("exit-code");
    let pid_file = dir.path().join("pid");
    let script = dir.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "export PATH='{path}'\ncd '{copy}'\n'{flotilla}' run experiment.yaml --providers providers.yaml --workers 2 --slots 4 --root '{root}' &\necho $! > '{pid}'\nwait $!\necho $? > '{done}.tmp' && mv '{done}.tmp' '{done}'\nsleep 600\n",
            path = path_with_clients(),
            copy = copy.display(),
            flotilla = flotilla_bin().display(),
            root = dir.path().join("experiments").display(),
            pid = pid_file.display(),
            done = done.display(),
        ),
    )
    .unwrap();
    let socket = format!("flotilla-test-{}", std::process::id());
    let tmux = Tmux::start(socket, &script, pid_file);

    let start = Instant::now();
    let mut screens = Vec::new();
    let mut binding_seen = false;
    let mut forecast: Option<(Instant, Duration)> = None;
    while !done.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the run did not end; last screen:\n{}",
            screens.last().cloned().unwrap_or_default()
        );
        let screen = tmux.screen();
        binding_seen |=
            screen.contains("rpm in the last minute") && screen.contains("(the limit binds)");
        // The first ETA once a third of the runs have ended, to check against the real end.
        if forecast.is_none() && ended_of(&screen).is_some_and(|ended| (8..20).contains(&ended)) {
            if let Some(eta) = eta_of(&screen) {
                forecast = Some((Instant::now(), eta));
            }
        }
        screens.push(screen);
        std::thread::sleep(Duration::from_millis(500));
    }
    let ended_at = Instant::now();
    let exit = std::fs::read_to_string(&done).unwrap();
    let all = screens.join("\n----\n");
    assert_eq!(exit.trim(), "0", "{all}");
    // The display updated in place: the count of ended runs moved on screen.
    let counts: std::collections::BTreeSet<u64> =
        screens.iter().filter_map(|s| ended_of(s)).collect();
    assert!(counts.len() >= 3, "{counts:?}\n{all}");
    assert!(
        screens
            .iter()
            .any(|s| s.contains("runs/min") && s.contains("workers: 2 connected")),
        "{all}"
    );
    assert!(
        screens
            .iter()
            .any(|s| s.contains("var-008") && s.contains("\"agent_a.model\"")),
        "{all}"
    );
    assert!(binding_seen, "no screen showed a limit binding:\n{all}");
    // Variation lines carry the primary metric with its 95% interval as runs
    // finish, and one of them is marked as leading.
    let scored =
        regex::Regex::new(r"var-00\d .* ok  cooperation_rate [0-9.]+ \[-?[0-9.e-]+, [0-9.e-]+\]")
            .unwrap();
    assert!(screens.iter().any(|s| scored.is_match(s)), "{all}");
    assert!(screens.iter().any(|s| s.contains("◀ leads")), "{all}");
    // The ETA came true within a factor of three (the sweep runs at the limit's pace).
    let (at, eta) =
        forecast.unwrap_or_else(|| panic!("no ETA while a third of the runs had ended:\n{all}"));
    let actual = ended_at - at;
    assert!(
        eta.as_secs_f64() <= actual.as_secs_f64() * 3.0 + 5.0
            && eta.as_secs_f64() * 3.0 + 5.0 >= actual.as_secs_f64(),
        "ETA {eta:?}, the run ended {actual:?} later\n{all}"
    );
    // The final screen keeps the summary.
    let last = tmux.screen();
    assert!(last.contains("completed  24 runs: 24 succeeded"), "{last}");
}
