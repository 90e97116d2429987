//! The deployment examples under docs/deploy: every YAML document and JSON file parses, and
//! the files agree with each other and with the code. Probes hit the paths the health server
//! serves on the port it is told to listen on; Services, the PodDisruptionBudget and the
//! NetworkPolicy select the Deployment's pods; every file the configuration names is mounted
//! from a Secret that has it; every configuration key and `RDS_AUTH_SERVER_*` variable is a
//! documented key of the server proxy (docs/configuration.md, which `config_reference` checks
//! against the binary); the IAM policies have the shape IAM accepts and allow every RDS call
//! discovery makes.
//!
//! No cluster, AWS account or kubectl is needed: this reads files only.

#![allow(clippy::unwrap_used, reason = "a test's helpers fail the test the same way its body does")]

#[allow(dead_code, reason = "this test uses the doc parser, not the binary checks")]
#[path = "../../crates/rds-auth-proxy/tests/support/config_keys.rs"]
mod config_keys;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::Value;

/// The server proxy's container in every example.
const CONTAINER: &str = "rds-auth-proxy-server";
const HEALTH_PATHS: [&str; 3] = ["/startup", "/liveness", "/readiness"];
const HEALTH_ENV: &str = "RDS_AUTH_SERVER_HEALTH__ADDRESS";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn deploy_dir() -> PathBuf {
    root().join("docs/deploy")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// A YAML node as JSON, so YAML and JSON files are checked the same way.
fn to_json(yaml: &Yaml<'_>, file: &Path) -> Value {
    match yaml {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        Yaml::Value(Scalar::Integer(i)) => Value::from(*i),
        Yaml::Value(Scalar::FloatingPoint(f)) => Value::from(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => Value::String(s.to_string()),
        Yaml::Representation(s, _, _) => Value::String(s.to_string()),
        Yaml::Tagged(_, inner) => to_json(inner, file),
        Yaml::Sequence(items) => Value::Array(items.iter().map(|item| to_json(item, file)).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let key = match to_json(key, file) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(value, file))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::BadValue => panic!("{}: a YAML value that cannot be read", relative(file)),
    }
}

/// Every YAML document under docs/deploy, with its file.
fn yaml_documents() -> Vec<(PathBuf, Value)> {
    let mut documents = Vec::new();
    for path in files_under(&deploy_dir()).into_iter().filter(|p| has_extension(p, &["yaml", "yml"])) {
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = Yaml::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", relative(&path)));
        for document in &parsed {
            documents.push((path.clone(), to_json(document, &path)));
        }
    }
    documents
}

fn json_file(path: &str) -> Value {
    let path = deploy_dir().join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", relative(&path)));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", relative(&path)))
}

/// The document of `kind` and `name` in a file directly in `dir` (relative to docs/deploy).
fn find<'a>(documents: &'a [(PathBuf, Value)], dir: &str, kind: &str, name: &str) -> &'a Value {
    let dir = deploy_dir().join(dir);
    documents
        .iter()
        .find(|(path, doc)| {
            path.parent() == Some(dir.as_path()) && doc["kind"] == kind && doc["metadata"]["name"] == name
        })
        .map(|(_, doc)| doc)
        .unwrap_or_else(|| panic!("no {kind} {name} under docs/deploy/{}", dir.display()))
}

fn base_documents(documents: &[(PathBuf, Value)]) -> Vec<&Value> {
    let base = deploy_dir().join("kubernetes");
    documents.iter().filter(|(path, _)| path.parent() == Some(base.as_path())).map(|(_, doc)| doc).collect()
}

fn server_container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CONTAINER)
        .unwrap_or_else(|| panic!("the Deployment has no container {CONTAINER}"))
}

fn env_value<'a>(env: &'a Value, name: &str) -> Option<&'a str> {
    env.as_array()?.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str())
}

fn port_of(address: &str) -> u64 {
    address.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap()
}

fn server_doc_rows() -> Vec<config_keys::DocRow> {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    config_keys::doc_rows(&doc, "Server proxy")
}

