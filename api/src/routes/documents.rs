//! The machine-readable contracts and the reference built on them:
//! `/openapi.json`, `/asyncapi.json` and `/docs`. Both documents are
//! functions of the code only, so each is rendered once per process.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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

/// The page of `/docs`: the vendored reference and its start script, both
/// from this server.
const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
  <head>
    <title>Agora API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <div id="app"></div>
    <script src="/docs/scalar.js"></script>
    <script src="/docs/docs.js"></script>
  </body>
</html>
"#;

/// Nothing but this server: scripts from it only (no inline script, no
/// eval: the bundle only probes for it and does without), fetches (the
/// documents, "try it" requests), images and fonts from it only; no frames
/// or plugins. Styles may be inline: the bundle injects its stylesheets and
/// colours code with style attributes, which a nonce cannot cover, and a
/// style can load nothing from elsewhere since images and fonts are 'self'.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Scalar's standalone bundle (`api/assets/scalar/`, from
/// `ops/scripts/vendor-scalar.sh`), as is and gzipped.
const SCALAR_JS: &[u8] = include_bytes!("../../assets/scalar/standalone.js");
const SCALAR_JS_GZIP: &[u8] = include_bytes!("../../assets/scalar/standalone.js.gz");
const SCALAR_VERSION: &str = include_str!("../../assets/scalar/VERSION");
const DOCS_JS: &str = include_str!("../../assets/docs/docs.js");

pub async fn docs() -> Response {
    let mut response = Html(DOCS_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `/docs/scalar.js`: gzipped to clients that take gzip, revalidated by
/// an `ETag` of the vendored version.
pub async fn scalar_js(request_headers: HeaderMap) -> Response {
    let etag = format!("\"scalar-{}\"", SCALAR_VERSION.trim());
    let gzip = accepts_gzip(&request_headers);
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gzip {
        Bytes::from_static(SCALAR_JS_GZIP).into_response()
    } else {
        Bytes::from_static(SCALAR_JS).into_response()
    };
    let headers = response.headers_mut();
    script_headers(headers, "public, max-age=86400");
    if gzip && !fresh {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// `/docs/docs.js`: starts the reference on `/openapi.json`.
pub async fn docs_js() -> Response {
    let mut response = DOCS_JS.into_response();
    script_headers(response.headers_mut(), "no-cache");
    response
}

fn script_headers(headers: &mut HeaderMap, cache: &'static str) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Whether `Accept-Encoding` takes gzip: named (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_take_it() {
        assert!(accepts_gzip(&with("gzip, deflate, br")));
        assert!(accepts_gzip(&with("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_gzipped_bundle_is_the_bundle() {
        // The gzip trailer ends with the uncompressed size (mod 2^32).
        let size = u32::from_le_bytes(
            SCALAR_JS_GZIP[SCALAR_JS_GZIP.len() - 4..]
                .try_into()
                .unwrap(),
        );
        assert_eq!(size as usize, SCALAR_JS.len() % (1 << 32));
        assert_eq!(&SCALAR_JS_GZIP[..2], &[0x1f, 0x8b]);
    }
}
