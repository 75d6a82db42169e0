//! The Kubernetes manifests (deploy/k8s), checked offline: no cluster.
//!
//! Guarantees, for the base and for the example overlay (rendered from a
//! copy of deploy/k8s whose keys the test makes with `zfabric keygen`):
//! - `kubectl kustomize` renders them;
//! - `kubernetes-validate --strict` accepts every rendered object against
//!   each Kubernetes version in [`KUBE_VERSIONS`] (strict: an unknown
//!   field is an error, so `lifecycle.preStop.sleep` needs 1.29+);
//! - the names, selectors, ports and keys agree: every workload's selector
//!   matches its pods; every Service, PodDisruptionBudget, NetworkPolicy
//!   and the optional PodMonitor selects some workload's pods and names
//!   ports those pods have; probes hit `/readyz` and `/healthz` on a port
//!   the container has; every Secret and ConfigMap key a volume or env
//!   refers to exists; the seed every node is given is a headless Service
//!   publishing not-ready addresses, the name its init container waits
//!   for; the grace period covers the preStop sleep and the drain; every
//!   container is locked down and has requests and limits;
//! - each node's `node.toml`, mounted as the kubelet would (ConfigMap and
//!   Secret volumes written to files, with the Secret modes the pod
//!   sees) and run with the container's arguments and environment through
//!   `zfabric node --check-config`, is valid with the overlay's real keys
//!   and refused (exit 2) with the base's placeholders.
//!
//! Not guaranteed: that a cluster schedules and runs it (no cluster
//! here), nor that a NetworkPolicy implementation enforces what the
//! policies say. YAML is turned into JSON by python3's PyYAML (a
//! dependency of kubernetes-validate, which the test needs anyway), so
//! no YAML crate enters the build.
//!
//! Needs kubectl, python3 with PyYAML and kubernetes-validate
//! (`pip install kubernetes-validate`): skipped with a visible message
//! without them (a failure when `ZFABRIC_REQUIRE_ALL` is set, as in CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_zfabric");
const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");

/// The Kubernetes versions the manifests are validated against: 1.30 is
/// the first where the preStop `sleep` action is on by default (beta),
/// 1.32 the kubectl on these machines.
const KUBE_VERSIONS: [&str; 2] = ["1.30.0", "1.32.0"];

/// How long a node drains after SIGTERM (docs/NODE.md).
const DRAIN_SECS: i64 = 2;

/// How long any one command the test runs may take.
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(60);

/// The files the example overlay's secretGenerator reads.
const SERVICES: [&str; 3] = ["quote", "checkout", "gateway"];

