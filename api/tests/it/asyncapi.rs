//! `/asyncapi.json` as the AsyncAPI project's own parser reads it (no error,
//! no warning), and as the contract describes it: a message for every
//! stored event version with its checked-in schema, the change
//! announcements, and a webhook message for every event name of api.md
//! whose resource the API serves, carrying that resource as the OpenAPI
//! document's GET answers it.

use api::components::Components;
use serde_json::Value;
use testkit::tools;

use crate::openapi::contract;
use crate::support::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn the_asyncapi_parser_finds_no_error_or_warning() {
    let app = spawn_app().await;
    let answer = app.get("/asyncapi.json").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    let file = std::env::temp_dir().join(format!(
        "agora-asyncapi-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, serde_json::to_vec(&answer.body).unwrap()).unwrap();
    let node = std::path::PathBuf::from("node");
    let output = tools::run(
        &node,
        &[
            tools::file("asyncapi_validate.cjs").as_os_str(),
            file.as_os_str(),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    assert!(output.status.success(), "{}", tools::said(&output));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("ok, 3 channels"), "{}", tools::said(&output));
}

/// The component a `{"$ref": "#/components/schemas/X"}` names.
fn target(reference: &Value) -> &str {
    reference["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("not a component reference: {reference}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_version_is_a_message_with_its_checked_in_schema() {
    let app = spawn_app().await;
    let doc = app.get("/asyncapi.json").await.body;
    assert_eq!(doc["asyncapi"], "3.0.0");
    let schemas = &doc["components"]["schemas"];
    let messages = &doc["components"]["messages"];
    let channel = &doc["channels"]["events"];
    assert_eq!(
        channel["address"],
        "{prefix}.events.{aggregate_type}.{aggregate_id}"
    );
    for event in schemas::json::EVENTS {
        let key = format!(
            "{}.{}.v{}",
            event.aggregate_type, event.event_type, event.event_version
        );
        let message = &messages[&key];
        assert_eq!(
            message["name"],
            schemas::cloudevents::event_type(
                event.aggregate_type,
                event.event_type,
                event.event_version
            ),
            "{key}"
        );
        assert_eq!(
            channel["messages"][&key]["$ref"],
            format!("#/components/messages/{key}")
        );
        assert_eq!(
            message["headers"]["properties"]["ce-type"]["const"],
            message["name"]
        );
        // The payload is the envelope, and its `payload` the checked-in file.
        let envelope = &schemas[target(&message["payload"])];
        assert_eq!(
            envelope["allOf"][0]["$ref"],
            "#/components/schemas/EventEnvelope"
        );
        let properties = &envelope["properties"];
        assert_eq!(properties["event_type"]["const"], event.event_type);
        assert_eq!(properties["event_version"]["const"], event.event_version);
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/json")
            .join(schemas::json::event_file(event));
        let checked_in: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut hoisted = Components::new();
        hoisted.add(&key, checked_in);
        assert_eq!(
            Some(&schemas[target(&properties["payload"])]),
            hoisted.get(&key),
            "{key}"
        );
    }
    let operation = &doc["operations"]["publishEvents"];
    assert_eq!(operation["action"], "send");
    assert_eq!(
        operation["messages"].as_array().unwrap().len(),
        schemas::json::EVENTS.len()
    );

    let changes = &doc["channels"]["changes"];
    assert_eq!(changes["address"], "{prefix}.changes.{model}.{id}");
    for projection in projections::Projection::ALL {
        assert!(
            changes["parameters"]["model"]["enum"]
                .as_array()
                .unwrap()
                .contains(&Value::from(projection.name())),
            "{}",
            projection.name()
        );
    }
}

/// The event names of api.md's Webhooks section.
fn webhook_event_names(contract: &str) -> Vec<String> {
    let start = contract
        .find("- Event names:")
        .expect("api.md lists the webhook event names");
    let rest = &contract[start..];
    let end = rest[1..].find("\n- ").map_or(rest.len(), |i| i + 1);
    rest[..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_webhook_of_the_contract_carries_its_resource_as_the_get_shows_it() {
    let app = spawn_app().await;
    let doc = app.get("/asyncapi.json").await.body;
    let openapi = app.get("/openapi.json").await.body;
    let names = match contract() {
        Some(text) => webhook_event_names(&text),
        None => {
            eprintln!("docs/api.md not found; checking the table's own names");
            schemas::webhooks::EVENTS
                .iter()
                .map(|e| e.name.to_owned())
                .collect()
        }
    };
    assert!(names.len() >= 16, "{names:?}");
    let table: Vec<&str> = schemas::webhooks::EVENTS.iter().map(|e| e.name).collect();
    assert_eq!(names, table, "schemas::webhooks::EVENTS against api.md");

    let mut described = 0;
    for name in &names {
        let resource = name.split('.').next().unwrap();
        let get = format!("/{resource}s/{{id}}");
        let key = format!("webhook.{name}");
        let message = &doc["components"]["messages"][&key];
        let get_answer = &openapi["paths"][&get]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"];
        if get_answer.is_null() {
            // No GET of that resource yet, so no shape to deliver: the
            // message comes with the route.
            assert!(
                message.is_null(),
                "{key} is described, but {get} is not served"
            );
            continue;
        };
        assert!(
            message.is_object(),
            "{key} is missing: {get} is served, so add its answer to openapi::add_resources"
        );
        assert_eq!(message["name"], name.as_str());
        assert_eq!(
            doc["channels"]["webhooks"]["messages"][&key]["$ref"],
            format!("#/components/messages/{key}")
        );
        let headers = &doc["components"]["schemas"][target(&message["headers"])];
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert!(
                headers["required"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(header)),
                "{key} lacks {header}"
            );
        }
        let payload = &doc["components"]["schemas"][target(&message["payload"])];
        assert_eq!(payload["properties"]["type"]["const"], name.as_str());
        assert_eq!(
            payload["required"],
            serde_json::json!(["type", "timestamp", "data"])
        );
        // `data` is the very schema the GET answers with, in both documents.
        let data = target(&payload["properties"]["data"]);
        let answer = target(get_answer);
        assert_eq!(data, answer, "{key}");
        assert_eq!(
            doc["components"]["schemas"][data], openapi["components"]["schemas"][answer],
            "{key}"
        );
        described += 1;
    }
    assert!(described >= 15, "{described} webhook messages");
}
