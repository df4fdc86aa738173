//! A generated sweep of malformed requests over every route of the route
//! table: bad JSON shapes, floats and huge numbers for integers, arrays for
//! objects, invalid UTF-8 in paths and bodies, wrong content types, huge
//! headers, long URIs, broken request lines. No answer is a 5xx, and every
//! error answer is problem+json. Sent over raw sockets, so that bytes no
//! HTTP client would send reach the server too.

use std::collections::BTreeMap;

use api::routes::table;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::hardening::read_answer;
use crate::support::spawn_app;

/// Values for a path parameter: an id, a word, invalid UTF-8, a NUL, a
/// traversal, and one far too long.
fn path_values(existing: &str) -> Vec<String> {
    vec![
        existing.to_owned(),
        "not-an-id".to_owned(),
        "%FF%FE%FD".to_owned(),
        "%C3%28".to_owned(),
        "%00".to_owned(),
        "..%2F..%2Fetc".to_owned(),
        "9".repeat(5_000),
    ]
}

/// Bodies a route might be sent, valid JSON of the wrong shape included.
fn bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        "{",
        "}",
        "null",
        "[]",
        "[1, 2, 3]",
        "\"a string\"",
        "12",
        "1e400",
        "{\"delta\": 1e2}",
        "{\"delta\": 100.0}",
        "{\"delta\": -9223372036854775809}",
        "{\"delta\": 99999999999999999999999999999}",
        "{\"price\": {\"amount\": 1.0, \"currency\": \"EUR\"}}",
        "{\"price\": [1, \"EUR\"]}",
        "[\"a@example.com\", \"Ada\"]",
        "{\"email\": \"a@example.com\", \"name\": \"Ada\", \"email\": \"b@example.com\"}",
        "{\"lines\": [{\"product_id\": \"x\", \"quantity\": 1e2}]}",
        "{\"lines\": [[\"x\", 1]], \"user_id\": 5, \"payment_token\": null}",
        "{\"reason\": {\"nested\": true}}",
        "{\"name\": \"\\u0000\"}",
        "{\"name\": \"\\ud800\"}",
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .collect();
    bodies.push(b"{\"name\": \"\xff\xfe\"}".to_vec());
    bodies.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes());
    bodies.push(format!("{{\"name\": \"{}\"}}", "n".repeat(70 * 1024)).into_bytes());
    bodies
}

const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/json\u{7f}",
];

fn request(method: &str, target: &str, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "{method} {target} HTTP/1.1\r\nhost: agora\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_malformed_request_gets_a_5xx_and_every_error_is_problem_json() {
    let app = spawn_app().await;
    let product = app.create_product("SWEEP-1", 100, "EUR", 5).await.id();

    let mut requests: Vec<(String, Vec<u8>)> = Vec::new();
    let bodies = bodies();
    for route in table() {
        let method = route.method.as_str();
        // The readiness probe answers 503 by design while NATS has no stream.
        if route.path == "/readyz" {
            continue;
        }
        for value in path_values(&product) {
            let path = route
                .path
                .replace("{type}", "product")
                .replace("{id}", &value);
            for (i, body) in bodies.iter().enumerate() {
                let content_type = CONTENT_TYPES[i % CONTENT_TYPES.len()];
                requests.push((
                    format!("{method} {path} body #{i} ({content_type})"),
                    request(method, &path, content_type, "", body),
                ));
            }
            for query in [
                "?min_version=1e2",
                "?limit=-1&cursor=%FF",
                "?limit=99999999999999999999",
                "?unknown=1",
                "?%FF=%FE",
                "?a=1&a=2&a=3",
            ] {
                let target = format!("{path}{query}");
                requests.push((
                    format!("{method} {target}"),
                    request(method, &target, "application/json", "", b"{}"),
                ));
            }
        }
        let headers = [
            format!("x-big: {}\r\n", "h".repeat(20_000)),
            format!("authorization: Bearer {}\r\n", "t".repeat(3_000)),
            "authorization: Basic Zm9vOmJhcg==\r\n".to_owned(),
            "authorization: Bearer \u{00ff}\r\n".to_owned(),
            "if-match: \"-1\"\r\n".to_owned(),
            "if-match: \"99999999999999999999999\"\r\n".to_owned(),
            format!("idempotency-key: {}\r\n", "k".repeat(300)),
            "idempotency-key: \r\n".to_owned(),
            "traceparent: 00-zz-zz-01\r\n".to_owned(),
            format!("x-request-id: {}\r\n", "r".repeat(5_000)),
            (0..120).map(|i| format!("x-h{i}: v\r\n")).collect(),
        ];
        let path = route
            .path
            .replace("{type}", "product")
            .replace("{id}", &product);
        for extra in &headers {
            requests.push((
                format!("{method} {path} with {}", &extra[..extra.len().min(30)]),
                request(method, &path, "application/json", extra, b"{}"),
            ));
        }
        let long = format!("{path}?q={}", "a".repeat(20_000));
        requests.push((
            format!("{method} {path} long URI"),
            request(method, &long, "application/json", "", b"{}"),
        ));
    }
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"POST /users HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\nzz\r\n",
        b"GET /\xff HTTP/1.1\r\nhost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        requests.push((
            format!("garbage {:?}", String::from_utf8_lossy(&garbage[..garbage.len().min(20)])),
            garbage.to_vec(),
        ));
    }

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (what, bytes) in &requests {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        // The server may answer and close before it read everything.
        let _ = stream.write_all(bytes).await;
        let Some(answer) = read_answer(&mut stream).await else {
            // Closed without an answer: only a head that never completes
            // (the TLS hello) may get that; nothing was written then.
            if !what.starts_with("garbage") {
                failures.push(format!("{what}: no answer"));
            }
            continue;
        };
        *statuses.entry(answer.status).or_default() += 1;
        if answer.status >= 500 {
            failures.push(format!("{what}: {} {}", answer.status, answer.body));
        } else if answer.status >= 400 && !answer.is_problem_json() {
            failures.push(format!(
                "{what}: {} is not problem+json: {}",
                answer.status, answer.head
            ));
        } else if answer.status >= 400 && answer.body["status"] != answer.status {
            failures.push(format!("{what}: problem body {}", answer.body));
        }
    }
    assert!(requests.len() > 3_000, "{} requests", requests.len());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed the sweep (statuses {statuses:?}):\n{}",
        failures.len(),
        requests.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}
