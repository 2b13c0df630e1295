//! The command line's conventions: `--version` names the commit, shell
//! completions and manual pages come from the command definitions.

mod support;

use std::process::Command;

use support::{flotilla, run_ok, system_tool, text};

#[test]
fn version_names_the_commit_it_was_built_from() {
    let version = text(&run_ok(&mut flotilla(&["--version"])).stdout);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(head) if head.status.success() => {
            let head = text(&head.stdout).trim().to_string();
            assert_eq!(
                version.trim(),
                format!("flotilla {} (commit {head})", env!("CARGO_PKG_VERSION"))
            );
        }
        // A build from a source archive has no checkout to compare with.
        _ => assert!(version.starts_with("flotilla "), "{version}"),
    }
}

/// What bash offers after typing `line` (the cursor at its end).
fn bash_completes(script: &std::path::Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let program = format!(
        "source {script}\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT={point}\n\
         _flotilla flotilla '{last}' '{previous}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script.display(),
        words = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        cword = words.len() - 1,
        point = line.len(),
        last = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(program)
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("flotilla.bash");
    std::fs::write(
        &script,
        run_ok(&mut flotilla(&["completions", "bash"])).stdout,
    )
    .unwrap();

    let subcommands = bash_completes(&script, "flotilla re");
    assert!(
        subcommands.contains(&"report".to_string()),
        "{subcommands:?}"
    );
    assert!(
        subcommands.contains(&"resume".to_string()),
        "{subcommands:?}"
    );
    assert!(!subcommands.contains(&"run".to_string()), "{subcommands:?}");

    let options = bash_completes(&script, "flotilla run --wor");
    assert_eq!(options, vec!["--workers".to_string()]);
    let shells = bash_completes(&script, "flotilla completions ");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&shell.to_string()), "{shells:?}");
    }
}

#[test]
fn zsh_and_fish_completions_parse_and_name_every_subcommand() {
    for (shell, package) in [("zsh", "zsh"), ("fish", "fish")] {
        let script = text(&run_ok(&mut flotilla(&["completions", shell])).stdout);
        for subcommand in [
            "run",
            "coordinator",
            "worker",
            "export",
            "completions",
            "man",
        ] {
            assert!(
                script.contains(subcommand),
                "{shell} script lacks {subcommand}"
            );
        }
        assert!(
            script.contains("workers"),
            "{shell} script lacks run's --workers"
        );
        if !system_tool(shell, &["-c", "true"], package) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("flotilla.{shell}"));
        std::fs::write(&path, &script).unwrap();
        let checked = Command::new(shell).arg("-n").arg(&path).output().unwrap();
        assert!(
            checked.status.success(),
            "{shell} -n refuses the script: {}",
            text(&checked.stderr)
        );
    }
    let refused = flotilla(&["completions", "powershell"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("possible values: bash, zsh, fish"));
}

#[test]
fn manual_pages_cover_every_subcommand_and_render() {
    let page = text(&run_ok(&mut flotilla(&["man"])).stdout);
    assert!(page.starts_with(".ie"), "{}", &page[..200.min(page.len())]);
    assert!(page.contains(".TH flotilla 1"));
    for subcommand in [
        "run",
        "validate",
        "submit",
        "export",
        "cache",
        "completions",
    ] {
        assert!(
            page.contains(&format!("flotilla\\-{subcommand}(1)")),
            "no {subcommand}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    run_ok(&mut flotilla(&[
        "man",
        "--out-dir",
        pages.to_str().unwrap(),
    ]));
    let run_page = std::fs::read_to_string(pages.join("flotilla-run.1")).unwrap();
    assert!(run_page.contains("\\-\\-workers"), "{run_page}");
    assert!(pages.join("flotilla-coordinator-start.1").exists());
    assert!(pages.join("flotilla-cache-prune.1").exists());

    // -k: pages are UTF-8 (help texts use dashes and ×), read through preconv as man does.
    if !system_tool("groff", &["--version"], "groff-base") {
        return;
    }
    let rendered = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
        .arg(pages.join("flotilla-run.1"))
        .output()
        .unwrap();
    assert!(rendered.status.success());
    assert!(
        text(&rendered.stderr).trim().is_empty(),
        "groff warns: {}",
        text(&rendered.stderr)
    );
}
