//! The saga's HTTP client for the payment gateway. One call, one attempt:
//! retries are scheduled durably in `saga_orders` (so they survive a crash),
//! not looped here.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// What the gateway said to a charge.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    Approved { charge_id: String },
    Declined { reason: String },
}

/// What the gateway said to a refund.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundOutcome {
    /// The approved charge was given back.
    Refunded { charge_id: String },
    /// There was no approved charge: nothing moved, and none will under that key.
    Voided,
}

/// A call that may succeed if tried again: the circuit breaker counts these.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the gateway answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot reach the gateway: {0}")]
    Transport(String),
}

impl GatewayError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            _ => "error",
        }
    }

    /// A 4xx means the gateway is up and refused this request as malformed:
    /// a saga bug, not an outage, so it must not open the circuit. A 401 or
    /// 403 refuses every call alike (a wrong `AGORA_GATEWAY_TOKEN`), which is
    /// as good as down.
    pub fn is_gateway_fault(&self) -> bool {
        !matches!(self, Self::Status { status, .. }
            if (400..500).contains(status) && !matches!(status, 401 | 403))
    }
}

/// Why a [`GatewayClient`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the gateway token holds characters an HTTP header cannot carry")]
    Token,
}

#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ChargeBody {
    id: Option<Uuid>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct RefundBody {
    charge_id: Uuid,
    status: String,
}

impl GatewayClient {
    /// A client of the gateway at `base`; with a `token`, every call carries
    /// it as `Authorization: Bearer` (`AGORA_GATEWAY_TOKEN`).
    pub fn new(base: &str, timeout: Duration, token: Option<&str>) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| ClientError::Token)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .default_headers(headers)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    /// Charges the payment; the payment id is the idempotency key, so a
    /// repeat (after a timeout, a crash, another saga process) is answered
    /// with the first outcome and never charges twice.
    pub async fn charge(
        &self,
        payment_id: Uuid,
        amount: i64,
        currency: &str,
        token: &str,
    ) -> Result<ChargeOutcome, GatewayError> {
        let started = Instant::now();
        let result = self
            .send(
                "/charges",
                &payment_id.to_string(),
                json!({ "amount": amount, "currency": currency, "token": token }),
            )
            .await;
        let outcome = match result {
            Ok((200, body)) => serde_json::from_str::<ChargeBody>(&body)
                .ok()
                .and_then(|b| b.id)
                .map(|id| ChargeOutcome::Approved {
                    charge_id: id.to_string(),
                })
                .ok_or(GatewayError::Status { status: 200, body }),
            Ok((402, body)) => Ok(ChargeOutcome::Declined {
                reason: serde_json::from_str::<ChargeBody>(&body)
                    .ok()
                    .and_then(|b| b.reason)
                    .unwrap_or_else(|| "declined".to_owned()),
            }),
            Ok((status, body)) => Err(GatewayError::Status { status, body }),
            Err(err) => Err(err),
        };
        let label = match &outcome {
            Ok(ChargeOutcome::Approved { .. }) => "approved",
            Ok(ChargeOutcome::Declined { .. }) => "declined",
            Err(err) => err.outcome(),
        };
        record("charge", label, started);
        outcome
    }

    /// Refunds the charge of `payment_id` under the key `<payment id>:refund`.
    pub async fn refund(&self, payment_id: Uuid) -> Result<RefundOutcome, GatewayError> {
        let started = Instant::now();
        let result = self
            .send(
                "/refunds",
                &format!("{payment_id}:refund"),
                json!({ "charge_key": payment_id.to_string() }),
            )
            .await;
        let outcome = match result {
            Ok((200, body)) => match serde_json::from_str::<RefundBody>(&body) {
                Ok(b) if b.status == "refunded" => Ok(RefundOutcome::Refunded {
                    charge_id: b.charge_id.to_string(),
                }),
                Ok(b) if b.status == "voided" => Ok(RefundOutcome::Voided),
                _ => Err(GatewayError::Status { status: 200, body }),
            },
            Ok((status, body)) => Err(GatewayError::Status { status, body }),
            Err(err) => Err(err),
        };
        let label = match &outcome {
            Ok(_) => "approved",
            Err(err) => err.outcome(),
        };
        record("refund", label, started);
        outcome
    }

    async fn send(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> Result<(u16, String), GatewayError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .map_err(|err| self.classify(err))?;
        let status = response.status().as_u16();
        if matches!(status, 401 | 403) {
            tracing::error!(
                status,
                "the payment gateway refused the saga's credentials: AGORA_GATEWAY_TOKEN must be the gateway's"
            );
        }
        let text = response.text().await.map_err(|err| self.classify(err))?;
        Ok((status, text))
    }

    fn classify(&self, err: reqwest::Error) -> GatewayError {
        if err.is_timeout() {
            GatewayError::Timeout(self.timeout)
        } else {
            GatewayError::Transport(err.to_string())
        }
    }
}

