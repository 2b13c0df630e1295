//! deploy/: the files that start Flotilla under Kubernetes, Docker Compose,
//! systemd and Slurm name only commands, flags, ports, probes and objects
//! that exist. Images cannot be built here (no container registry), so the
//! commands are checked against the binary's own `--help`; the Kubernetes
//! manifests are rendered by `kubectl kustomize`; the units are read by
//! `systemd-analyze verify`. (deploy/slurm/ also runs for real: tests/slurm.rs.)

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The long flags `flotilla SUBCOMMAND… --help` lists.
fn flags_of(subcommand: &[&str]) -> BTreeSet<String> {
    let output = run_ok(flotilla(subcommand).arg("--help"));
    text(&output.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.split(['=', '<']).next().unwrap().to_string())
        .collect()
}

/// Checks one flotilla command line (without the program): its subcommand
/// exists and each of its flags is one that subcommand takes. Returns the
/// value given to each flag.
fn check_command(words: &[String], whence: &str) -> BTreeMap<String, String> {
    let nested = ["coordinator", "worker"];
    let depth = if nested.contains(&words[0].as_str()) {
        2
    } else {
        1
    };
    assert!(
        words.len() >= depth,
        "{whence}: '{}' names no subcommand",
        words.join(" ")
    );
    let subcommand: Vec<&str> = words[..depth].iter().map(String::as_str).collect();
    let help = flotilla(&subcommand).arg("--help").output().unwrap();
    assert!(
        help.status.success(),
        "{whence}: `flotilla {}` is no command: {}",
        subcommand.join(" "),
        text(&help.stderr)
    );
    let known = flags_of(&subcommand);
    let mut values = BTreeMap::new();
    let mut positional = 0;
    let mut rest = words[depth..].iter().peekable();
    while let Some(word) = rest.next() {
        if let Some(flag) = word.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            let long = format!("--{name}");
            assert!(
                known.contains(&long),
                "{whence}: `flotilla {}` has no {long}; it takes {known:?}",
                subcommand.join(" ")
            );
            let value = inline.or_else(|| rest.next_if(|next| !next.starts_with("--")).cloned());
            values.insert(long, value.unwrap_or_default());
        } else {
            values.insert(format!("#{positional}"), word.clone());
            positional += 1;
        }
    }
    values
}

/// The duration flags take what the binary's duration parser takes.
fn check_durations(values: &BTreeMap<String, String>, whence: &str) {
    for flag in [
        "--drain-timeout",
        "--lease-timeout",
        "--timeout",
        "--latency",
    ] {
        if let Some(value) = values.get(flag) {
            assert!(
                flotilla_shared::duration::parse_duration(value).is_ok(),
                "{whence}: {flag} {value} is not a duration"
            );
        }
    }
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).expect("valid YAML")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `kubectl kustomize` of a copy of deploy/k8s/, with the two files a user
/// creates (the token, the provider keys).
fn render(overlay: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("k8s");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(deploy_dir().join("k8s"))
            .arg(&copy),
    );
    std::fs::write(copy.join("base/token.txt"), "a-token\n").unwrap();
    std::fs::write(
        copy.join("base/provider-keys.env"),
        "OPENAI_API_KEY=sk-test\n",
    )
    .unwrap();
    let output = run_ok(
        Command::new(kubectl())
            .arg("kustomize")
            .arg(copy.join(overlay)),
    );
    yaml_documents(&text(&output.stdout))
}

struct Manifests {
    objects: Vec<Value>,
}

impl Manifests {
    fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment")
    }
}

