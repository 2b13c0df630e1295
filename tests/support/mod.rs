//! Test harness: real `flotilla` processes on 127.0.0.1 ephemeral ports,
//! readiness waited on with deadlines, everything killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(120);

pub fn flotilla_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flotilla"))
}

pub fn flotilla(args: &[&str]) -> Command {
    let mut command = Command::new(flotilla_bin());
    command
        .args(args)
        .env_remove("FLOTILLA_ROOT")
        .env_remove("FLOTILLA_COORDINATOR")
        .env_remove("FLOTILLA_TOKEN_FILE");
    command
}

pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("flotilla starts");
    assert!(
        output.status.success(),
        "command failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `condition` until it holds; panics with `what` after the deadline.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (SIGKILL) on drop; its stderr is collected.
pub struct Process {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Process {
    pub fn spawn(mut command: Command) -> Process {
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = command.spawn().expect("flotilla starts");
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with '{needle}' within the deadline; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.try_recv() {
                    self.log.push(line);
                }
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "process did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct CoordinatorProcess {
    pub process: Process,
    pub address: String,
    pub root: PathBuf,
    pub token_file: PathBuf,
}

impl CoordinatorProcess {
    pub fn start(
        root: &Path,
        token_file: &Path,
        listen: &str,
        lease_timeout: &str,
    ) -> CoordinatorProcess {
        let mut command = flotilla(&[
            "coordinator",
            "start",
            "--listen",
            listen,
            "--lease-timeout",
            lease_timeout,
        ]);
        command
            .arg("--root")
            .arg(root)
            .arg("--token-file")
            .arg(token_file);
        let process = Process::spawn(command);
        Self::listening(process, root, token_file)
    }

    /// Waits for the coordinator's listening line and takes its address.
    pub fn listening(mut process: Process, root: &Path, token_file: &Path) -> CoordinatorProcess {
        let line = process.wait_for_line("coordinator listening");
        let address = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("address="))
            .expect("listening line names the address")
            .to_string();
        CoordinatorProcess {
            process,
            address,
            root: root.to_path_buf(),
            token_file: token_file.to_path_buf(),
        }
    }

    /// A coordinator also serving HTTP on `http_listen`; returns it and the
    /// HTTP port (the test connects to it on 127.0.0.1 whatever it listens on).
    pub fn start_with_http(
        root: &Path,
        token_file: &Path,
        http_listen: &str,
    ) -> (CoordinatorProcess, u16) {
        let mut command = flotilla(&[
            "coordinator",
            "start",
            "--listen",
            "127.0.0.1:0",
            "--http",
            http_listen,
        ]);
        command
            .arg("--root")
            .arg(root)
            .arg("--token-file")
            .arg(token_file);
        let mut process = Process::spawn(command);
        let port = http_port(&process.wait_for_line("HTTP listening"));
        let coordinator = Self::listening(process, root, token_file);
        (coordinator, port)
    }

    /// A CLI command aimed at this coordinator.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut command = flotilla(args);
        command
            .arg("--coordinator")
            .arg(&self.address)
            .arg("--token-file")
            .arg(&self.token_file);
        command
    }

    pub fn status_json(&self, name: &str) -> serde_json::Value {
        let output = run_ok(&mut self.cli(&["status", name, "--json"]));
        serde_json::from_slice(&output.stdout).expect("status prints JSON")
    }

    /// Status, or `None` while the experiment is not known yet.
    pub fn try_status_json(&self, name: &str) -> Option<serde_json::Value> {
        let output = self.cli(&["status", name, "--json"]).output().ok()?;
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).expect("status prints JSON"))
    }

    pub fn join_worker(&self, name: &str, slots: u32, work_dir: &Path) -> Process {
        let mut command = flotilla(&[
            "worker",
            "join",
            &self.address,
            "--name",
            name,
            "--slots",
            &slots.to_string(),
        ]);
        command
            .arg("--token-file")
            .arg(&self.token_file)
            .arg("--work-dir")
            .arg(work_dir);
        let mut process = Process::spawn(command);
        process.wait_for_line("joined");
        process
    }
}

/// The port of the URL in the coordinator's "HTTP listening" line.
pub fn http_port(line: &str) -> u16 {
    line.split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|host| host.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .expect("the line names the URL")
}

/// Asserts that an experiment's runs were handed back by a draining worker:
/// `pending` runs are pending again, none failed, and `handed_back`
/// attempts are recorded as handed back.
pub fn assert_handed_back(
    coordinator: &CoordinatorProcess,
    name: &str,
    pending: u64,
    handed_back: i64,
) {
    let json = coordinator.status_json(name);
    let counts = &json["experiments"][0]["counts"];
    assert_eq!(counts["pending"], pending, "{json}");
    assert_eq!(counts["failed"], 0, "{json}");
    assert_eq!(
        count(
            &coordinator.root,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'handed_back'"
        ),
        handed_back
    );
}

