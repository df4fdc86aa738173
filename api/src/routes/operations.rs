use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;

use crate::state::AppState;

#[derive(Serialize, JsonSchema)]
pub(crate) struct Health {
    #[schemars(extend("enum" = ["ok"]))]
    status: &'static str,
}

/// Whether this process can serve, and what it waits for if not.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Readiness {
    #[schemars(extend("enum" = ["ready", "draining", "not ready"]))]
    status: &'static str,
    checks: Checks,
}

/// `ok`, or what is wrong.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Checks {
    postgres: &'static str,
    nats: &'static str,
}

/// 200 while the process runs.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 once Postgres answers with every migration applied and NATS is
/// connected with the event stream in place (`agora migrate` makes both);
/// 503, naming what is missing, otherwise or while draining.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match commands::migrate::is_current(&state.pool).await {
        Ok(true) => "ok",
        Ok(false) => "migrations pending",
        Err(_) => "unreachable",
    };
    let nats = match &state.nats {
        Some(client) if client.connection_state() == async_nats::connection::State::Connected => {
            let stream = schemas::subjects::stream(&state.options.nats_prefix);
            match async_nats::jetstream::new(client.clone())
                .get_stream(&stream)
                .await
            {
                Ok(_) => "ok",
                Err(_) => "event stream missing: run agora migrate",
            }
        }
        Some(_) => "disconnected",
        None => "not configured",
    };
    let draining = state.is_draining();
    let ready = database == "ok" && nats == "ok" && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready {
            "ready"
        } else if draining {
            "draining"
        } else {
            "not ready"
        },
        checks: Checks {
            postgres: database,
            nats,
        },
    };
    (status, Json(body)).into_response()
}