/// Every object a pod refers to exists; every flotilla container's command
/// line, ports, probes and mounted files match the binary and each other.
fn check_manifests(manifests: &Manifests, overlay: &str) {
    for workload in manifests.workloads() {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let whence = format!("{overlay}: {name}");
        let pod = &workload["spec"]["template"]["spec"];
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        let selector = &workload["spec"]["selector"]["matchLabels"];
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(
                &labels[key], value,
                "{whence}: the selector matches the pod"
            );
        }
        if workload["kind"] == "StatefulSet" {
            let service = workload["spec"]["serviceName"].as_str().unwrap();
            let governing = manifests.named("Service", service);
            assert!(governing.is_some(), "{whence}: Service {service}");
            assert_eq!(
                governing.unwrap()["spec"]["clusterIP"],
                "None",
                "{whence}: its governing Service is headless"
            );
        }
        // Volumes: the Secrets and ConfigMaps they name exist.
        let mut volumes = BTreeMap::new();
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            let volume_name = volume["name"].as_str().unwrap().to_string();
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                let found = manifests.named("Secret", secret);
                assert!(found.is_some(), "{whence}: Secret {secret}");
                volumes.insert(volume_name, ("Secret", found.unwrap().clone()));
            } else if let Some(map) = volume["configMap"]["name"].as_str() {
                let found = manifests.named("ConfigMap", map);
                assert!(found.is_some(), "{whence}: ConfigMap {map}");
                volumes.insert(volume_name, ("ConfigMap", found.unwrap().clone()));
            }
        }
        let claims: BTreeSet<String> = workload["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|claim| claim["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        for container in pod["containers"].as_array().unwrap() {
            let container_name = container["name"].as_str().unwrap();
            let whence = format!("{whence}/{container_name}");
            assert!(
                container["resources"]["requests"]["cpu"].is_string()
                    && container["resources"]["requests"]["memory"].is_string(),
                "{whence}: resource requests"
            );
            for source in container["envFrom"].as_array().into_iter().flatten() {
                if let Some(secret) = source["secretRef"]["name"].as_str() {
                    assert!(
                        manifests.named("Secret", secret).is_some(),
                        "{whence}: Secret {secret}"
                    );
                }
                if let Some(map) = source["configMapRef"]["name"].as_str() {
                    assert!(
                        manifests.named("ConfigMap", map).is_some(),
                        "{whence}: ConfigMap {map}"
                    );
                }
            }
            for variable in container["env"].as_array().into_iter().flatten() {
                if let Some(secret) = variable["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    assert!(
                        manifests.named("Secret", secret).is_some(),
                        "{whence}: Secret {secret}"
                    );
                }
            }
            let mounts: Vec<(String, String)> = container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let volume = m["name"].as_str().unwrap().to_string();
                    let known = volumes.contains_key(&volume)
                        || claims.contains(&volume)
                        || pod["volumes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|v| v["name"] == volume.as_str());
                    assert!(known, "{whence}: volume {volume} is declared");
                    (m["mountPath"].as_str().unwrap().to_string(), volume)
                })
                .collect();
            let ports: BTreeMap<String, u64> = container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["containerPort"].as_u64().unwrap(),
                    )
                })
                .collect();
            // Probes aim at ports the container has.
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let probe_spec = &container[probe];
                if probe_spec.is_null() {
                    continue;
                }
                let port = probe_spec["grpc"]["port"]
                    .as_u64()
                    .or_else(|| probe_spec["httpGet"]["port"].as_u64())
                    .unwrap_or_else(|| panic!("{whence}: {probe} has a port"));
                assert!(
                    ports.values().any(|p| *p == port),
                    "{whence}: {probe} port {port} is a container port"
                );
            }
            if container["image"] != "flotilla:latest" {
                continue;
            }
            let args = strings(&container["args"]);
            let values = check_command(&args, &whence);
            check_durations(&values, &whence);
            // Files the flags name are in mounted Secrets and ConfigMaps, under a key they hold.
            for flag in ["--token-file", "--providers"] {
                let Some(path) = values.get(flag) else {
                    continue;
                };
                let path = Path::new(path);
                let directory = path.parent().unwrap().to_str().unwrap();
                let file = path.file_name().unwrap().to_str().unwrap();
                let (_, volume) = mounts
                    .iter()
                    .find(|(mount, _)| mount == directory)
                    .unwrap_or_else(|| {
                        panic!("{whence}: {flag} {} is in no mount", path.display())
                    });
                let (_, object) = volumes
                    .get(volume)
                    .unwrap_or_else(|| panic!("{whence}: {flag} is not in a Secret or ConfigMap"));
                assert!(
                    !object["data"][file].is_null(),
                    "{whence}: {flag}: the object has key {file}"
                );
            }
            if let Some(root) = values.get("--root") {
                assert!(
                    mounts
                        .iter()
                        .any(|(mount, volume)| mount == root && claims.contains(volume)),
                    "{whence}: --root {root} is on the PersistentVolumeClaim"
                );
            }
            if args[..2] == ["coordinator", "start"] {
                let listen_port: u64 = values["--listen"]
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let http_port: u64 = values["--http"]
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(
                    ports.get("grpc"),
                    Some(&listen_port),
                    "{whence}: grpc port = --listen"
                );
                assert_eq!(
                    ports.get("http"),
                    Some(&http_port),
                    "{whence}: http port = --http"
                );
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    assert_eq!(
                        container[probe]["grpc"]["port"].as_u64(),
                        Some(listen_port),
                        "{whence}: {probe} asks grpc.health.v1 on the gRPC port"
                    );
                }
            }
            if args[..2] == ["worker", "join"] {
                // The address is a Service whose port leads to the coordinator's --listen.
                let (host, port) = args[2].rsplit_once(':').unwrap();
                let service = manifests
                    .named("Service", host)
                    .unwrap_or_else(|| panic!("{whence}: Service {host}"));
                let service_port = service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(port))
                    .unwrap_or_else(|| panic!("{whence}: Service {host} has port {port}"));
                let coordinator = manifests
                    .workloads()
                    .find(|w| {
                        let labels = &w["spec"]["template"]["metadata"]["labels"];
                        service["spec"]["selector"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .all(|(k, v)| &labels[k] == v)
                    })
                    .unwrap_or_else(|| panic!("{whence}: Service {host} selects a workload"));
                let target = service_port["targetPort"].as_str().unwrap();
                let container = &coordinator["spec"]["template"]["spec"]["containers"][0];
                let listen = strings(&container["args"])
                    .windows(2)
                    .find(|pair| pair[0] == "--listen")
                    .map(|pair| pair[1].clone())
                    .unwrap();
                let named = container["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == target)
                    .unwrap_or_else(|| panic!("{whence}: the coordinator has port {target}"));
                assert!(
                    listen.ends_with(&format!(":{}", named["containerPort"])),
                    "{whence}: {target} is --listen {listen}"
                );
                // An Ollama beside the worker is where FLOTILLA_OLLAMA_URL points.
                let ollama_url =
                    container_env(container_named(pod, "worker"), "FLOTILLA_OLLAMA_URL");
                if let Some(url) = ollama_url {
                    let sidecar = container_named(pod, "ollama");
                    let port = sidecar["ports"][0]["containerPort"].as_u64().unwrap();
                    assert_eq!(url, format!("http://127.0.0.1:{port}"), "{whence}");
                }
            }
        }
    }
}

