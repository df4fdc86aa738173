//! The deployment files under `ops/deploy/` agree with the binary they run.
//!
//! No container engine or cluster runs here, so these tests check what can
//! be checked without one: the Helm chart lints and renders, every YAML and
//! JSON file parses, every environment variable the files set is one `agora`
//! reads, every role and subcommand they start exists, and every metric the
//! dashboard and the alert rules query is one a running `agora` exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use ops::cli::Cli;
use serde_json::{json, Value};
use testkit::{TestDatabase, TestNats};
use yaml_rust2::{Yaml, YamlLoader};

use crate::exposition::parse;
use crate::support::{eventually_within, Agora};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ops sits in the repository")
        .to_path_buf()
}

fn deploy(path: &str) -> PathBuf {
    repo().join("ops/deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

fn yaml_documents(text: &str, what: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|err| panic!("{what} is not valid YAML: {err}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Compose files use `<<: *anchor` merge keys, which the YAML loader keeps
/// as plain keys: fold them in, the explicit keys winning.
fn merged(node: &Yaml) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    if let Yaml::Hash(hash) = node {
        if let Some(base) = hash.get(&Yaml::String("<<".into())) {
            out.extend(merged(base));
        }
        for (key, value) in hash {
            if let Some(key) = key.as_str() {
                if key != "<<" {
                    out.insert(key.to_owned(), value.clone());
                }
            }
        }
    }
    out
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every variable `agora` reads: those the configuration looks up (recorded
/// through its lookup function) and those clap takes from the environment.
fn variables_agora_reads() -> BTreeSet<String> {
    let seen = std::cell::RefCell::new(BTreeSet::new());
    ops::config::Config::from_lookup(|name| {
        seen.borrow_mut().insert(name.to_owned());
        None
    })
    .expect("the defaults are valid");
    let mut seen = seen.into_inner();
    fn walk(command: &clap::Command, seen: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                seen.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, seen);
        }
    }
    walk(&Cli::command(), &mut seen);
    seen
}

/// `agora <args>` is a command line the binary accepts.
fn assert_agora_accepts(args: &[String], file: &str) {
    let argv = std::iter::once("agora".to_owned()).chain(args.iter().cloned());
    if let Err(err) = Cli::try_parse_from(argv) {
        panic!(
            "{file} runs `agora {}`, which the binary refuses: {err}",
            args.join(" ")
        );
    }
}

fn helm() -> String {
    if let Ok(helm) = std::env::var("AGORA_HELM") {
        return helm;
    }
    let output = Command::new("bash")
        .arg(repo().join("ops/scripts/helm.sh"))
        .output()
        .expect("run ops/scripts/helm.sh");
    assert!(
        output.status.success(),
        "no helm binary: ops/scripts/helm.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn helm_run(args: &[&str]) -> String {
    let output = Command::new(helm()).args(args).output().expect("run helm");
    assert!(
        output.status.success(),
        "helm {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn rendered_chart() -> Vec<Yaml> {
    let chart = deploy("helm/agora");
    let chart = chart.to_str().expect("a UTF-8 path");
    helm_run(&["lint", "--strict", chart]);
    let text = helm_run(&["template", "agora", chart, "--set", "gateway.enabled=true"]);
    yaml_documents(&text, "the rendered chart")
}

fn kind_and_name(doc: &Yaml) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_owned(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn the_chart_renders_a_deployment_per_role_with_probes_hooks_and_scaling() {
    let docs = rendered_chart();
    let by_kind = |kind: &str| -> Vec<&Yaml> {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    };

    for role in ["api", "relay", "projector", "saga"] {
        let name = format!("agora-agora-{role}");
        let deployment = by_kind("Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"].as_str() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            strings(&container["args"]),
            vec!["serve", "--role", role],
            "{name} runs its role"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
        assert!(
            !container["resources"]["requests"]["cpu"].is_badvalue(),
            "{name} requests cpu"
        );
        let secret_env: Vec<_> = container["env"]
            .as_vec()
            .map(|env| {
                env.iter()
                    .filter(|e| !e["valueFrom"]["secretKeyRef"].is_badvalue())
                    .filter_map(|e| e["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            secret_env.contains(&"AGORA_JWT_SECRET") && secret_env.contains(&"AGORA_DATA_KEY"),
            "{name}: {secret_env:?}"
        );
    }

    let hpa_targets: BTreeSet<_> = by_kind("HorizontalPodAutoscaler")
        .iter()
        .filter_map(|h| h["spec"]["scaleTargetRef"]["name"].as_str())
        .collect();
    assert_eq!(
        hpa_targets,
        BTreeSet::from(["agora-agora-api", "agora-agora-projector"])
    );
    assert_eq!(by_kind("PodDisruptionBudget").len(), 4);

    let job = by_kind("Job");
    assert_eq!(job.len(), 1, "one migration job");
    assert_eq!(
        job[0]["metadata"]["annotations"]["helm.sh/hook"].as_str(),
        Some("pre-install,pre-upgrade")
    );
    assert_eq!(
        strings(&job[0]["spec"]["template"]["spec"]["containers"][0]["args"]),
        vec!["migrate"]
    );
    assert!(!by_kind("ConfigMap").is_empty());
    assert!(by_kind("Service")
        .iter()
        .any(|s| kind_and_name(s).1 == "agora-agora-api"));
}

#[test]
fn the_chart_refuses_values_its_schema_forbids() {
    let chart = deploy("helm/agora");
    let output = Command::new(helm())
        .args(["template", "agora", chart.to_str().expect("a UTF-8 path")])
        .args(["--set", "roles.api.replicas=0"])
        .output()
        .expect("run helm");
    assert!(
        !output.status.success(),
        "a zero-replica api must be refused"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("roles.api.replicas"), "{stderr}");
}

#[test]
fn every_variable_the_files_set_is_one_agora_reads() {
    let reads = variables_agora_reads();
    let mut set: BTreeMap<String, String> = BTreeMap::new();

    for doc in rendered_chart() {
        let (kind, name) = kind_and_name(&doc);
        if kind == "ConfigMap" {
            for key in merged(&doc["data"]).keys() {
                set.insert(key.clone(), format!("chart ConfigMap {name}"));
            }
        }
        let containers = &doc["spec"]["template"]["spec"]["containers"];
        for container in containers.as_vec().into_iter().flatten() {
            for env in container["env"].as_vec().into_iter().flatten() {
                if let Some(var) = env["name"].as_str() {
                    set.insert(var.to_owned(), format!("chart {kind} {name}"));
                }
            }
        }
    }

    let compose = yaml_documents(&read(&deploy("compose.yaml")), "compose.yaml");
    let services = merged(&compose[0]["services"]);
    for (service, spec) in &services {
        let spec = merged(spec);
        let runs_agora = spec
            .get("image")
            .and_then(Yaml::as_str)
            .is_some_and(|image| image.starts_with("agora"));
        if runs_agora {
            for var in merged(&spec["environment"]).keys() {
                set.insert(var.clone(), format!("compose service {service}"));
            }
        }
    }

    assert!(set.len() > 5, "the files set variables: {set:?}");
    let unknown: Vec<_> = set
        .iter()
        .filter(|(var, _)| !reads.contains(*var))
        .map(|(var, file)| format!("{var} (in {file})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "set but never read by agora: {unknown:?}"
    );

    // And .env.example, the operator's list, names exactly what agora reads.
    let example: BTreeSet<String> = read(&repo().join(".env.example"))
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect();
    assert_eq!(
        example, reads,
        ".env.example lists every variable agora reads, and no other"
    );
}

#[test]
fn every_role_and_subcommand_the_files_start_exists() {
    let mut started = 0;
    for doc in rendered_chart() {
        let containers = &doc["spec"]["template"]["spec"]["containers"];
        for container in containers.as_vec().into_iter().flatten() {
            assert_agora_accepts(&strings(&container["args"]), "the chart");
            started += 1;
        }
    }
    let compose = yaml_documents(&read(&deploy("compose.yaml")), "compose.yaml");
    for (service, spec) in merged(&compose[0]["services"]) {
        let spec = merged(&spec);
        let runs_agora = spec
            .get("image")
            .and_then(Yaml::as_str)
            .is_some_and(|image| image.starts_with("agora"));
        if runs_agora {
            let args = strings(&spec["command"]);
            assert!(
                !args.is_empty(),
                "compose service {service} says what it runs"
            );
            assert_agora_accepts(&args, &format!("compose service {service}"));
            started += 1;
        }
    }
    assert!(started >= 10, "found {started} agora containers");
}

/// Metric names a PromQL expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("agora_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len() - start);
        if boundary {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

fn queried_metrics() -> BTreeMap<String, String> {
    let mut queried = BTreeMap::new();
    let dashboard: Value = serde_json::from_str(&read(&deploy("grafana/dashboards/agora.json")))
        .expect("the dashboard is valid JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            for name in metric_names(expr) {
                queried.insert(name, format!("dashboard panel {:?}", panel["title"]));
            }
        }
    }
    let alerts = yaml_documents(&read(&deploy("prometheus/alerts.yml")), "alerts.yml");
    for group in alerts[0]["groups"].as_vec().expect("alert groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            for name in metric_names(expr) {
                queried.insert(name, format!("alert {:?}", rule["alert"].as_str()));
            }
        }
    }
    queried
}

#[test]
fn the_dashboard_and_the_alerts_parse_and_query_agora_metrics() {
    let queried = queried_metrics();
    assert!(queried.len() > 15, "{queried:?}");
    let prometheus = yaml_documents(
        &read(&deploy("prometheus/prometheus.yml")),
        "prometheus.yml",
    );
    assert_eq!(
        strings(&prometheus[0]["rule_files"]),
        vec!["/etc/prometheus/alerts.yml"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    // The child runs every role, the saga included, with a gateway beside it.
    let mut agora = Agora::new(&db, &testkit::nats_url(), &nats.prefix);
    agora.start();
    let base = agora.base();
    let http = reqwest::Client::new();
    eventually_within("agora is ready", Duration::from_secs(20), || {
        let request = http.get(format!("{base}/readyz")).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;

    // One of everything, so labelled series exist: a user, a product, an
    // order that runs through the saga and the gateway, and reads.
    let post = |path: &str, body: Value| {
        let request = http.post(format!("{base}{path}")).json(&body).send();
        async move {
            let response = request.await.expect("request");
            assert!(response.status().is_success(), "{}", response.status());
            response.json::<Value>().await.expect("json")
        }
    };
    let user = post(
        "/users",
        json!({"email": "metrics@example.com", "name": "M"}),
    )
    .await;
    let product = post(
        "/products",
        json!({"sku": "MET-1", "name": "Meter", "price": {"amount": 100, "currency": "EUR"}, "stock": 5}),
    )
    .await;
    let order = post(
        "/orders",
        json!({"user_id": user["id"], "lines": [{"product_id": product["id"], "quantity": 1}], "payment_token": "tok_ok"}),
    )
    .await;
    let order_url = format!("{base}/orders/{}", order["id"].as_str().expect("order id"));
    eventually_within("the order is confirmed", Duration::from_secs(30), || {
        let request = http.get(&order_url).send();
        async move {
            match request.await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|o| o["status"] == "confirmed"),
                Err(_) => false,
            }
        }
    })
    .await;
    let product_url = format!("{base}/products/{}", product["id"].as_str().expect("id"));
    for _ in 0..2 {
        http.get(&product_url).send().await.expect("read");
    }

    let queried = queried_metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let missing = loop {
        let text = match http.get(format!("{base}/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // The same strict reader as the metrics tests: every line must be
        // valid exposition format; histograms appear as their `_bucket` series.
        let names: BTreeSet<String> = parse(&text).into_iter().map(|s| s.name).collect();
        let missing: BTreeMap<_, _> = queried
            .iter()
            .filter(|(name, _)| !names.contains(*name))
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}