fn record(operation: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!("agora_gateway_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("agora_gateway_request_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}

/// Counts a call the open circuit refused before it was made.
pub fn record_rejected(operation: &'static str) {
    metrics::counter!("agora_gateway_requests_total", "operation" => operation, "outcome" => "rejected_open")
        .increment(1);
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    // A stand-in gateway whose answer depends on the token alone.
    async fn gateway() -> String {
        async fn charge(
            headers: HeaderMap,
            Json(body): Json<serde_json::Value>,
        ) -> (StatusCode, Json<serde_json::Value>) {
            assert!(headers.contains_key("idempotency-key"));
            match body["token"].as_str() {
                Some("tok_ok") => (
                    StatusCode::OK,
                    Json(json!({ "id": Uuid::now_v7(), "status": "approved" })),
                ),
                Some("tok_decline") => (
                    StatusCode::PAYMENT_REQUIRED,
                    Json(json!({ "status": "declined", "reason": "card_declined" })),
                ),
                Some("tok_slow") => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (StatusCode::OK, Json(json!({})))
                }
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": "down" })),
                ),
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, Router::new().route("/charges", post(charge))).await
        });
        url
    }

    // Current-thread runtime: the thread-local recorder sees every call.
    #[tokio::test]
    async fn every_outcome_is_told_apart_and_counted() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let client =
            GatewayClient::new(&gateway().await, Duration::from_millis(300), None).unwrap();
        let id = Uuid::now_v7();
        assert!(matches!(
            client.charge(id, 100, "EUR", "tok_ok").await,
            Ok(ChargeOutcome::Approved { .. })
        ));
        assert_eq!(
            client.charge(id, 100, "EUR", "tok_decline").await.unwrap(),
            ChargeOutcome::Declined {
                reason: "card_declined".to_owned()
            }
        );
        let down = client.charge(id, 100, "EUR", "tok_down").await.unwrap_err();
        assert!(matches!(down, GatewayError::Status { status: 503, .. }));
        assert!(down.is_gateway_fault());
        let slow = client.charge(id, 100, "EUR", "tok_slow").await.unwrap_err();
        assert!(matches!(slow, GatewayError::Timeout(_)), "{slow:?}");

        let snapshot = snapshotter.snapshot().into_vec();
        for outcome in ["approved", "declined", "error", "timeout"] {
            let counted = snapshot.iter().any(|(key, _, _, value)| {
                let key = key.key();
                key.name() == "agora_gateway_requests_total"
                    && key
                        .labels()
                        .any(|l| l.key() == "outcome" && l.value() == outcome)
                    && key
                        .labels()
                        .any(|l| l.key() == "operation" && l.value() == "charge")
                    && *value == DebugValue::Counter(1)
            });
            assert!(counted, "{outcome}: {snapshot:?}");
        }
        let timed = snapshot.iter().any(|(key, _, _, value)| {
            key.key().name() == "agora_gateway_request_duration_seconds"
                && matches!(value, DebugValue::Histogram(v) if v.len() == 4)
        });
        assert!(timed, "{snapshot:?}");
    }
}
