//! Rate limits per client and the request timeout, as a client sees them.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use api::auth::Role;
use api::rate_limit::RateLimitOptions;
use api::HttpOptions;
use reqwest::Method;
use uuid::Uuid;

use crate::auth::{spawn_authed_app, token};
use crate::support::{answer, spawn_app_with, Answer, TestApp};

fn as_admin(app: &TestApp, sub: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.request(method, path).header(
        "authorization",
        format!("Bearer {}", token(sub, Role::Admin)),
    )
}

fn assert_limited(answer: &Answer) {
    assert_eq!(
        (answer.status, answer.problem_type()),
        (429, "/problems/rate-limited"),
        "{}",
        answer.body
    );
    let retry_after: u64 = answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_quota_gets_about_half_refused_and_nobody_else_is_touched() {
    // 10 requests a second, no burst to speak of: one every 100 ms passes.
    let app = spawn_authed_app(HttpOptions {
        rate_limit: RateLimitOptions {
            per_second: 10,
            burst: 1,
        },
        ..HttpOptions::default()
    })
    .await;
    // Twice the quota, 20 a second, for 3 seconds; meanwhile another client
    // at half the quota, and the probes. Each request is sent from its own
    // task, so a slow answer never delays the pace.
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let (mut greedy, mut polite, mut probes) = (Vec::new(), Vec::new(), Vec::new());
    let send = |sub: &str, path: &str| {
        let request = as_admin(&app, sub, Method::GET, path);
        tokio::spawn(async move { answer(request.send().await.expect("send")).await })
    };
    for tick in 0..60 {
        ticks.tick().await;
        greedy.push(send("greedy", "/products"));
        probes.push(send("greedy", "/healthz"));
        if tick % 4 == 0 {
            polite.push(send("polite", "/products"));
        }
    }
    let (mut sent, mut limited) = (0u32, 0u32);
    for task in greedy {
        let answer = task.await.expect("task");
        sent += 1;
        match answer.status {
            200 => {}
            429 => {
                assert_limited(&answer);
                limited += 1;
            }
            status => panic!("unexpected {status}: {}", answer.body),
        }
    }
    let mut others_limited = 0;
    for task in polite {
        others_limited += u32::from(task.await.expect("task").status == 429);
    }
    let mut probes_limited = 0;
    for task in probes {
        probes_limited += u32::from(task.await.expect("task").status != 200);
    }
    let share = f64::from(limited) / f64::from(sent);
    assert!(
        (0.3..=0.7).contains(&share),
        "{limited} of {sent} refused; about half expected"
    );
    assert_eq!(others_limited, 0, "another client was limited");
    assert_eq!(probes_limited, 0, "/healthz was limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_are_limited_by_address() {
    let app = spawn_authed_app(HttpOptions {
        rate_limit: RateLimitOptions {
            per_second: 1,
            burst: 2,
        },
        ..HttpOptions::default()
    })
    .await;
    // Loopback is all of 127/8, so a second client can come from another address.
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
            .build()
            .expect("client")
    };
    let (first, second) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = first.get(app.url("/products")).send().await.expect("send");
        statuses.push(answer(response).await);
    }
    assert!(
        statuses.iter().any(|a| a.status == 429),
        "four at once over a burst of two: {:?}",
        statuses.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for limited in statuses.iter().filter(|a| a.status == 429) {
        assert_limited(limited);
    }
    let other = answer(second.get(app.url("/products")).send().await.expect("send")).await;
    assert_eq!(other.status, 200, "another address is another client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_gets_a_problem_not_a_bare_503() {
    let db = std::sync::Arc::new(testkit::TestDatabase::with_pool_size(4).await);
    let app = spawn_app_with(
        db,
        HttpOptions {
            request_timeout: Duration::from_millis(300),
            // Longer than the timeout, so the wait below is cut by it.
            consistency_wait: Duration::from_secs(20),
            ..HttpOptions::default()
        },
    )
    .await;
    let answer = app
        .get(&format!("/products/{}?min_version=3", Uuid::now_v7()))
        .await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (503, "/problems/service-unavailable"),
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(answer.headers["retry-after"], "1");
}
