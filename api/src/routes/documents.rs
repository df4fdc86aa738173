//! The machine-readable contracts and the reference built on them:
//! `/openapi.json`, `/asyncapi.json` and `/docs`. Both documents are
//! functions of the code only, so each is rendered once per process.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;

fn json(body: &'static Bytes) -> Response {
    let mut response = body.clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn rendered(document: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(document).unwrap_or_default())
}

/// The OpenAPI document of [`super::table`].
pub fn openapi_document() -> &'static Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(|| rendered(&crate::openapi::document(&super::table())))
}

/// The AsyncAPI document (`crate::asyncapi`).
pub fn asyncapi_document() -> &'static Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(|| rendered(&crate::asyncapi::document()))
}

pub async fn openapi_json() -> Response {
    json(openapi_document())
}

pub async fn asyncapi_json() -> Response {
    json(asyncapi_document())
}

pub async fn docs() -> Html<&'static str> {
    Html(crate::openapi::DOCS_HTML)
}