fn container_named<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("a container named {name}"))
}

fn container_env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["value"].as_str().map(str::to_string))
}

#[test]
fn kubernetes_manifests_render_and_match_the_binary() {
    let base = Manifests {
        objects: render("base"),
    };
    let kinds: BTreeSet<&str> = base
        .objects
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Secret",
            "Service",
            "StatefulSet"
        ]
        .into(),
        "{kinds:?}"
    );
    check_manifests(&base, "base");
    let coordinator = base.named("StatefulSet", "flotilla-coordinator").unwrap();
    assert_eq!(
        coordinator["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"][0],
        "ReadWriteOnce"
    );

    let ollama = Manifests {
        objects: render("overlays/ollama"),
    };
    check_manifests(&ollama, "overlays/ollama");
    let workers = ollama.named("Deployment", "flotilla-worker").unwrap();
    let containers = strings(&Value::Array(
        workers["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect(),
    ));
    assert_eq!(containers, ["worker", "ollama"]);

    // The providers file in the ConfigMap is one the workers accept, with the
    // keys it names in the Secret the workers take their environment from.
    let providers = base
        .objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .unwrap()["data"]["providers.yaml"]
        .as_str()
        .unwrap();
    let keys = base
        .objects
        .iter()
        .find(|o| {
            o["kind"] == "Secret"
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("flotilla-provider-keys")
        })
        .unwrap();
    flotilla_gateway::providers::parse_providers(providers, "providers.yaml", |name| {
        keys["data"][name].as_str().map(str::to_string)
    })
    .unwrap();
}

