//! `/openapi.json` as the common client generators take it: whole, without a
//! warning, and with a type for every body. openapi-python-client and
//! openapi-typescript (pinned in `ops/tools/`) generate clients from the
//! served document; any line either prints beyond its success message fails
//! the test, and so does an operation whose body or answer went untyped.
//! The Python client then drives the server, so its models must parse real
//! answers.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use testkit::tools;

use crate::support::{spawn_app, TestApp};

/// A scratch folder, removed when the test passes (kept to look at if not).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("agora-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn served_document(app: &TestApp, dir: &Path) -> (Value, PathBuf) {
    let answer = app.get("/openapi.json").await;
    assert_eq!(answer.status, 200);
    let path = dir.join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&answer.body).unwrap()).unwrap();
    (answer.body, path)
}

/// Each operation: its id, its tag, the component of its JSON request body,
/// and `(status, component)` of each JSON answer.
type Shape = (String, String, Option<String>, Vec<(String, String)>);

fn operations(doc: &Value) -> Vec<Shape> {
    let component = |schema: &Value| {
        schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .map(str::to_owned)
    };
    let mut found = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let body = component(&op["requestBody"]["content"]["application/json"]["schema"]);
            let mut answers = Vec::new();
            for (status, response) in op["responses"].as_object().unwrap() {
                for media in response["content"]
                    .as_object()
                    .into_iter()
                    .flat_map(|c| c.values())
                {
                    if let Some(name) = component(&media["schema"]) {
                        answers.push((status.clone(), name));
                    }
                }
            }
            found.push((
                op["operationId"].as_str().unwrap().to_owned(),
                op["tags"][0].as_str().unwrap().to_owned(),
                body,
                answers,
            ));
        }
    }
    found
}

/// openapi-python-client's module name for an operation id.
fn snake_case(id: &str) -> String {
    let mut out = String::new();
    for (i, c) in id.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Its class name for a component.
fn class_name(component: &str) -> String {
    component.replace('_', "")
}

fn lines_besides<'a>(output: &'a str, expected: &[&str]) -> Vec<&'a str> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !expected.iter().any(|e| line.starts_with(e)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_python_client_generates_a_whole_client_that_parses_real_answers() {
    let python = tools::python_bin().await;
    let app = spawn_app().await;
    let scratch = Scratch::new("python-client");
    let (doc, path) = served_document(&app, &scratch.0).await;
    let package = scratch.0.join("agora_client");

    // Its post-generation hook is ruff, from the same venv.
    let path_var = format!(
        "{}:{}",
        python.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::process::Command::new(python.join("openapi-python-client"))
        .args([
            OsStr::new("generate"),
            OsStr::new("--path"),
            path.as_os_str(),
        ])
        .args([OsStr::new("--output-path"), package.as_os_str()])
        .args(["--meta", "none"])
        .env("PATH", path_var)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", tools::said(&output));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let extra = lines_besides(&said, &["Generating "]);
    assert!(
        extra.is_empty(),
        "openapi-python-client said more than that it generated:\n{said}"
    );

    let operations = operations(&doc);
    assert!(operations.len() >= 20);
    for (id, tag, body, answers) in &operations {
        let file = package
            .join("api")
            .join(tag)
            .join(format!("{}.py", snake_case(id)));
        let source = std::fs::read_to_string(&file)
            .unwrap_or_else(|_| panic!("{id}: no {} generated", file.display()));
        let parse = source
            .split("def _parse_response(")
            .nth(1)
            .unwrap_or_else(|| panic!("{id}: no _parse_response"));
        for (status, component) in answers {
            let schema = &doc["components"]["schemas"][component];
            if schema["type"] == "string" {
                assert!(
                    parse.contains(&format!("response_{status} = response.text")),
                    "{id}: answer {status} is not read as text"
                );
                continue;
            }
            // An array answer is a list of its items' class.
            let class = match schema["items"]["$ref"].as_str() {
                Some(items) if schema["type"] == "array" => {
                    class_name(items.rsplit('/').next().unwrap())
                }
                _ => class_name(component),
            };
            assert!(
                parse.contains(&format!("response.status_code == {status}"))
                    && parse.contains(&format!("{class}.from_dict(")),
                "{id}: answer {status} is not parsed as {class}"
            );
        }
        if let Some(body) = body {
            assert!(
                source.contains(&format!("body: {}", class_name(body))),
                "{id}: its body is not typed {body}"
            );
        }
    }
    // Every component that is an object is a model class.
    let models = std::fs::read_to_string(package.join("models/__init__.py")).unwrap();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if schema["type"] == "object" && schema.get("properties").is_some() {
            assert!(
                models.contains(&format!("import {}\n", class_name(name))),
                "no model class for {name}"
            );
        }
    }

    let smoke = tools::run(
        &python.join("python"),
        &[
            tools::file("python_client_smoke.py").as_os_str(),
            scratch.0.as_os_str(),
            OsStr::new("agora_client"),
            OsStr::new(&app.url("")),
        ],
    )
    .await;
    assert!(smoke.status.success(), "{}", tools::said(&smoke));
    assert_eq!(String::from_utf8_lossy(&smoke.stdout).trim(), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_typescript_types_every_body_and_answer_without_a_warning() {
    let modules = tools::node_modules().await;
    let app = spawn_app().await;
    let scratch = Scratch::new("typescript-client");
    let (doc, path) = served_document(&app, &scratch.0).await;
    let types = scratch.0.join("agora.d.ts");

    let output = tools::run(
        &modules.join(".bin/openapi-typescript"),
        &[path.as_os_str(), OsStr::new("-o"), types.as_os_str()],
    )
    .await;
    assert!(output.status.success(), "{}", tools::said(&output));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let extra = lines_besides(&said, &["✨ openapi-typescript", "🚀 "]);
    assert!(
        extra.is_empty(),
        "openapi-typescript said more than that it generated:\n{said}"
    );

    let text = std::fs::read_to_string(&types).unwrap();
    let schemas_at = text
        .find("export interface components {\n    schemas: {\n")
        .expect("a components interface");
    let schemas = &text[schemas_at..];
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let declaration = format!("\n        {name}: ");
        let at = schemas
            .find(&declaration)
            .unwrap_or_else(|| panic!("no type for the component {name}"));
        let rest = &schemas[at + declaration.len()..];
        assert!(
            !rest.starts_with("unknown") && !rest.starts_with("never"),
            "{name} is typed {}",
            &rest[..rest.find('\n').unwrap_or(rest.len())]
        );
    }
    let operations_at = text
        .find("export interface operations {\n")
        .expect("an operations interface");
    let all = &text[operations_at..];
    for (id, _, body, answers) in operations(&doc) {
        let start = all
            .find(&format!("\n    {id}: {{\n"))
            .unwrap_or_else(|| panic!("no type for the operation {id}"));
        let block = &all[start..];
        let block = &block[..block.find("\n    };\n").unwrap_or(block.len())];
        for (status, component) in &answers {
            let typed = format!("components[\"schemas\"][\"{component}\"]");
            let at = block
                .find(&format!("\n            {status}: {{\n"))
                .unwrap_or_else(|| panic!("{id}: no answer {status}"));
            let answer = &block[at..];
            let answer = &answer[..answer.find("\n            };\n").unwrap_or(answer.len())];
            assert!(
                answer.contains(&typed),
                "{id}: answer {status} is not {typed}:\n{answer}"
            );
        }
        if let Some(body) = body {
            assert!(
                block.contains(&format!(
                    "\"application/json\": components[\"schemas\"][\"{body}\"]"
                )),
                "{id}: its body is not typed {body}"
            );
        }
    }
}
