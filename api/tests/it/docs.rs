//! `/docs` with no network beyond the server: its page, scripts and
//! documents all come from Agora, under a Content-Security-Policy that
//! allows nothing else, and Debian's chromium (driven by
//! `ops/scripts/browser.sh`) renders every operation of the OpenAPI
//! document, and the AsyncAPI document beside it, with every request it
//! makes answered by the server.

use std::ffi::OsStr;

use serde_json::Value;
use testkit::tools;

use crate::support::spawn_app;

fn assets(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(name),
    )
    .unwrap()
}

/// Every source a fetch directive of `policy` allows, by directive.
fn directives(policy: &str) -> Vec<(String, Vec<String>)> {
    policy
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_owned();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_scripts_come_from_the_server_under_a_strict_policy() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let policy = headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let directives = directives(&policy);
    let allowed = |name: &str| {
        directives
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no {name} in {policy}"))
    };
    assert_eq!(allowed("default-src"), ["'none'"]);
    assert_eq!(
        allowed("script-src"),
        ["'self'"],
        "no inline script, no eval"
    );
    assert_eq!(allowed("connect-src"), ["'self'"]);
    assert_eq!(allowed("frame-ancestors"), ["'none'"]);
    // No directive names a host or scheme that could reach another server.
    for (name, sources) in &directives {
        for source in sources {
            assert!(
                ["'self'", "'none'", "'unsafe-inline'"].contains(&source.as_str())
                    || (name == "img-src" && source == "data:"),
                "{name} allows {source}"
            );
        }
    }
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
    assert!(html.contains(r#"<script src="/docs/scalar.js"></script>"#));
    assert!(html.contains(r#"<script src="/docs/docs.js"></script>"#));

    // The bundle, as vendored: gzipped to a client that takes it, as is to
    // one that does not, and revalidated by its ETag.
    let gzipped = app
        .client
        .get(app.url("/docs/scalar.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.status(), 200);
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert!(gzipped.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let etag = gzipped.headers()["etag"].to_str().unwrap().to_owned();
    let version = String::from_utf8(assets("scalar/VERSION")).unwrap();
    assert_eq!(etag, format!("\"scalar-{}\"", version.trim()));
    assert_eq!(
        gzipped.bytes().await.unwrap().as_ref(),
        assets("scalar/standalone.js.gz")
    );
    let plain = app
        .client
        .get(app.url("/docs/scalar.js"))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(
        plain.bytes().await.unwrap().as_ref(),
        assets("scalar/standalone.js")
    );
    let again = app
        .client
        .get(app.url("/docs/scalar.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let start = app
        .client
        .get(app.url("/docs/docs.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 200);
    let start = start.text().await.unwrap();
    assert!(start.contains("\"/openapi.json\"") && start.contains("telemetry: false"));
    assert!(!assets("scalar/LICENSE").is_empty());
}

/// What `ops/scripts/browser.sh` saw of `path` on `app`.
async fn browse(base: &str, path: &str) -> Value {
    let output = tools::run(
        &tools::root().join("ops/scripts/browser.sh"),
        &[
            OsStr::new(&format!("{base}{path}")),
            tools::file("docs_operations.cjs").as_os_str(),
            OsStr::new("60000"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", tools::said(&output));
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", tools::said(&output)));
    assert!(seen["failure"].is_null(), "{}", seen["failure"]);
    assert_eq!(seen["status"], 200);
    assert_eq!(
        seen["refused"],
        serde_json::json!([]),
        "requests off the server"
    );
    for request in seen["requests"].as_array().unwrap() {
        assert!(
            request.as_str().unwrap().starts_with(base),
            "a request off the server: {request}"
        );
    }
    // The only refusal is the one the policy means: the bundle probes
    // whether it may eval (to compile validators) and does without.
    for violation in seen["violations"].as_array().unwrap() {
        assert!(
            violation["directive"] == "script-src" && violation["blocked"] == "eval",
            "the policy refused something the page needs: {violation}"
        );
    }
    assert_eq!(seen["errors"], serde_json::json!([]), "page errors");
    for message in seen["console"].as_array().unwrap() {
        assert_ne!(message["type"], "error", "{message}");
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_renders_every_operation_with_nothing_but_the_server() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json").await.body;
    let base = app.url("");

    let seen = browse(&base, "/docs").await;
    let requests: Vec<&str> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for path in ["/docs/scalar.js", "/docs/docs.js", "/openapi.json"] {
        assert!(
            requests.contains(&format!("{base}{path}").as_str()),
            "{path} not loaded: {requests:?}"
        );
    }
    let text = seen["result"]["text"].as_str().unwrap();
    let mut operations = 0;
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let summary = op["summary"].as_str().unwrap();
            assert!(text.contains(summary), "{summary:?} is not on the page");
            operations += 1;
        }
    }
    assert!(operations >= 25, "{operations} operations");

    // The AsyncAPI document is the reference's second source.
    let seen = browse(&base, "/docs?api=events").await;
    let text = seen["result"]["text"].as_str().unwrap();
    for channel in [
        "Committed events",
        "Read-model changes",
        "Webhook deliveries",
    ] {
        assert!(text.contains(channel), "{channel:?} is not on the page");
    }
}