pub fn write_token(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// Counts rows of the database under `root` matching `sql` (a `SELECT COUNT(*) ...`).
pub fn count(root: &Path, sql: &str) -> i64 {
    let connection = rusqlite::Connection::open(root.join("flotilla.db")).unwrap();
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    connection.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// Writes an experiment whose runs are `sh -c SCRIPT` in `dir`; returns the file's path.
pub fn write_experiment(dir: &Path, file_name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(file_name);
    std::fs::write(&path, body).unwrap();
    path
}

/// Whether an optional system tool a test needs is here (`tool` runs with
/// `probe_args`). Without it the test skips, saying why — unless `CI` is
/// set: `.ci/run` installs every such tool (the Debian package `package`),
/// so there its absence is a failure, not a reason to skip.
pub fn system_tool(tool: &str, probe_args: &[&str], package: &str) -> bool {
    let found = Command::new(tool)
        .args(probe_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    match tool_decision(found, std::env::var_os("CI").is_some(), tool, package) {
        Ok(run) => run,
        Err(failure) => panic!("{failure}"),
    }
}

/// The rule of [`system_tool`]: run when the tool is here; else skip with a
/// printed reason, or fail under CI.
pub fn tool_decision(found: bool, ci: bool, tool: &str, package: &str) -> Result<bool, String> {
    match (found, ci) {
        (true, _) => Ok(true),
        (false, true) => Err(format!(
            "{tool} is not installed; .ci/run installs it (Debian's {package})"
        )),
        (false, false) => {
            eprintln!("skipped: {tool} is not installed (Debian's {package}; .ci/run installs it)");
            Ok(false)
        }
    }
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Reads results.csv into rows of (column -> cell).
pub fn read_csv(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|line| {
            header
                .iter()
                .cloned()
                .zip(line.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// A Python with the official `openai`, `anthropic` and `ollama` clients
/// (tests/python-clients.txt): `$FLOTILLA_TEST_PYTHON`, or a venv under
/// target/ made on first use (`.ci/run` makes it before the tests).
pub fn python_with_clients() -> PathBuf {
    if let Some(python) = std::env::var_os("FLOTILLA_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = repository.join("target/python-clients");
    let python = venv.join("bin/python");
    std::fs::create_dir_all(repository.join("target")).unwrap();
    // One test process makes the venv; the others wait for it.
    let lock = std::fs::File::create(repository.join("target/python-clients.lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function owns; released when `lock` drops.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let ready = |python: &Path| {
        // kubectl (with kustomize) comes as a wheel too, for the deploy tests.
        python.with_file_name("kubectl").exists()
            && Command::new(python)
                .args([
                    "-c",
                    "import openai, anthropic, ollama, prometheus_client, websocket",
                ])
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !ready(&python) {
        run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run_ok(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "-r"])
                .arg(repository.join("tests/python-clients.txt")),
        );
        assert!(
            ready(&python),
            "the venv at {} lacks the clients",
            venv.display()
        );
    }
    python
}

/// A `flotilla sim-server` on an ephemeral port of 127.0.0.1 with `args`
/// added; returns the process (killed on drop) and its address.
pub fn sim_server(args: &[&str]) -> (Process, String) {
    let mut command = flotilla(&["sim-server", "--listen", "127.0.0.1:0"]);
    command.args(args);
    let mut server = Process::spawn(command);
    let line = server.wait_for_line("sim-server listening");
    let address = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .expect("the line names the address")
        .to_string();
    (server, address)
}

/// The LLM calls a run recorded: its calls.jsonl, one object per line.
pub fn calls_of(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("calls.jsonl"))
        .unwrap_or_else(|e| panic!("{}: {e}", run_dir.join("calls.jsonl").display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A copy of examples/llm-prisoners-dilemma in `dir` whose provider is a
/// sim-server on an ephemeral port at `rpm` requests a minute per model, the
/// providers file saying the same; returns the copy and the server.
pub fn prisoners_dilemma_copy(dir: &Path, rpm: u32) -> (PathBuf, Process) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/llm-prisoners-dilemma");
    let copy = dir.join("example");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["game.py", "experiment.yaml", "providers.yaml"] {
        std::fs::copy(example.join(file), copy.join(file)).unwrap();
    }
    let (server, address) = sim_server(&["--rpm", &rpm.to_string()]);
    let providers = std::fs::read_to_string(copy.join("providers.yaml"))
        .unwrap()
        .replace("127.0.0.1:8701", &address)
        .replace("rpm: 60}", &format!("rpm: {rpm}}}"));
    std::fs::write(copy.join("providers.yaml"), providers).unwrap();
    (copy, server)
}

/// A PATH whose `python3` is the one with the official clients: for examples
/// whose command says `python3`.
pub fn path_with_clients() -> String {
    let python = python_with_clients();
    format!(
        "{}:{}",
        python.parent().expect("the venv's bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// PEM files of a test CA, a coordinator certificate it signed (for
/// `localhost` and 127.0.0.1) and a client certificate it signed, made fresh.
pub struct TestCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCerts {
    pub fn generate(dir: &Path, ca_name: &str) -> TestCerts {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, stem);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            let cert_path = dir.join(format!("{stem}.pem"));
            let key_path = dir.join(format!("{stem}.key"));
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "coordinator",
        );
        let (client_cert, client_key) = leaf(
            vec!["worker-1".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        TestCerts {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}

/// kubectl (with kustomize built in), from the test venv.
pub fn kubectl() -> PathBuf {
    python_with_clients().with_file_name("kubectl")
}

/// How many calls the sim-server at `address` has served (its `/stats`).
pub fn sim_server_served(address: &str) -> u64 {
    sim_server_stats(address)["served"].as_u64().unwrap()
}

/// The sim-server's `/stats`: calls served, refused and billed.
pub fn sim_server_stats(address: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /stats HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("/stats answered {response:?}: {e}"))
}