/// `RDS_AUTH_SERVER_*` variables must set documented keys; `RDS_AUTH_SERVER_CONFIG` is the
/// `--config` flag's.
fn check_env_names(names: &[&str], rows: &[config_keys::DocRow], file: &str) {
    let keys: BTreeSet<String> = rows
        .iter()
        .flat_map(|row| &row.keys)
        .map(|key| config_keys::env_name("RDS_AUTH_SERVER_", key))
        .collect();
    let unknown: Vec<&&str> = names
        .iter()
        .filter(|name| name.starts_with("RDS_AUTH_SERVER_") && **name != "RDS_AUTH_SERVER_CONFIG")
        .filter(|name| !keys.contains(**name))
        .collect();
    assert!(
        unknown.is_empty(),
        "{file} sets {unknown:?}, which set no key documented in docs/configuration.md's server table"
    );
}

/// Every key of a server.toml is a documented key of the server proxy; returns the file paths
/// it names (certificates, keys, cancel key files).
fn check_server_toml(text: &str, rows: &[config_keys::DocRow], file: &str) -> Vec<String> {
    let parsed: toml::Value = toml::from_str(text).unwrap_or_else(|e| panic!("{file}: server.toml: {e}"));
    let json = serde_json::to_value(&parsed).unwrap();
    let undocumented: Vec<String> = config_keys::json_keys(&json)
        .into_iter()
        .filter(|(key, printed)| !config_keys::is_documented_in(rows, key, printed))
        .map(|(key, _)| key)
        .collect();
    assert!(undocumented.is_empty(), "{file}: server.toml uses undocumented keys {undocumented:?}");
    let mut paths: Vec<String> = ["cert", "key", "client_ca"]
        .iter()
        .filter_map(|key| json["listen"][key].as_str().map(str::to_owned))
        .collect();
    if let Some(files) = json["cancel"]["key_files"].as_array() {
        paths.extend(files.iter().filter_map(|f| f.as_str().map(str::to_owned)));
    }
    paths
}

#[test]
fn every_yaml_document_and_json_file_parses() {
    let documents = yaml_documents();
    assert!(documents.len() >= 10, "only {} YAML documents under docs/deploy", documents.len());
    for (path, document) in &documents {
        let file = relative(path);
        assert!(document["apiVersion"].is_string(), "{file}: a document without apiVersion");
        assert!(document["kind"].is_string(), "{file}: a document without kind");
        if document["kind"] != "Kustomization" {
            assert!(
                document["metadata"]["name"].is_string(),
                "{file}: a {} without a name",
                document["kind"]
            );
        }
    }
    let json_files: Vec<PathBuf> =
        files_under(&deploy_dir()).into_iter().filter(|p| has_extension(p, &["json"])).collect();
    assert!(!json_files.is_empty());
    for path in json_files {
        json_file(&path.strip_prefix(deploy_dir()).unwrap().display().to_string());
    }
}

#[test]
fn kustomizations_name_files_that_exist() {
    for (path, document) in yaml_documents().iter().filter(|(_, d)| d["kind"] == "Kustomization") {
        let dir = path.parent().unwrap();
        let resources = document["resources"].as_array().cloned().unwrap_or_default();
        let patches = document["patches"].as_array().cloned().unwrap_or_default();
        let named = resources
            .iter()
            .filter_map(Value::as_str)
            .chain(patches.iter().filter_map(|p| p["path"].as_str()));
        for name in named {
            assert!(dir.join(name).exists(), "{}: {name} does not exist", relative(path));
        }
    }
}