/// Runs `cmd` to the end under a watchdog: a command that has not exited
/// within [`WATCHDOG`] is killed and the test fails (a node that ignored
/// `--check-config` would otherwise run for ever).
fn run(cmd: &mut Command) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {WATCHDOG:?}: killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether every outside tool is here (a SKIP message or, under
/// `ZFABRIC_REQUIRE_ALL`, a failure when one is not).
fn tools() -> bool {
    if !common::tool_available("kubectl", "--help")
        || !common::tool_available("kubernetes-validate", "--version")
    {
        return false;
    }
    common::python_with("yaml", &[])
}

/// Copies a directory tree (the manifests) into `to`, leaving out any key
/// an operator made in the overlay's secrets/ directory.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            let in_secrets = from.file_name().is_some_and(|n| n == "secrets");
            let name = entry.file_name();
            if in_secrets && name != "README.md" && name != ".gitignore" {
                continue;
            }
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn keygen(out: &Path) -> String {
    let o = run(Command::new(BIN).args(["keygen", "--out"]).arg(out));
    assert!(o.status.success(), "keygen: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A copy of deploy/k8s with the example overlay's key files made as its
/// README says: a CURVE key pair per service, `fabric.keys` listing the
/// public keys, and 32 random bytes of HS256 secret.
fn example_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new(K8S), dir.path());
    let secrets = dir.path().join("overlays/example/secrets");
    let mut publics = String::new();
    for s in SERVICES {
        let public = keygen(&secrets.join(format!("{s}.key")));
        let from_file = std::fs::read_to_string(secrets.join(format!("{s}.key.pub"))).unwrap();
        assert_eq!(from_file.trim(), public, "keygen prints the public key");
        publics.push_str(&format!("# {s}\n{public}\n"));
    }
    std::fs::write(secrets.join("fabric.keys"), publics).unwrap();
    let mut jwt = [0u8; 32];
    rand_bytes(&mut jwt);
    std::fs::write(secrets.join("hs256.key"), jwt).unwrap();
    dir
}

/// Random bytes from the OS (what `head -c 32 /dev/urandom` gives).
fn rand_bytes(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

/// `kubectl kustomize DIR`: the rendered YAML.
fn render(dir: &Path) -> String {
    let o = run(Command::new("kubectl").arg("kustomize").arg(dir));
    assert!(
        o.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        text(&o)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Every document of a YAML stream, as JSON (through PyYAML).
fn parse(yaml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).unwrap();
    let o = run(Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(&file));
    assert!(o.status.success(), "YAML does not parse: {}", text(&o));
    match serde_json::from_slice(&o.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
    }
}

/// `kubernetes-validate --strict` on a rendered stream, for each version.
fn validate(what: &str, yaml: &str, objects: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{what}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    for v in KUBE_VERSIONS {
        let o = run(Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", v])
            .arg(&file));
        let out = text(&o);
        assert!(
            o.status.success(),
            "{what} does not validate against {v}:\n{out}"
        );
        let passed = out.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed, objects,
            "{what} against {v}: {passed} of {objects} objects passed:\n{out}"
        );
        assert!(
            !out.contains("WARN") && !out.contains("ERROR"),
            "{what} against {v}:\n{out}"
        );
    }
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn id(o: &Value) -> String {
    format!("{}/{}", kind(o), name(o))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a selector (`matchLabels` or a Service's plain map) selects
/// pods with `pod` labels. An empty selector selects nothing here: none
/// of ours is meant to select everything.
fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// A label selector with `matchLabels` only (ours use no expressions).
fn match_labels(sel: &Value) -> BTreeMap<String, String> {
    assert!(
        sel.get("matchExpressions").is_none(),
        "matchExpressions are not checked here: {sel}"
    );
    labels(&sel["matchLabels"])
}

/// A workload (Deployment, StatefulSet) and its pod template.
struct Workload<'a> {
    id: String,
    object: &'a Value,
    pod: &'a Value,
    labels: BTreeMap<String, String>,
}

impl Workload<'_> {
    fn containers(&self) -> impl Iterator<Item = &Value> {
        let spec = &self.pod["spec"];
        spec["initContainers"]
            .as_array()
            .into_iter()
            .chain(spec["containers"].as_array())
            .flatten()
    }

    /// Whether some container of the pod has the port `port` (a name or a
    /// number).
    fn has_port(&self, port: &Value) -> bool {
        self.pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| container_has_port(c, port))
    }
}

fn container_has_port(c: &Value, port: &Value) -> bool {
    c["ports"].as_array().into_iter().flatten().any(|p| {
        port.as_str() == p["name"].as_str() && port.is_string()
            || port.as_i64().is_some() && port.as_i64() == p["containerPort"].as_i64()
    })
}

fn workloads(objects: &[Value]) -> Vec<Workload<'_>> {
    objects
        .iter()
        .filter(|o| matches!(kind(o), "Deployment" | "StatefulSet"))
        .map(|o| Workload {
            id: id(o),
            object: o,
            pod: &o["spec"]["template"],
            labels: labels(&o["spec"]["template"]["metadata"]["labels"]),
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    objects.iter().find(|o| kind(o) == k && name(o) == n)
}

/// The keys a Secret or ConfigMap holds (`data`, `stringData`,
/// `binaryData`).
fn keys_of(o: &Value) -> BTreeSet<String> {
    ["data", "stringData", "binaryData"]
        .iter()
        .filter_map(|f| o[*f].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect()
}

/// The contents of one key of a Secret or ConfigMap, as the kubelet
/// writes it into a volume.
fn value_of(o: &Value, key: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if kind(o) == "Secret" {
        if let Some(s) = o["data"][key].as_str() {
            return b64.decode(unwrap_lines(s)).expect("Secret data is base64");
        }
    }
    if let Some(s) = o["binaryData"][key].as_str() {
        return b64.decode(unwrap_lines(s)).expect("binaryData is base64");
    }
    let plain = if kind(o) == "Secret" {
        &o["stringData"][key]
    } else {
        &o["data"][key]
    };
    plain
        .as_str()
        .unwrap_or_else(|| panic!("{} has no key {key}", id(o)))
        .as_bytes()
        .to_vec()
}

/// Base64 without the line breaks kustomize wraps long values with (the
/// API server's decoder skips them too).
fn unwrap_lines(s: &str) -> String {
    s.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}

/// Everything that must agree between the objects of one rendering: what
/// does not, one line each.
fn cross_check(what: &str, objects: &[Value], podmonitor: &Value) -> Vec<String> {
    let work = workloads(objects);
    assert!(!work.is_empty(), "{what}: no workload");
    let mut problems: Vec<String> = Vec::new();
    let mut fail = |p: String| problems.push(format!("{what}: {p}"));

    for w in &work {
        // The selector picks the pods the workload makes.
        let sel = match_labels(&w.object["spec"]["selector"]);
        if !selects(&sel, &w.labels) {
            fail(format!(
                "{}: selector {sel:?} misses its pods {:?}",
                w.id, w.labels
            ));
        }
        let spec = &w.pod["spec"];
        // Spreading counts this workload's own pods.
        for t in spec["topologySpreadConstraints"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if !selects(&match_labels(&t["labelSelector"]), &w.labels) {
                fail(format!(
                    "{}: a topology spread constraint does not count its pods",
                    w.id
                ));
            }
        }
        // Volumes: the Secrets and ConfigMaps and the keys they name.
        for v in spec["volumes"].as_array().into_iter().flatten() {
            let (k, n, source) = if v["secret"].is_object() {
                ("Secret", v["secret"]["secretName"].as_str(), &v["secret"])
            } else if v["configMap"].is_object() {
                (
                    "ConfigMap",
                    v["configMap"]["name"].as_str(),
                    &v["configMap"],
                )
            } else {
                continue;
            };
            let n = n.unwrap_or_default();
            let Some(obj) = find(objects, k, n) else {
                fail(format!(
                    "{}: volume {} names {k} {n}, which is not there",
                    w.id, v["name"]
                ));
                continue;
            };
            let have = keys_of(obj);
            for item in source["items"].as_array().into_iter().flatten() {
                let key = item["key"].as_str().unwrap_or_default();
                if !have.contains(key) {
                    fail(format!("{}: {k} {n} has no key {key} (has {have:?})", w.id));
                }
            }
        }
        for c in w.containers() {
            let cname = c["name"].as_str().unwrap_or_default();
            let at = format!("{} container {cname}", w.id);
            // Env from Secrets and ConfigMaps.
            for e in c["env"].as_array().into_iter().flatten() {
                for (field, k) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
                    let r = &e["valueFrom"][field];
                    if r.is_object() {
                        let n = r["name"].as_str().unwrap_or_default();
                        let key = r["key"].as_str().unwrap_or_default();
                        match find(objects, k, n) {
                            Some(o) if keys_of(o).contains(key) => {}
                            _ => fail(format!(
                                "{at}: env {} names {k} {n} key {key}, not there",
                                e["name"]
                            )),
                        }
                    }
                }
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                for (field, k) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
                    if let Some(n) = e[field]["name"].as_str() {
                        if find(objects, k, n).is_none() {
                            fail(format!("{at}: envFrom names {k} {n}, not there"));
                        }
                    }
                }
            }
            // Mounts: volumes that exist, directories only (no subPath:
            // a subPath mount never sees a Secret's update).
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let vn = m["name"].as_str().unwrap_or_default();
                if !spec["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v["name"].as_str() == Some(vn))
                {
                    fail(format!("{at}: mounts volume {vn}, not in the pod"));
                }
                if m.get("subPath").is_some() || m.get("subPathExpr").is_some() {
                    fail(format!("{at}: mounts {vn} with a subPath"));
                }
            }
            // Locked down.
            let sc = &c["securityContext"];
            for (field, want) in [
                ("runAsNonRoot", Value::Bool(true)),
                ("runAsUser", Value::from(65532)),
                ("readOnlyRootFilesystem", Value::Bool(true)),
                ("allowPrivilegeEscalation", Value::Bool(false)),
            ] {
                if sc[field] != want {
                    fail(format!(
                        "{at}: securityContext.{field} is {}, not {want}",
                        sc[field]
                    ));
                }
            }
            if sc["capabilities"]["drop"] != serde_json::json!(["ALL"]) {
                fail(format!("{at}: capabilities do not drop ALL"));
            }
            if sc["seccompProfile"]["type"] != "RuntimeDefault"
                && spec["securityContext"]["seccompProfile"]["type"] != "RuntimeDefault"
            {
                fail(format!("{at}: no RuntimeDefault seccomp profile"));
            }
            // A read-only root, and the writable /tmp the node needs.
            let tmp = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["mountPath"] == "/tmp");
            let empty_dir = tmp.is_some_and(|m| {
                spec["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v["name"] == m["name"] && v["emptyDir"].is_object())
            });
            if !empty_dir {
                fail(format!("{at}: no emptyDir on /tmp"));
            }
            for r in ["requests", "limits"] {
                for res in ["cpu", "memory"] {
                    if !c["resources"][r][res].is_string() {
                        fail(format!("{at}: no resources.{r}.{res}"));
                    }
                }
            }
        }
        let psc = &spec["securityContext"];
        if psc["runAsNonRoot"] != true || psc["runAsUser"] != 65532 {
            fail(format!("{}: the pod does not run as non-root 65532", w.id));
        }
        if spec["automountServiceAccountToken"] != false {
            fail(format!(
                "{}: mounts a service account token it does not use",
                w.id
            ));
        }

        // The node container: probes, ports, drain, scraping, seeds.
        let Some(node) = spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["args"][0] == "node")
        else {
            fail(format!("{}: no container runs `zfabric node`", w.id));
            continue;
        };
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &node[probe]["httpGet"];
            if get["path"] != path {
                fail(format!(
                    "{}: {probe} path is {}, not {path}",
                    w.id, get["path"]
                ));
            }
            if !container_has_port(node, &get["port"]) {
                fail(format!(
                    "{}: {probe} port {} is not a port of the container",
                    w.id, get["port"]
                ));
            }
            let number = node["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == get["port"] || p["containerPort"] == get["port"])
                .map(|p| p["containerPort"].clone());
            if number != Some(Value::from(9100)) {
                fail(format!("{}: {probe} is not on the metrics port 9100", w.id));
            }
        }
        let args: Vec<&str> = node["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let metrics = args
            .windows(2)
            .find(|a| a[0] == "--metrics")
            .map(|a| a[1].to_string())
            .or_else(|| env_value(node, "ZFABRIC_METRICS"));
        if metrics.as_deref() != Some("0.0.0.0:9100") {
            fail(format!(
                "{}: metrics listen on {metrics:?}, not 0.0.0.0:9100",
                w.id
            ));
        }
        for (p, n) in [("fabric", 7000), ("metrics", 9100)] {
            if !node["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["name"] == p && x["containerPort"] == n)
            {
                fail(format!("{}: no containerPort {p} = {n}", w.id));
            }
        }
        let ann = labels(&w.pod["metadata"]["annotations"]);
        if ann.get("prometheus.io/scrape").map(String::as_str) != Some("true")
            || ann.get("prometheus.io/port").map(String::as_str) != Some("9100")
        {
            fail(format!(
                "{}: no prometheus.io scrape annotations for 9100: {ann:?}",
                w.id
            ));
        }
        let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
        let sleep = node["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64();
        match sleep {
            Some(s) if s > 0 && s + DRAIN_SECS < grace => {}
            _ => fail(format!(
                "{}: preStop sleep {sleep:?} + drain {DRAIN_SECS} s does not fit the grace period {grace} s",
                w.id
            )),
        }
        // The seeds: a headless Service that publishes not-ready pods,
        // selects this one, and is the name the init container waits for.
        let seeds = env_value(node, "ZFABRIC_SEEDS").unwrap_or_default();
        let mut hosts = Vec::new();
        for seed in seeds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((host, port)) = seed.strip_prefix("tcp://").and_then(|s| s.rsplit_once(':'))
            else {
                fail(format!("{}: seed {seed} is not tcp://HOST:PORT", w.id));
                continue;
            };
            hosts.push(host.to_string());
            let svc = find(
                objects,
                "Service",
                host.split('.').next().unwrap_or_default(),
            );
            let Some(svc) = svc else {
                fail(format!("{}: seed {host} is no Service", w.id));
                continue;
            };
            let s = &svc["spec"];
            if s["clusterIP"] != "None" || s["publishNotReadyAddresses"] != true {
                fail(format!(
                    "{}: seed Service {host} is not headless with publishNotReadyAddresses",
                    w.id
                ));
            }
            if !selects(&labels(&s["selector"]), &w.labels) {
                fail(format!(
                    "{}: seed Service {host} does not select this workload's pods",
                    w.id
                ));
            }
            let port_ok = s["ports"].as_array().into_iter().flatten().any(|p| {
                p["port"].as_i64().map(|n| n.to_string()).as_deref() == Some(port)
                    && (container_has_port(node, &p["targetPort"]) || p["targetPort"].is_null())
            });
            if !port_ok {
                fail(format!(
                    "{}: seed Service {host} has no port {port} onto the fabric port",
                    w.id
                ));
            }
        }
        if hosts.is_empty() {
            fail(format!("{}: no seed in ZFABRIC_SEEDS", w.id));
        }
        let waits: Vec<String> = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let a: Vec<&str> = c["args"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                (a.first() == Some(&"wait-for")).then(|| {
                    a.windows(2)
                        .find(|x| x[0] == "--dns")
                        .map(|x| x[1].to_string())
                        .unwrap_or_default()
                })
            })
            .collect();
        if waits.is_empty() || !waits.iter().all(|h| hosts.contains(h)) {
            fail(format!(
                "{}: init containers wait for {waits:?}, the seeds are {hosts:?}",
                w.id
            ));
        }
        // Exactly one disruption budget.
        let pdbs = objects
            .iter()
            .filter(|o| kind(o) == "PodDisruptionBudget")
            .filter(|o| selects(&match_labels(&o["spec"]["selector"]), &w.labels))
            .count();
        if pdbs != 1 {
            fail(format!(
                "{}: {pdbs} PodDisruptionBudgets select its pods, not 1",
                w.id
            ));
        }
        // Some NetworkPolicy selects it (so only what is opened is open).
        if !objects
            .iter()
            .filter(|o| kind(o) == "NetworkPolicy")
            .any(|o| selects(&match_labels(&o["spec"]["podSelector"]), &w.labels))
        {
            fail(format!("{}: no NetworkPolicy selects its pods", w.id));
        }
    }

    // Services and budgets select workloads whose pods have their ports.
    for o in objects {
        match kind(o) {
            "Service" => {
                let sel = labels(&o["spec"]["selector"]);
                let picked: Vec<&Workload> =
                    work.iter().filter(|w| selects(&sel, &w.labels)).collect();
                if picked.is_empty() {
                    fail(format!("{}: selector {sel:?} selects no workload", id(o)));
                }
                for p in o["spec"]["ports"].as_array().into_iter().flatten() {
                    let target = if p["targetPort"].is_null() {
                        &p["port"]
                    } else {
                        &p["targetPort"]
                    };
                    for w in &picked {
                        if !w.has_port(target) {
                            fail(format!(
                                "{}: port {target} is not a port of {}",
                                id(o),
                                w.id
                            ));
                        }
                    }
                }
            }
            "PodDisruptionBudget" => {
                let sel = match_labels(&o["spec"]["selector"]);
                if !work.iter().any(|w| selects(&sel, &w.labels)) {
                    fail(format!("{}: selects no workload", id(o)));
                }
            }
            "NetworkPolicy" => {
                let sel = match_labels(&o["spec"]["podSelector"]);
                let picked: Vec<&Workload> =
                    work.iter().filter(|w| selects(&sel, &w.labels)).collect();
                if picked.is_empty() {
                    fail(format!("{}: selects no workload", id(o)));
                }
                for rule in o["spec"]["ingress"].as_array().into_iter().flatten() {
                    let from = rule["from"].as_array().cloned().unwrap_or_default();
                    for p in rule["ports"].as_array().into_iter().flatten() {
                        for w in &picked {
                            if !w.has_port(&p["port"]) {
                                fail(format!(
                                    "{}: port {} is not a port of {}",
                                    id(o),
                                    p["port"],
                                    w.id
                                ));
                            }
                        }
                        // The fabric port is opened to fabric pods only.
                        let fabric = p["port"] == "fabric" || p["port"] == 7000;
                        let only_fabric = !from.is_empty()
                            && from.iter().all(|f| {
                                f.get("namespaceSelector").is_none()
                                    && f.get("ipBlock").is_none()
                                    && work.iter().any(|w| {
                                        selects(&match_labels(&f["podSelector"]), &w.labels)
                                    })
                                    && match_labels(&f["podSelector"])
                                        .get("app.kubernetes.io/part-of")
                                        .map(String::as_str)
                                        == Some("zfabric")
                            });
                        if fabric && !only_fabric {
                            fail(format!(
                                "{}: opens the fabric port beyond fabric pods",
                                id(o)
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // The optional PodMonitor scrapes every workload's metrics port.
    let sel = match_labels(&podmonitor["spec"]["selector"]);
    let port = &podmonitor["spec"]["podMetricsEndpoints"][0]["port"];
    for w in &work {
        if !selects(&sel, &w.labels) || !w.has_port(port) {
            fail(format!("PodMonitor misses {} (port {port})", w.id));
        }
    }
    problems
}

fn assert_agrees(what: &str, objects: &[Value], podmonitor: &Value) {
    let problems = cross_check(what, objects, podmonitor);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The literal `value` of a container's env var.
fn env_value(c: &Value, var: &str) -> Option<String> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

#[test]
fn the_base_and_the_overlay_render_validate_and_agree() {
    if !tools() {
        return;
    }
    let podmonitor =
        parse(&std::fs::read_to_string(format!("{K8S}/optional/podmonitor.yaml")).unwrap());
    assert_eq!(podmonitor.len(), 1);

    let base = render(&Path::new(K8S).join("base"));
    let base_objects = parse(&base);
    validate("base", &base, base_objects.len());
    assert_agrees("base", &base_objects, &podmonitor[0]);

    let tree = example_tree();
    let overlay = render(&tree.path().join("overlays/example"));
    let objects = parse(&overlay);
    validate("overlay", &overlay, objects.len());
    assert_agrees("overlay", &objects, &podmonitor[0]);

    // The overlay: its namespace on everything namespaced, the operator's
    // keys instead of the placeholders, the same objects otherwise.
    let ns = "zfabric-example";
    assert!(find(&objects, "Namespace", ns).is_some());
    for o in objects.iter().filter(|o| kind(o) != "Namespace") {
        assert_eq!(o["metadata"]["namespace"], ns, "{} is not in {ns}", id(o));
    }
    let names = |v: &[Value]| -> BTreeSet<String> {
        v.iter()
            .filter(|o| kind(o) != "Namespace")
            .map(id)
            .collect()
    };
    assert_eq!(
        names(&base_objects),
        names(&objects),
        "the overlay adds or drops objects"
    );
    let keys = find(&objects, "Secret", "fabric-keys").expect("fabric-keys");
    let secrets = tree.path().join("overlays/example/secrets");
    for s in SERVICES {
        let made = std::fs::read(secrets.join(format!("{s}.key"))).unwrap();
        assert_eq!(
            value_of(keys, &format!("{s}.key")),
            made,
            "{s}.key is not the operator's"
        );
    }
    let base_keys = find(&base_objects, "Secret", "fabric-keys").unwrap();
    assert_eq!(
        keys_of(base_keys),
        keys_of(keys),
        "the overlay's keys are the base's"
    );
    for k in keys_of(base_keys) {
        assert!(
            String::from_utf8_lossy(&value_of(base_keys, &k)).contains("PLACEHOLDER"),
            "the base's {k} is not an obvious placeholder"
        );
    }
    let jwt = find(&base_objects, "Secret", "gateway-jwt").unwrap();
    assert!(
        value_of(jwt, "hs256.key").is_empty(),
        "the base's HS256 key is not empty"
    );
    let replicas =
        |v: &[Value], n: &str| find(v, "Deployment", n).unwrap()["spec"]["replicas"].clone();
    assert_eq!(replicas(&objects, "quote"), 3);
    eprintln!(
        "rendered, validated (kubernetes {}) and cross-checked: base {} objects, overlay {}",
        KUBE_VERSIONS.join(", "),
        base_objects.len(),
        objects.len()
    );
}

/// The cross-check catches what it is there for: each mistake below,
/// made in a copy of the rendered base, is reported.
#[test]
fn the_cross_check_catches_broken_references() {
    if !tools() {
        return;
    }
    let podmonitor =
        parse(&std::fs::read_to_string(format!("{K8S}/optional/podmonitor.yaml")).unwrap());
    let base = parse(&render(&Path::new(K8S).join("base")));
    type Break = fn(&mut Vec<Value>);
    fn at<'a>(v: &'a mut [Value], k: &str, n: &str) -> &'a mut Value {
        v.iter_mut().find(|o| kind(o) == k && name(o) == n).unwrap()
    }
    fn node<'a>(v: &'a mut [Value], n: &str) -> &'a mut Value {
        &mut at(v, "Deployment", n)["spec"]["template"]["spec"]["containers"][0]
    }
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "a selector that misses its pods",
            |v| {
                at(v, "Deployment", "quote")["spec"]["selector"]["matchLabels"]
                    ["app.kubernetes.io/name"] = "quotes".into();
            },
            "misses its pods",
        ),
        (
            "a Secret key that is not there",
            |v| {
                at(v, "Secret", "fabric-keys")["stringData"]
                    .as_object_mut()
                    .unwrap()
                    .remove("quote.key");
            },
            "has no key quote.key",
        ),
        (
            "a ConfigMap that is not there",
            |v| {
                let cm = v
                    .iter()
                    .position(|o| name(o).starts_with("gateway-config"))
                    .unwrap();
                v.remove(cm);
            },
            "which is not there",
        ),
        (
            "a Service onto a port the pods lack",
            |v| {
                at(v, "Service", "gateway-edge")["spec"]["ports"][0]["targetPort"] = "http".into();
            },
            "port \"http\" is not a port of Deployment/gateway",
        ),
        (
            "a Service that selects nothing",
            |v| {
                at(v, "Service", "checkout")["spec"]["selector"]["app.kubernetes.io/name"] =
                    "chekout".into();
            },
            "selects no workload",
        ),
        (
            "a subPath mount",
            |v| {
                node(v, "quote")["volumeMounts"][1]["subPath"] = "node.key".into();
            },
            "with a subPath",
        ),
        (
            "the fabric port opened to all",
            |v| {
                at(v, "NetworkPolicy", "fabric")["spec"]["ingress"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("from");
            },
            "opens the fabric port beyond fabric pods",
        ),
        (
            "a grace period shorter than preStop and drain",
            |v| {
                at(v, "Deployment", "checkout")["spec"]["template"]["spec"]
                    ["terminationGracePeriodSeconds"] = 4.into();
            },
            "does not fit the grace period",
        ),
        (
            "a seed that hides not-ready pods",
            |v| {
                at(v, "Service", "fabric-seed")["spec"]["publishNotReadyAddresses"] = false.into();
            },
            "not headless with publishNotReadyAddresses",
        ),
        (
            "an init container waiting for another name",
            |v| {
                at(v, "Deployment", "gateway")["spec"]["template"]["spec"]["initContainers"][0]
                    ["args"][2] = "quote".into();
            },
            "init containers wait for",
        ),
        (
            "readiness on /healthz",
            |v| {
                node(v, "quote")["readinessProbe"]["httpGet"]["path"] = "/healthz".into();
            },
            "readinessProbe path",
        ),
        (
            "a probe on a port the container lacks",
            |v| {
                node(v, "quote")["livenessProbe"]["httpGet"]["port"] = 9200.into();
            },
            "livenessProbe port 9200",
        ),
        (
            "a writable root filesystem",
            |v| {
                node(v, "checkout")["securityContext"]["readOnlyRootFilesystem"] = false.into();
            },
            "readOnlyRootFilesystem",
        ),
        (
            "no memory limit",
            |v| {
                node(v, "gateway")["resources"]["limits"]
                    .as_object_mut()
                    .unwrap()
                    .remove("memory");
            },
            "resources.limits.memory",
        ),
        (
            "a PodDisruptionBudget that selects nothing",
            |v| {
                at(v, "PodDisruptionBudget", "quote")["spec"]["selector"]["matchLabels"]
                    ["app.kubernetes.io/name"] = "q".into();
            },
            "0 PodDisruptionBudgets select its pods",
        ),
        (
            "spreading that counts other pods",
            |v| {
                let spec = &mut at(v, "Deployment", "gateway")["spec"]["template"]["spec"];
                spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
                    ["app.kubernetes.io/name"] = "quote".into();
            },
            "topology spread constraint",
        ),
        (
            "no scrape annotation",
            |v| {
                at(v, "Deployment", "quote")["spec"]["template"]["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove("prometheus.io/scrape");
            },
            "scrape annotations",
        ),
    ];
    assert!(cross_check("base", &base, &podmonitor[0]).is_empty());
    for (what, break_it, expect) in cases {
        let mut broken = base.clone();
        break_it(&mut broken);
        let problems = cross_check("base", &broken, &podmonitor[0]);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "{what}: not reported as \"{expect}\"; reported: {problems:#?}"
        );
    }
}

/// `$(VAR)` references expanded as the kubelet does, from the vars
/// defined so far; an undefined one stays as written.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) if vars.contains_key(&after[..j]) => {
                out.push_str(&vars[&after[..j]]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The mode a file of a Secret or ConfigMap volume has in the pod: the
/// item's mode, else the volume's defaultMode, else 0644; with an
/// fsGroup the kubelet makes it group-readable too (and the file belongs
/// to root, group fsGroup).
fn volume_mode(source: &Value, item: Option<&Value>, fs_group: bool) -> u32 {
    let mode = item
        .and_then(|i| i["mode"].as_u64())
        .or_else(|| source["defaultMode"].as_u64())
        .unwrap_or(0o644) as u32;
    if fs_group {
        mode | 0o440
    } else {
        mode
    }
}

/// Whether this process is root (files it makes belong to root, as the
/// kubelet's do).
fn is_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).unwrap().uid() == 0
}

/// `s` with every path under a mount path (`/etc/zfabric/keys/node.key`)
/// pointed at the directory standing in for that mount, in one pass (a
/// replaced path is not replaced again), longest mount path first.
fn repoint(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = String::new();
    let mut i = 0;
    'scan: while i < s.len() {
        let starts_path = i == 0 || !s[..i].ends_with(|c: char| c.is_alphanumeric() || c == '/');
        if starts_path {
            for (from, to) in mounts {
                if s[i..].starts_with(&format!("{from}/")) {
                    out.push_str(&to.display().to_string());
                    i += from.len();
                    continue 'scan;
                }
            }
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// What `zfabric node --check-config` said about one workload's node.
struct Checked {
    workload: String,
    output: Output,
    /// Each Secret file written: its path in the pod, its contents.
    secrets: Vec<(String, Vec<u8>)>,
}

/// Runs each workload's node container through `--check-config`: the pod's
/// ConfigMap and Secret volumes written under a temporary root (every
/// mount path in the args, the env and node.toml pointed there), the
/// container's env (downward API: a pod name and 127.0.0.1) applied.
fn check_configs(objects: &[Value]) -> Vec<Checked> {
    let mut out = Vec::new();
    for w in workloads(objects) {
        let spec = &w.pod["spec"];
        let node = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["args"][0] == "node")
            .expect("a node container");
        let root = tempfile::tempdir().unwrap();
        let fs_group = spec["securityContext"]["fsGroup"].is_number();
        let root_owned = is_root(root.path());
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        let mut secrets = Vec::new();
        for m in node["volumeMounts"].as_array().into_iter().flatten() {
            let vn = m["name"].as_str().unwrap();
            let at = root.path().join(vn);
            std::fs::create_dir_all(&at).unwrap();
            mounts.push((m["mountPath"].as_str().unwrap().to_string(), at.clone()));
            let v = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == vn)
                .unwrap();
            let (source, obj) = if v["secret"].is_object() {
                let s = &v["secret"];
                (
                    s,
                    find(objects, "Secret", s["secretName"].as_str().unwrap()),
                )
            } else if v["configMap"].is_object() {
                let s = &v["configMap"];
                (s, find(objects, "ConfigMap", s["name"].as_str().unwrap()))
            } else {
                continue;
            };
            let obj = obj.expect("the volume's object (cross-checked)");
            let items: Vec<(String, String, Option<&Value>)> = match source["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().unwrap().to_string();
                        (key, i["path"].as_str().unwrap().to_string(), Some(i))
                    })
                    .collect(),
                None => keys_of(obj)
                    .into_iter()
                    .map(|k| (k.clone(), k, None))
                    .collect(),
            };
            for (key, path, item) in items {
                let file = at.join(&path);
                let bytes = value_of(obj, &key);
                if kind(obj) == "Secret" {
                    let in_pod = format!("{}/{path}", m["mountPath"].as_str().unwrap());
                    secrets.push((in_pod, bytes.clone()));
                }
                std::fs::write(&file, &bytes).unwrap();
                // The mode the pod sees. Not being root, the file is ours,
                // not root's: keep it private, as keygen makes it.
                let mode = if root_owned {
                    volume_mode(source, item, fs_group)
                } else {
                    0o600
                };
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        if !root_owned {
            eprintln!("note: not root, so Secret files are mode 0600 and ours, not the kubelet's root-owned mode");
        }
        // Longest mount path first, so /etc/zfabric/keys is not taken
        // for a file under /etc/zfabric.
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let repoint = |s: &str| repoint(s, &mounts);
        // node.toml, with its paths pointed at the files written.
        for (_, dir) in &mounts {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "toml") {
                    let t = std::fs::read_to_string(&p).unwrap();
                    std::fs::write(&p, repoint(&t)).unwrap();
                }
            }
        }
        let pod_name = format!("{}-7d4b9c-x2x7q", name(w.object));
        let mut vars = BTreeMap::new();
        for e in node["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap().to_string();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod_name.clone(),
                Some("status.podIP") => "127.0.0.1".to_string(),
                Some(other) => panic!("{}: fieldRef {other} is not simulated here", w.id),
                None => repoint(&expand(e["value"].as_str().unwrap_or_default(), &vars)),
            };
            vars.insert(var, value);
        }
        let mut args: Vec<String> = node["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| repoint(&expand(a.as_str().unwrap(), &vars)))
            .collect();
        args.insert(1, "--check-config".into());
        let mut cmd = Command::new(BIN);
        cmd.args(&args).current_dir(root.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("ZFABRIC_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(&vars).env("TMPDIR", root.path());
        let output = run(&mut cmd);
        out.push(Checked {
            workload: w.id,
            output,
            secrets,
        });
    }
    out
}

#[test]
fn every_node_toml_passes_check_config_with_the_pods_env_and_keys() {
    if !tools() {
        return;
    }
    let tree = example_tree();
    let objects = parse(&render(&tree.path().join("overlays/example")));
    let checked = check_configs(&objects);
    assert_eq!(checked.len(), SERVICES.len());
    let secrets = tree.path().join("overlays/example/secrets");
    let publics: BTreeSet<String> = SERVICES
        .iter()
        .map(|s| {
            let p = std::fs::read_to_string(secrets.join(format!("{s}.key.pub"))).unwrap();
            p.trim().to_string()
        })
        .collect();
    for c in &checked {
        let out = text(&c.output);
        assert!(
            c.output.status.success(),
            "{}: check-config refused the overlay's config ({:?}):\n{out}",
            c.workload,
            c.output.status
        );
        // The effective config says what the env set, and no secret.
        let pod = format!(
            "{}-7d4b9c-x2x7q",
            c.workload.trim_start_matches("Deployment/")
        );
        for want in [pod.as_str(), "tcp://127.0.0.1:7000", "fabric-seed"] {
            assert!(
                out.contains(want),
                "{}: the effective config lacks {want}:\n{out}",
                c.workload
            );
        }
        for (file, bytes) in &c.secrets {
            let t = String::from_utf8_lossy(bytes);
            let words = t.lines().map(str::trim).chain([t.trim()]);
            for w in words.filter(|l| l.len() >= 16 && !l.starts_with('#')) {
                // fabric.keys holds public keys, which may be shown.
                assert!(
                    publics.contains(w) || !out.contains(w),
                    "{}: check-config printed the secret in {file}:\n{out}",
                    c.workload
                );
            }
        }
        eprintln!("{}: check-config ok", c.workload);
    }

    // The init containers' command line, run for real against a name
    // that resolves offline: the image's `wait-for` takes it.
    for w in workloads(&objects) {
        for c in w.pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let mut args: Vec<String> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            let dns = args.iter().position(|a| a == "--dns").expect("--dns") + 1;
            args[dns] = "localhost".into();
            let o = run(Command::new(BIN).args(&args));
            assert!(
                o.status.success(),
                "{}: `zfabric {}` failed: {}",
                w.id,
                args.join(" "),
                text(&o)
            );
        }
    }

    // The base's placeholders load nowhere: every node is refused.
    let base = parse(&render(&Path::new(K8S).join("base")));
    for c in check_configs(&base) {
        assert_eq!(
            c.output.status.code(),
            Some(2),
            "{}: the base's placeholder keys were not refused:\n{}",
            c.workload,
            text(&c.output)
        );
        eprintln!("{}: placeholders refused (exit 2)", c.workload);
    }
}
