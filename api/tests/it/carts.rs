//! Carts over HTTP with authentication on: every row of api.md's Carts
//! table with its exact status and problem type, nothing written by a
//! refusal, guest carts unreachable without their token, claim with and
//! without an open customer cart, concurrent checkouts, and a price change
//! between adding and checking out.

use api::auth::Role;
use api::HttpOptions;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{spawn_authed_app, token};
use crate::support::{Answer, TestApp};

fn admin() -> String {
    format!("Bearer {}", token("root", Role::Admin))
}

fn bearer(user: &str) -> String {
    format!("Bearer {}", token(user, Role::Customer))
}

fn address() -> Value {
    json!({ "name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB" })
}

/// A request as `who` (a bearer header value, or none) with `cart_token`.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    who: Option<&str>,
    cart_token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = app.request(method, path);
    if let Some(who) = who {
        request = request.header("authorization", who);
    }
    if let Some(cart_token) = cart_token {
        request = request.header("x-cart-token", cart_token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    app.send(request).await
}

async fn customer(app: &TestApp) -> String {
    let answer = call(
        app,
        Method::POST,
        "/users",
        None,
        None,
        Some(json!({ "email": format!("c-{}@carts.example", Uuid::now_v7()), "name": "Ada" })),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.id()
}

async fn product(app: &TestApp, amount: i64, currency: &str) -> String {
    let answer = call(
        app,
        Method::POST,
        "/products",
        Some(&admin()),
        None,
        Some(json!({ "sku": format!("C-{}", Uuid::now_v7()), "name": "Pen", "price": { "amount": amount, "currency": currency }, "stock": 100 })),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.id()
}

/// A guest cart: its id and token.
async fn guest_cart(app: &TestApp) -> (String, String) {
    let answer = call(app, Method::POST, "/carts", None, None, Some(json!({}))).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let token = answer.body["cart_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    (answer.id(), token)
}

async fn set_line(
    app: &TestApp,
    cart: &str,
    who: Option<&str>,
    cart_token: Option<&str>,
    product: &str,
    quantity: i64,
) -> Answer {
    call(
        app,
        Method::PUT,
        &format!("/carts/{cart}/lines/{product}"),
        who,
        cart_token,
        Some(json!({ "quantity": quantity })),
    )
    .await
}

async fn project(app: &TestApp) {
    projections::replay(
        &app.db.pool,
        &projections::ReplayOptions::default(),
        &mut projections::replay::Quiet,
    )
    .await
    .expect("replay");
}

/// Runs `refused` and checks its status, problem type and that it wrote nothing.
async fn refused(
    app: &TestApp,
    answer: impl std::future::Future<Output = Answer>,
    status: u16,
    problem: &str,
) {
    let before = app.event_count().await;
    let answer = answer.await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (status, format!("/problems/{problem}").as_str()),
        "{}",
        answer.body
    );
    assert_eq!(app.event_count().await, before, "a refusal wrote events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cart_is_reached_only_with_its_token() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let pen = product(&app, 250, "EUR").await;
    let answer = call(&app, Method::POST, "/carts", None, None, None).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["status"], "open");
    assert_eq!(answer.body["user_id"], Value::Null);
    assert_eq!(answer.etag(), "\"1\"");
    assert_eq!(
        answer
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let (cart, cart_token) = (
        answer.id(),
        answer.body["cart_token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(URL_SAFE_LEN, cart_token.len(), "256 bits, base64url");

    let added = set_line(&app, &cart, None, Some(&cart_token), &pen, 2).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(
        added.body["lines"][0]["unit_price"],
        json!({ "amount": 250, "currency": "EUR" })
    );
    assert_eq!(
        added.body["subtotal"],
        json!({ "amount": 500, "currency": "EUR" })
    );
    assert_eq!(added.body["item_count"], 2);
    assert_eq!(
        added.body.get("cart_token"),
        None,
        "the token is shown once"
    );

    let other_token = guest_cart(&app).await.1;
    for presented in [None, Some("nope"), Some(other_token.as_str())] {
        refused(
            &app,
            set_line(&app, &cart, None, presented, &pen, 3),
            404,
            "not-found",
        )
        .await;
        refused(
            &app,
            call(
                &app,
                Method::DELETE,
                &format!("/carts/{cart}/lines/{pen}"),
                None,
                presented,
                None,
            ),
            404,
            "not-found",
        )
        .await;
        let read = call(
            &app,
            Method::GET,
            &format!("/carts/{cart}"),
            None,
            presented,
            None,
        )
        .await;
        assert_eq!(
            (read.status, read.problem_type()),
            (404, "/problems/not-found")
        );
        let stream = call(
            &app,
            Method::GET,
            &format!("/carts/{cart}/updates"),
            None,
            presented,
            None,
        )
        .await;
        assert_eq!(
            (stream.status, stream.problem_type()),
            (404, "/problems/not-found")
        );
        // A customer's token does not open a guest cart either.
        let signed_in = customer(&app).await;
        let read = call(
            &app,
            Method::GET,
            &format!("/carts/{cart}"),
            Some(&bearer(&signed_in)),
            presented,
            None,
        )
        .await;
        assert_eq!(read.status, 404);
    }
    let unknown = Uuid::now_v7();
    let read = call(
        &app,
        Method::GET,
        &format!("/carts/{unknown}"),
        None,
        Some(&cart_token),
        None,
    )
    .await;
    assert_eq!(
        (read.status, read.problem_type()),
        (404, "/problems/not-found")
    );

    // The read model, with today's price: a price change shows at once.
    project(&app).await;
    let read = call(
        &app,
        Method::GET,
        &format!("/carts/{cart}?min_version=2"),
        None,
        Some(&cart_token),
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["lines"][0]["quantity"], 2);
    assert_eq!(read.body["lines"][0]["available"], 100);
    assert!(read.body["expires_at"].is_string());
    // Its live updates open with the token, as its GET does.
    let stream = app
        .request(Method::GET, &format!("/carts/{cart}/updates"))
        .header("x-cart-token", &cart_token)
        .send()
        .await
        .expect("open the stream");
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    drop(stream);
    let price = call(
        &app,
        Method::POST,
        &format!("/products/{pen}/price"),
        Some(&admin()),
        None,
        Some(json!({ "price": { "amount": 300, "currency": "EUR" } })),
    )
    .await;
    assert_eq!(price.status, 200);
    project(&app).await;
    let read = call(
        &app,
        Method::GET,
        &format!("/carts/{cart}"),
        None,
        Some(&cart_token),
        None,
    )
    .await;
    assert_eq!(
        read.body["lines"][0]["unit_price"]["amount"], 300,
        "{}",
        read.body
    );
    assert_eq!(read.body["subtotal"]["amount"], 600);

    let removed = call(
        &app,
        Method::DELETE,
        &format!("/carts/{cart}/lines/{pen}"),
        None,
        Some(&cart_token),
        None,
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.body["lines"], json!([]));
}

const URL_SAFE_LEN: usize = 43;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_follow_the_rules_and_a_refusal_writes_nothing() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let pen = product(&app, 250, "EUR").await;
    let dollar = product(&app, 100, "USD").await;
    let gone = product(&app, 100, "EUR").await;
    let discontinued = call(
        &app,
        Method::POST,
        &format!("/products/{gone}/discontinue"),
        Some(&admin()),
        None,
        None,
    )
    .await;
    assert_eq!(discontinued.status, 200);
    let (cart, t) = guest_cart(&app).await;
    let t = Some(t.as_str());
    assert_eq!(set_line(&app, &cart, None, t, &pen, 1000).await.status, 200);
    for quantity in [1001, -1] {
        refused(
            &app,
            set_line(&app, &cart, None, t, &pen, quantity),
            422,
            "validation",
        )
        .await;
    }
    refused(
        &app,
        set_line(&app, &cart, None, t, &gone, 1),
        422,
        "product-discontinued",
    )
    .await;
    refused(
        &app,
        set_line(&app, &cart, None, t, &dollar, 1),
        422,
        "currency-mismatch",
    )
    .await;
    let unknown = Uuid::now_v7().to_string();
    refused(
        &app,
        set_line(&app, &cart, None, t, &unknown, 1),
        422,
        "validation",
    )
    .await;
    let zero = set_line(&app, &cart, None, t, &pen, 0).await;
    assert_eq!((zero.status, zero.body["lines"].clone()), (200, json!([])));

    // At most 50 lines.
    for _ in 0..50 {
        let p = product(&app, 10, "EUR").await;
        assert_eq!(set_line(&app, &cart, None, t, &p, 1).await.status, 200);
    }
    refused(
        &app,
        set_line(&app, &cart, None, t, &pen, 1),
        422,
        "validation",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_without_an_open_customer_cart_makes_the_guest_cart_the_customers() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let pen = product(&app, 250, "EUR").await;
    let me = customer(&app).await;
    let (cart, t) = guest_cart(&app).await;
    assert_eq!(
        set_line(&app, &cart, None, Some(&t), &pen, 2).await.status,
        200
    );
    let path = format!("/carts/{cart}/claim");
    refused(
        &app,
        call(&app, Method::POST, &path, None, Some(&t), Some(json!({}))),
        401,
        "unauthorized",
    )
    .await;
    refused(
        &app,
        call(
            &app,
            Method::POST,
            &path,
            Some(&bearer(&me)),
            None,
            Some(json!({})),
        ),
        404,
        "not-found",
    )
    .await;
    refused(
        &app,
        call(
            &app,
            Method::POST,
            &path,
            Some(&bearer(&me)),
            Some("wrong"),
            Some(json!({})),
        ),
        404,
        "not-found",
    )
    .await;

    let claimed = call(
        &app,
        Method::POST,
        &path,
        Some(&bearer(&me)),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    assert_eq!(claimed.body["id"], cart.as_str());
    assert_eq!(claimed.body["user_id"], me.as_str());
    assert_eq!(claimed.body["lines"][0]["quantity"], 2);
    // Now it is the customer's: its token opens it no more, its customer does.
    let read = call(
        &app,
        Method::PUT,
        &format!("/carts/{cart}/lines/{pen}"),
        None,
        Some(&t),
        Some(json!({ "quantity": 3 })),
    )
    .await;
    assert_eq!(read.status, 401);
    let other = customer(&app).await;
    let read = set_line(&app, &cart, Some(&bearer(&other)), Some(&t), &pen, 3).await;
    assert_eq!(
        (read.status, read.problem_type()),
        (403, "/problems/forbidden")
    );
    assert_eq!(
        set_line(&app, &cart, Some(&bearer(&me)), None, &pen, 3)
            .await
            .status,
        200
    );
    project(&app).await;
    let mine = call(
        &app,
        Method::GET,
        &format!("/users/{me}/carts"),
        Some(&bearer(&me)),
        None,
        None,
    )
    .await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(mine.body["items"][0]["id"], cart.as_str());
    let theirs = call(
        &app,
        Method::GET,
        &format!("/users/{me}/carts"),
        Some(&bearer(&other)),
        None,
        None,
    )
    .await;
    assert_eq!(theirs.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_with_an_open_customer_cart_merges_into_it() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let pen = product(&app, 250, "EUR").await;
    let ink = product(&app, 100, "EUR").await;
    let me = customer(&app).await;
    let mine = call(
        &app,
        Method::POST,
        "/carts",
        Some(&bearer(&me)),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(mine.status, 201, "{}", mine.body);
    assert_eq!(mine.body["user_id"], me.as_str());
    let mine = mine.id();
    assert_eq!(
        set_line(&app, &mine, Some(&bearer(&me)), None, &pen, 900)
            .await
            .status,
        200
    );
    let (guest, t) = guest_cart(&app).await;
    assert_eq!(
        set_line(&app, &guest, None, Some(&t), &pen, 200)
            .await
            .status,
        200
    );
    assert_eq!(
        set_line(&app, &guest, None, Some(&t), &ink, 1).await.status,
        200
    );
    project(&app).await;

    let merged = call(
        &app,
        Method::POST,
        &format!("/carts/{guest}/claim"),
        Some(&bearer(&me)),
        Some(&t),
        Some(json!({})),
    )
    .await;
    assert_eq!(merged.status, 200, "{}", merged.body);
    assert_eq!(
        merged.body["id"],
        mine.as_str(),
        "the answer is the customer's cart"
    );
    assert_eq!(
        merged.body["lines"][0]["quantity"], 1000,
        "quantities add, at most 1000"
    );
    assert_eq!(merged.body["lines"][1]["quantity"], 1);
    // A repeat adds nothing.
    let again = call(
        &app,
        Method::POST,
        &format!("/carts/{guest}/claim"),
        Some(&bearer(&me)),
        Some(&t),
        Some(json!({})),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["lines"], merged.body["lines"]);
    project(&app).await;
    let read = call(
        &app,
        Method::GET,
        &format!("/carts/{guest}"),
        None,
        Some(&t),
        None,
    )
    .await;
    assert_eq!(read.body["status"], "merged", "{}", read.body);
    assert_eq!(read.body["merged_into"], mine.as_str());
    refused(
        &app,
        set_line(&app, &guest, None, Some(&t), &pen, 1),
        422,
        "cart-closed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_places_one_order_at_todays_prices() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let pen = product(&app, 250, "EUR").await;
    let me = customer(&app).await;
    let who = bearer(&me);
    let body = || Some(json!({ "payment_token": "tok_ok", "shipping_address": address() }));

    // A guest cart is checked out only once claimed; an empty one never.
    let (guest, t) = guest_cart(&app).await;
    assert_eq!(
        set_line(&app, &guest, None, Some(&t), &pen, 1).await.status,
        200
    );
    let path = format!("/carts/{guest}/checkout");
    refused(
        &app,
        call(&app, Method::POST, &path, Some(&who), Some(&t), body()),
        401,
        "unauthorized",
    )
    .await;
    refused(
        &app,
        call(&app, Method::POST, &path, None, Some(&t), body()),
        401,
        "unauthorized",
    )
    .await;
    let cart = call(&app, Method::POST, "/carts", Some(&who), None, None)
        .await
        .id();
    let path = format!("/carts/{cart}/checkout");
    refused(
        &app,
        call(&app, Method::POST, &path, Some(&who), None, body()),
        422,
        "cart-empty",
    )
    .await;

    assert_eq!(
        set_line(&app, &cart, Some(&who), None, &pen, 2)
            .await
            .status,
        200
    );
    let other = customer(&app).await;
    refused(
        &app,
        call(
            &app,
            Method::POST,
            &path,
            Some(&bearer(&other)),
            None,
            body(),
        ),
        403,
        "forbidden",
    )
    .await;
    let mut bad = address();
    bad["country"] = json!("UK");
    refused(
        &app,
        call(
            &app,
            Method::POST,
            &path,
            Some(&who),
            None,
            Some(json!({ "payment_token": "tok_ok", "shipping_address": bad })),
        ),
        422,
        "validation",
    )
    .await;
    refused(
        &app,
        call(
            &app,
            Method::POST,
            &path,
            Some(&who),
            None,
            Some(json!({ "payment_token": "tok_ok" })),
        ),
        400,
        "bad-request",
    )
    .await;

    // The price changes after the line was added: the order takes the new one.
    let price = call(
        &app,
        Method::POST,
        &format!("/products/{pen}/price"),
        Some(&admin()),
        None,
        Some(json!({ "price": { "amount": 400, "currency": "EUR" } })),
    )
    .await;
    assert_eq!(price.status, 200);
    let placed = call(&app, Method::POST, &path, Some(&who), None, body()).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(
        placed.body["total"],
        json!({ "amount": 800, "currency": "EUR" })
    );
    assert_eq!(placed.body["cart_id"], cart.as_str());
    assert_eq!(placed.body["shipping_address"]["country"], "GB");
    assert_eq!(placed.body["status"], "pending");
    let order = placed.id();
    let again = call(&app, Method::POST, &path, Some(&who), None, body()).await;
    assert_eq!(
        (again.status, again.id()),
        (200, order.clone()),
        "{}",
        again.body
    );
    assert_eq!(app.events_of_type("OrderPlaced").await, 1);

    project(&app).await;
    let read = call(
        &app,
        Method::GET,
        &format!("/carts/{cart}"),
        Some(&who),
        None,
        None,
    )
    .await;
    assert_eq!(read.body["status"], "checked_out", "{}", read.body);
    assert_eq!(read.body["order_id"], order.as_str());
    assert_eq!(read.body["expires_at"], Value::Null);
    let read = call(
        &app,
        Method::GET,
        &format!("/orders/{order}"),
        Some(&who),
        None,
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["cart_id"], cart.as_str());
    let mut shown = address();
    shown["line2"] = Value::Null;
    shown["region"] = Value::Null;
    assert_eq!(read.body["shipping_address"], shown);
    assert_eq!(read.body["cancel_note"], Value::Null);
    refused(
        &app,
        set_line(&app, &cart, Some(&who), None, &pen, 1),
        422,
        "cart-closed",
    )
    .await;
    refused(
        &app,
        call(
            &app,
            Method::DELETE,
            &format!("/carts/{cart}/lines/{pen}"),
            Some(&who),
            None,
            None,
        ),
        422,
        "cart-closed",
    )
    .await;

    // Cancelled with a note: the reason is the customer's request, the text is kept.
    let refuse_long = call(
        &app,
        Method::POST,
        &format!("/orders/{order}/cancel"),
        Some(&who),
        None,
        Some(json!({ "reason": "x".repeat(501) })),
    )
    .await;
    assert_eq!(
        (refuse_long.status, refuse_long.problem_type()),
        (422, "/problems/validation")
    );
    let cancelled = call(
        &app,
        Method::POST,
        &format!("/orders/{order}/cancel"),
        Some(&who),
        None,
        Some(json!({ "reason": "found it cheaper" })),
    )
    .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["cancel_reason"], "customer_request");
    assert_eq!(cancelled.body["cancel_note"], "found it cheaper");
    project(&app).await;
    let read = call(
        &app,
        Method::GET,
        &format!("/orders/{order}?min_version=2"),
        Some(&who),
        None,
        None,
    )
    .await;
    assert_eq!(
        read.body["cancel_note"], "found it cheaper",
        "{}",
        read.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_checkouts_place_one_order() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let pen = product(&app, 250, "EUR").await;
    let me = customer(&app).await;
    let who = bearer(&me);
    let cart = call(&app, Method::POST, "/carts", Some(&who), None, None)
        .await
        .id();
    assert_eq!(
        set_line(&app, &cart, Some(&who), None, &pen, 1)
            .await
            .status,
        200
    );
    // A second API process on the same database, so the race is between
    // processes as well as within one.
    let second = crate::support::spawn_app_with(
        app.db.clone(),
        HttpOptions {
            auth: Some(api::auth::JwtSecret::new(crate::auth::SECRET)),
            ..HttpOptions::default()
        },
    )
    .await;
    let path = format!("/carts/{cart}/checkout");
    let answers = futures::future::join_all((0..20).map(|i| {
        let target = if i % 2 == 0 { &app } else { &second };
        call(
            target,
            Method::POST,
            &path,
            Some(&who),
            None,
            Some(json!({ "payment_token": "tok_ok", "shipping_address": address() })),
        )
    }))
    .await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let repeated = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(
        (created, repeated),
        (1, 19),
        "{:?}",
        answers
            .iter()
            .map(|a| (a.status, a.body.clone()))
            .collect::<Vec<_>>()
    );
    let ids: std::collections::HashSet<String> = answers.iter().map(Answer::id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.events_of_type("OrderPlaced").await, 1);
    assert_eq!(app.events_of_type("CartCheckedOut").await, 1);
}