#[test]
fn probes_reach_the_health_server() {
    let documents = yaml_documents();
    let deployment = find(&documents, "kubernetes", "Deployment", CONTAINER);
    let container = server_container(deployment);
    let health = env_value(&container["env"], HEALTH_ENV).unwrap_or_else(|| {
        panic!("the Deployment must set {HEALTH_ENV}: the health server listens on loopback by default")
    });
    assert!(
        health.starts_with("0.0.0.0:"),
        "{HEALTH_ENV} = {health}: the kubelet probes from outside the pod"
    );
    let health_port = port_of(health);
    let ports = container["ports"].as_array().unwrap();
    let port_named =
        |name: &str| ports.iter().find(|p| p["name"] == name).map(|p| p["containerPort"].as_u64().unwrap());
    assert_eq!(port_named("health"), Some(health_port), "the container port named health");

    let served = health_paths_in_code();
    for (probe, path) in
        [("startupProbe", "/startup"), ("livenessProbe", "/liveness"), ("readinessProbe", "/readiness")]
    {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = &get["port"];
        assert!(
            *port == "health" || port.as_u64() == Some(health_port),
            "{probe} must probe the health port, not {port}"
        );
        assert!(served.contains(path), "{path} is not a path the health server serves");
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], health_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert!(served.contains("/metrics"), "/metrics is not a path the health server serves");

    let service = find(&documents, "kubernetes", "Service", CONTAINER);
    let check = &service["metadata"]["annotations"];
    assert_eq!(
        check["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"],
        health_port.to_string()
    );
    assert_eq!(check["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"], "/readiness");
}

/// The string literals of the health server's paths, wherever the server crates define them.
fn health_paths_in_code() -> BTreeSet<&'static str> {
    let mut found = BTreeSet::new();
    for dir in ["crates/rds-auth-server/src", "crates/rds-auth-proxy-server/src"] {
        for file in files_under(&root().join(dir)).into_iter().filter(|p| has_extension(p, &["rs"])) {
            let text = std::fs::read_to_string(&file).unwrap();
            for path in HEALTH_PATHS.iter().chain(&["/metrics"]) {
                if text.contains(&format!("\"{path}\"")) {
                    found.insert(*path);
                }
            }
        }
    }
    found
}

/// A duration setting in milliseconds: the environment, then server.toml, then the documented
/// default.
fn shutdown_ms(key: &str, env: &Value, server_toml: &toml::Value, rows: &[config_keys::DocRow]) -> u128 {
    let (section, field) = key.split_once('.').unwrap();
    let text = env_value(env, &config_keys::env_name("RDS_AUTH_SERVER_", key))
        .map(str::to_owned)
        .or_else(|| server_toml.get(section)?.get(field)?.as_str().map(str::to_owned))
        .or_else(|| {
            let row = rows.iter().find(|row| row.keys.iter().any(|k| k == key))?;
            Some(row.default.trim_matches('`').to_owned())
        })
        .unwrap_or_else(|| panic!("{key} is neither set nor documented"));
    config_keys::parse_duration(&text).unwrap_or_else(|| panic!("{key} = {text:?} is not a duration"))
}

#[test]
fn the_grace_period_covers_the_drain() {
    let rows = server_doc_rows();
    let documents = yaml_documents();
    let deployment = find(&documents, "kubernetes", "Deployment", CONTAINER);
    let env = &server_container(deployment)["env"];
    let configmap = find(&documents, "kubernetes", "ConfigMap", CONTAINER);
    let server_toml: toml::Value =
        toml::from_str(configmap["data"]["server.toml"].as_str().unwrap()).unwrap();
    let drain = shutdown_ms("shutdown.min_delay", env, &server_toml, &rows)
        + shutdown_ms("shutdown.max_delay", env, &server_toml, &rows);
    let grace =
        u128::from(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace * 1000 > drain,
        "terminationGracePeriodSeconds {grace} s is shorter than the drain, {drain} ms"
    );

    let task = json_file("ecs/task-definition.json");
    let server =
        task["containerDefinitions"].as_array().unwrap().iter().find(|c| c["name"] == CONTAINER).unwrap();
    let ecs_toml: toml::Value =
        toml::from_str(&std::fs::read_to_string(deploy_dir().join("ecs/server.toml")).unwrap()).unwrap();
    let drain = shutdown_ms("shutdown.min_delay", &server["environment"], &ecs_toml, &rows)
        + shutdown_ms("shutdown.max_delay", &server["environment"], &ecs_toml, &rows);
    let stop = u128::from(server["stopTimeout"].as_u64().unwrap());
    assert!(stop * 1000 > drain, "stopTimeout {stop} s is shorter than the drain, {drain} ms");
    assert!(stop <= 120, "Fargate allows a stopTimeout of 120 s at most");
}