#[test]
fn compose_file_and_dockerfile_name_what_the_binary_has() {
    let docker = deploy_dir().join("docker");
    let compose = yaml_documents(&std::fs::read_to_string(docker.join("compose.yaml")).unwrap());
    let compose = &compose[0];
    let services = compose["services"].as_object().unwrap();
    assert_eq!(
        services.keys().map(String::as_str).collect::<Vec<_>>(),
        ["coordinator", "sim-server", "worker"]
    );
    assert_eq!(services["worker"]["deploy"]["replicas"], 3);
    let mut listening = BTreeMap::new();
    for (name, service) in services {
        // The image's entrypoint is flotilla: `command` is its arguments.
        let args = strings(&service["command"]);
        let values = check_command(&args, &format!("compose.yaml: {name}"));
        check_durations(&values, name);
        if let Some(listen) = values.get("--listen") {
            listening.insert(name.clone(), listen.rsplit(':').next().unwrap().to_string());
        }
        let test = strings(&service["healthcheck"]["test"]);
        if test.get(1).map(String::as_str) == Some("flotilla") {
            let values = check_command(&test[2..], &format!("compose.yaml: {name} healthcheck"));
            let port = values["#0"].rsplit(':').next().unwrap();
            assert_eq!(
                Some(&port.to_string()),
                listening.get(name.as_str()),
                "{name}: healthcheck port"
            );
        } else if !test.is_empty() {
            let script = test.last().unwrap();
            let port = &listening[name.as_str()];
            assert!(
                script.contains(&format!("127.0.0.1:{port}/v1/models")),
                "{name}: {script}"
            );
        }
        for secret in strings(&service["secrets"]) {
            assert!(
                compose["secrets"][&secret].is_object(),
                "{name}: secret {secret}"
            );
            assert_eq!(
                values.get("--token-file").map(String::as_str),
                Some(format!("/run/secrets/{secret}").as_str())
            );
        }
        for config in service["configs"].as_array().into_iter().flatten() {
            let source = config["source"].as_str().unwrap();
            let file = compose["configs"][source]["file"].as_str().unwrap();
            assert_eq!(
                values.get("--providers"),
                config["target"].as_str().map(str::to_string).as_ref()
            );
            let providers = std::fs::read_to_string(docker.join(file)).unwrap();
            flotilla_gateway::providers::parse_providers(&providers, file, |_| None).unwrap();
        }
        for (dependency, condition) in service["depends_on"].as_object().into_iter().flatten() {
            assert!(
                services.contains_key(dependency),
                "{name} depends on {dependency}"
            );
            assert_eq!(condition["condition"], "service_healthy");
            assert!(
                !services[dependency]["healthcheck"].is_null(),
                "{dependency} has a healthcheck"
            );
        }
    }
    // The workers reach the coordinator's service on its --listen port.
    let worker = strings(&services["worker"]["command"]);
    assert_eq!(
        worker[2],
        format!("coordinator:{}", listening["coordinator"])
    );
    // The provider in providers.yaml is the sim-server service.
    let providers = std::fs::read_to_string(docker.join("providers.yaml")).unwrap();
    assert!(providers.contains(&format!("http://sim-server:{}/v1", listening["sim-server"])));

    let dockerfile = std::fs::read_to_string(docker.join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the image names its user");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "USER {user}"
    );
    assert!(dockerfile.contains("--bin flotilla"));
    assert!(dockerfile.contains("python3"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/bin/tini", "--", "flotilla"]"#));
    let exposed: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(exposed, ["7700", "8080"]);
}

/// ExecStart with its continuation lines joined, split into words.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn systemd_units_verify_and_name_what_the_binary_has() {
    if !system_tool("systemd-analyze", &["--version"], "systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in ["flotilla-coordinator.service", "flotilla-worker.service"] {
        let text_of_unit =
            std::fs::read_to_string(deploy_dir().join("systemd").join(unit)).unwrap();
        let words = exec_start(&text_of_unit);
        assert_eq!(words[0], "/usr/local/bin/flotilla");
        let values = check_command(&words[1..], unit);
        check_durations(&values, unit);
        // Files passed as credentials are loaded under the names the flags use.
        for (flag, value) in &values {
            if let Some(name) = value.strip_prefix("${CREDENTIALS_DIRECTORY}/") {
                assert!(
                    text_of_unit.contains(&format!("LoadCredential={name}:")),
                    "{unit}: {flag} reads credential {name}, which is loaded"
                );
            }
        }
        // systemd's own reading of the unit, with the binary where it is here.
        let local =
            text_of_unit.replace("/usr/local/bin/flotilla", flotilla_bin().to_str().unwrap());
        let path = dir.path().join(unit);
        std::fs::write(&path, local).unwrap();
        let verified = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (.ci/run installs systemd)");
        let said = text(&verified.stderr);
        assert!(
            verified.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );
    }
    let worker =
        std::fs::read_to_string(deploy_dir().join("systemd/flotilla-worker.service")).unwrap();
    // Only flotilla gets SIGTERM, so that its runs can finish while it drains.
    assert!(worker.contains("KillMode=mixed"));
    let stop: u64 = worker
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    let drain = flotilla_shared::duration::parse_duration(
        &exec_start(&worker)
            .windows(2)
            .find(|w| w[0] == "--drain-timeout")
            .unwrap()[1],
    )
    .unwrap();
    assert!(
        stop > drain.as_secs(),
        "TimeoutStopSec leaves room for the drain"
    );
}

#[test]
fn slurm_script_names_what_the_binary_has() {
    let script =
        std::fs::read_to_string(deploy_dir().join("slurm/flotilla-workers.sbatch")).unwrap();
    let start = script
        .find("\"$FLOTILLA_BIN\" worker join")
        .expect("the script joins workers")
        + "\"$FLOTILLA_BIN\" ".len();
    let command: String = script[start..]
        .lines()
        .take_while(|line| !line.trim().starts_with('\''))
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\\', " ");
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.trim_matches('"').to_string())
        .collect();
    let values = check_command(&words, "flotilla-workers.sbatch");
    assert_eq!(values["#0"], "$FLOTILLA_COORDINATOR");
    for flag in ["--name", "--slots", "--work-dir", "--drain-timeout"] {
        assert!(values.contains_key(flag), "{flag}");
    }
    // The sbatch line of the README is the one the script's header gives.
    let readme = std::fs::read_to_string(deploy_dir().join("slurm/README.md")).unwrap();
    assert!(
        readme.contains("sbatch --nodes=4 --cpus-per-task=16"),
        "README's sbatch line"
    );
    assert!(script.contains("sbatch --nodes=4 --cpus-per-task=16"));
}