#[test]
fn the_service_and_the_postgres_port_agree() {
    let documents = yaml_documents();
    let deployment = find(&documents, "kubernetes", "Deployment", CONTAINER);
    let container = server_container(deployment);
    let configmap = find(&documents, "kubernetes", "ConfigMap", CONTAINER);
    let server_toml: toml::Value =
        toml::from_str(configmap["data"]["server.toml"].as_str().unwrap()).unwrap();
    let listen = server_toml
        .get("listen")
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .unwrap_or("0.0.0.0:5432");
    let listen_port = port_of(listen);
    let postgres = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == "postgres").unwrap();
    assert_eq!(
        postgres["containerPort"].as_u64(),
        Some(listen_port),
        "containerPort postgres vs listen.address"
    );

    let service = find(&documents, "kubernetes", "Service", CONTAINER);
    let service_port = &service["spec"]["ports"][0];
    assert!(
        service_port["targetPort"] == "postgres" || service_port["targetPort"].as_u64() == Some(listen_port),
        "the Service must target the postgres port"
    );
    let ingress_ports: BTreeSet<u64> =
        find(&documents, "kubernetes", "NetworkPolicy", CONTAINER)["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["port"].as_u64())
            .collect();
    let health_port = port_of(env_value(&container["env"], HEALTH_ENV).unwrap());
    assert!(ingress_ports.contains(&listen_port), "the NetworkPolicy must let client proxies in");
    assert!(ingress_ports.contains(&health_port), "the NetworkPolicy must let health checks in");
}

#[test]
fn selectors_match_the_pods() {
    let documents = yaml_documents();
    let deployment = find(&documents, "kubernetes", "Deployment", CONTAINER);
    let labels = deployment["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
    let matches = |selector: &Value, what: &str| {
        let selector = selector.as_object().unwrap_or_else(|| panic!("{what} has no selector"));
        assert!(!selector.is_empty(), "{what} selects everything");
        for (key, value) in selector {
            assert_eq!(labels.get(key), Some(value), "{what} selects {key}={value}, which the pods lack");
        }
    };
    matches(&deployment["spec"]["selector"]["matchLabels"], "the Deployment");
    matches(&find(&documents, "kubernetes", "Service", CONTAINER)["spec"]["selector"], "the Service");
    matches(
        &find(&documents, "kubernetes", "PodDisruptionBudget", CONTAINER)["spec"]["selector"]["matchLabels"],
        "the PodDisruptionBudget",
    );
    matches(
        &find(&documents, "kubernetes", "NetworkPolicy", CONTAINER)["spec"]["podSelector"]["matchLabels"],
        "the NetworkPolicy",
    );
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    let min_available =
        find(&documents, "kubernetes", "PodDisruptionBudget", CONTAINER)["spec"]["minAvailable"]
            .as_u64()
            .unwrap();
    assert!(min_available < replicas, "the PodDisruptionBudget would block every eviction");
}

#[test]
fn irsa_ties_the_service_account_to_the_role() {
    let documents = yaml_documents();
    let deployment = find(&documents, "kubernetes", "Deployment", CONTAINER);
    let account_name = deployment["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
    let account = find(&documents, "kubernetes", "ServiceAccount", account_name);
    let namespace = account["metadata"]["namespace"].as_str().unwrap();
    let role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str().unwrap();
    assert!(role.starts_with("arn:aws:iam::") && role.contains(":role/"), "{role}");
    let trust = json_file("iam/server-irsa-trust-policy.json");
    let conditions = trust["Statement"][0]["Condition"]["StringEquals"].as_object().unwrap();
    let subject = conditions.iter().find(|(k, _)| k.ends_with(":sub")).map(|(_, v)| v).unwrap();
    assert_eq!(subject, &format!("system:serviceaccount:{namespace}:{account_name}"));
}

#[test]
fn configuration_keys_are_documented_and_named_files_are_mounted() {
    let rows = server_doc_rows();
    let documents = yaml_documents();
    let deployment = find(&documents, "kubernetes", "Deployment", CONTAINER);
    let container = server_container(deployment);
    let names: Vec<&str> =
        container["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    check_env_names(&names, &rows, "kubernetes/deployment.yaml");

    let configmap = find(&documents, "kubernetes", "ConfigMap", CONTAINER);
    let paths = check_server_toml(
        configmap["data"]["server.toml"].as_str().unwrap(),
        &rows,
        "kubernetes/configmap.yaml",
    );
    assert!(!paths.is_empty());

    let args: Vec<&str> = container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let config_path = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1]).unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let config_mount =
        mounts.iter().find(|m| m["mountPath"] == config_path).expect("the --config file is mounted");
    let config_volume = volumes.iter().find(|v| v["name"] == config_mount["name"]).unwrap();
    assert_eq!(config_volume["configMap"]["name"], CONTAINER);
    assert!(configmap["data"][config_mount["subPath"].as_str().unwrap()].is_string());

    for overlay in ["kubernetes", "kubernetes/overlays/cert-manager"] {
        for path in &paths {
            let (dir, file) = path.rsplit_once('/').unwrap();
            let mount = mounts
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("{path} from server.toml is not under a volume mount"));
            let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
            let secret_name = volume["secret"]["secretName"].as_str().unwrap();
            let made_by_cert_manager = overlay.ends_with("cert-manager")
                && documents.iter().any(|(p, d)| {
                    p.parent() == Some(deploy_dir().join(overlay).as_path())
                        && d["kind"] == "Certificate"
                        && d["spec"]["secretName"] == secret_name
                });
            if made_by_cert_manager {
                assert!(["tls.crt", "tls.key", "ca.crt"].contains(&file), "cert-manager writes no {file}");
            } else {
                let secret = find(&documents, "kubernetes", "Secret", secret_name);
                let has = secret["stringData"][file].is_string() || secret["data"][file].is_string();
                assert!(has, "the Secret {secret_name} has no {file}, which server.toml names");
            }
        }
    }
}

#[test]
fn the_proxy_protocol_overlay_turns_on_both_halves() {
    let documents = yaml_documents();
    let service = find(&documents, "kubernetes/overlays/proxy-protocol", "Service", CONTAINER);
    assert_eq!(
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"],
        "*"
    );
    let deployment = find(&documents, "kubernetes/overlays/proxy-protocol", "Deployment", CONTAINER);
    let env = &server_container(deployment)["env"];
    assert_eq!(env_value(env, "RDS_AUTH_SERVER_LISTEN__PROXY_PROTOCOL"), Some("true"));
    check_env_names(
        &["RDS_AUTH_SERVER_LISTEN__PROXY_PROTOCOL"],
        &server_doc_rows(),
        "overlays/proxy-protocol",
    );
    // The base stays without it: one half alone breaks every connection.
    let base = base_documents(&documents);
    assert!(base.iter().all(|d| {
        d["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"].is_null()
    }));
}

#[test]
fn the_cert_manager_overlay_replaces_the_static_secret() {
    let documents = yaml_documents();
    let delete = find(&documents, "kubernetes/overlays/cert-manager", "Secret", "rds-auth-proxy-server-tls");
    assert_eq!(delete["$patch"], "delete");
    let certificate =
        find(&documents, "kubernetes/overlays/cert-manager", "Certificate", "rds-auth-proxy-server");
    assert_eq!(certificate["spec"]["secretName"], "rds-auth-proxy-server-tls");
    let usages: Vec<&str> =
        certificate["spec"]["usages"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(usages.contains(&"server auth"));
    let client =
        find(&documents, "kubernetes/overlays/cert-manager", "Certificate", "rds-auth-proxy-client-alice");
    let usages: Vec<&str> =
        client["spec"]["usages"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(
        usages.contains(&"client auth"),
        "rustls refuses client certificates without the client auth usage"
    );
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"], client["spec"]["issuerRef"]["name"],
        "one CA for both sides"
    );
}

#[test]
fn the_ecs_task_matches_the_server() {
    let task = json_file("ecs/task-definition.json");
    let containers = task["containerDefinitions"].as_array().unwrap();
    let server = containers.iter().find(|c| c["name"] == CONTAINER).unwrap();
    assert_eq!(
        server["healthCheck"]["command"],
        serde_json::json!(["CMD", "/bin/rds-auth-proxy-server", "healthcheck"])
    );
    let env = &server["environment"];
    let health = env_value(env, HEALTH_ENV).unwrap();
    let ports: BTreeSet<u64> = server["portMappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert!(ports.contains(&port_of(health)), "the health port is mapped");

    let rows = server_doc_rows();
    let names: Vec<&str> = env.as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    check_env_names(&names, &rows, "ecs/task-definition.json");
    let server_toml = std::fs::read_to_string(deploy_dir().join("ecs/server.toml")).unwrap();
    let listen: toml::Value = toml::from_str(&server_toml).unwrap();
    let listen = listen
        .get("listen")
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .unwrap_or("0.0.0.0:5432");
    assert!(ports.contains(&port_of(listen)), "listen.address's port is mapped");

    // The config container writes every file the server reads, where the server mounts them.
    let config_path = env_value(env, "RDS_AUTH_SERVER_CONFIG").unwrap();
    let mut paths = check_server_toml(&server_toml, &rows, "ecs/server.toml");
    paths.push(config_path.to_owned());
    let writer = containers.iter().find(|c| c["essential"] == false).unwrap();
    let script = writer["command"].to_string();
    let mount = server["mountPoints"][0]["containerPath"].as_str().unwrap();
    for path in &paths {
        assert!(path.starts_with(&format!("{mount}/")), "{path} is not on the shared volume {mount}");
        assert!(script.contains(path.as_str()), "the config container does not write {path}");
    }
    assert_eq!(server["dependsOn"][0]["containerName"], writer["name"]);
    assert_eq!(server["dependsOn"][0]["condition"], "SUCCESS");
}

#[test]
fn iam_policies_have_the_shape_iam_accepts() {
    let files: Vec<PathBuf> = files_under(&deploy_dir().join("iam"));
    assert!(files.len() >= 3);
    for path in files {
        let name = path.strip_prefix(deploy_dir()).unwrap().display().to_string();
        let policy = json_file(&name);
        let top = policy.as_object().unwrap_or_else(|| panic!("{name}: not an object"));
        for key in top.keys() {
            assert!(["Version", "Id", "Statement"].contains(&key.as_str()), "{name}: unknown element {key}");
        }
        assert_eq!(policy["Version"], "2012-10-17", "{name}");
        let statements = match &policy["Statement"] {
            Value::Array(statements) => statements.clone(),
            single @ Value::Object(_) => vec![single.clone()],
            other => panic!("{name}: Statement is {other}"),
        };
        assert!(!statements.is_empty(), "{name}: no statement");
        let trust = name.contains("trust");
        for statement in &statements {
            let object = statement.as_object().unwrap();
            for key in object.keys() {
                assert!(
                    [
                        "Sid",
                        "Effect",
                        "Principal",
                        "Action",
                        "NotAction",
                        "Resource",
                        "NotResource",
                        "Condition"
                    ]
                    .contains(&key.as_str()),
                    "{name}: unknown statement element {key}"
                );
            }
            if let Some(sid) = statement["Sid"].as_str() {
                assert!(
                    sid.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{name}: Sid {sid:?} must be alphanumeric"
                );
            }
            assert!(statement["Effect"] == "Allow" || statement["Effect"] == "Deny", "{name}: Effect");
            for action in strings(&statement["Action"], &name) {
                let (service, operation) =
                    action.split_once(':').unwrap_or_else(|| panic!("{name}: action {action}"));
                assert!(
                    service.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                    "{name}: action {action}"
                );
                assert!(
                    operation.chars().all(|c| c.is_ascii_alphanumeric() || c == '*'),
                    "{name}: action {action}"
                );
            }
            if trust {
                assert!(statement["Principal"].is_object(), "{name}: a trust policy names a Principal");
                assert!(statement["Resource"].is_null(), "{name}: a trust policy has no Resource");
            } else {
                assert!(statement["Principal"].is_null(), "{name}: an identity policy has no Principal");
                for resource in strings(&statement["Resource"], &name) {
                    assert!(
                        resource == "*" || resource.starts_with("arn:aws:"),
                        "{name}: resource {resource}"
                    );
                }
            }
        }
    }
}

fn strings<'a>(value: &'a Value, file: &str) -> Vec<&'a str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().unwrap_or_else(|| panic!("{file}: {i} is not a string")))
            .collect(),
        other => panic!("{file}: expected a string or a list of strings, found {other}"),
    }
}

/// Every `rds:` action in a policy, and every `rds-db:connect` resource.
fn allowed(policy: &Value, file: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut actions = BTreeSet::new();
    let mut connect = Vec::new();
    for statement in policy["Statement"].as_array().unwrap().iter().filter(|s| s["Effect"] == "Allow") {
        let statement_actions = strings(&statement["Action"], file);
        if statement_actions.contains(&"rds-db:connect") {
            connect.extend(strings(&statement["Resource"], file).into_iter().map(str::to_owned));
        }
        actions.extend(statement_actions.into_iter().map(str::to_owned));
    }
    (actions, connect)
}

/// The RDS API calls discovery makes, read from its source: `describe_db_instances()` is
/// `rds:DescribeDBInstances`.
fn discovery_calls() -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    for file in files_under(&root().join("crates/rds-auth-discovery/src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".describe_") {
            let name: String =
                text[at + 1..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !text[at + 1 + name.len()..].starts_with("()") {
                continue;
            }
            let camel: String = name
                .split('_')
                .map(|word| match word {
                    "db" => "DB".to_owned(),
                    word => word[..1].to_ascii_uppercase() + &word[1..],
                })
                .collect();
            calls.insert(format!("rds:{camel}"));
        }
    }
    calls
}

#[test]
fn policies_allow_what_the_proxies_call() {
    let calls = discovery_calls();
    assert!(calls.contains("rds:DescribeDBInstances"), "found {calls:?}");
    for file in ["iam/client-policy.json", "iam/server-policy.json"] {
        let (actions, _) = allowed(&json_file(file), file);
        let missing: Vec<&String> = calls.iter().filter(|call| !actions.contains(*call)).collect();
        assert!(missing.is_empty(), "{file} does not allow {missing:?}, which discovery calls");
    }

    let (client_actions, connect) = allowed(&json_file("iam/client-policy.json"), "client-policy.json");
    assert!(client_actions.contains("sts:GetCallerIdentity"), "doctor asks who the caller is");
    assert!(!connect.is_empty(), "the client needs rds-db:connect");
    for resource in &connect {
        // arn:aws:rds-db:<region>:<account>:dbuser:<DbiResourceId or cluster id>/<db user>
        let parts: Vec<&str> = resource.splitn(6, ':').collect();
        assert_eq!(parts[..3], ["arn", "aws", "rds-db"], "{resource}");
        assert!(parts[4].len() == 12 && parts[4].chars().all(|c| c.is_ascii_digit()), "{resource}: account");
        let (id, user) = parts[5].strip_prefix("dbuser:").and_then(|r| r.split_once('/')).unwrap();
        assert!(
            id.starts_with("db-") || id.starts_with("cluster-"),
            "{resource}: the resource id, not the name"
        );
        assert!(!user.is_empty(), "{resource}: the database user");
    }

    let (server_actions, server_connect) =
        allowed(&json_file("iam/server-policy.json"), "server-policy.json");
    assert!(server_connect.is_empty(), "the server proxy signs nothing: it needs no rds-db:connect");
    assert!(
        server_actions.iter().all(|a| a.starts_with("rds:Describe")),
        "the server needs only describe: {server_actions:?}"
    );
}
