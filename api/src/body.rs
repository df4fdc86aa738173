//! Receiving a request's body, before anything handles it.
//!
//! The edge reads every body whole, as a buffering reverse proxy does, so a
//! slow upload ties up no handler and the request timeout only measures the
//! handling. A body declared larger than the limit is refused at once,
//! before a byte of it is read (413); one that grows past the limit is
//! refused when it does. A body must arrive within
//! `AGORA_BODY_READ_TIMEOUT_MS`, extended by one second for every
//! `AGORA_BODY_MIN_RATE` bytes received (Apache's `mod_reqtimeout` rule), so
//! a large upload on a slow line is fine and a trickle is a 408.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::extract::too_large;
use crate::state::HttpOptions;

/// 413 when `Content-Length` names more than the limit.
pub fn check_declared_length(options: &HttpOptions, req: &Request) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > options.body_limit as u64 => Err(too_large()),
        _ => Ok(()),
    }
}

/// The request with its body read into memory (413, 408 or 400 if it cannot
/// be). A request without a body is passed on untouched.
pub async fn buffer(options: &HttpOptions, req: Request) -> Result<Request, ApiError> {
    if req.body().is_end_stream() {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = read(body, options).await?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn read(mut body: Body, options: &HttpOptions) -> Result<Bytes, ApiError> {
    let started = Instant::now();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    loop {
        let frame = match deadline(options, started, received) {
            Some(at) => tokio::time::timeout_at(at, body.frame())
                .await
                .map_err(|_| too_slow(options, received))?,
            None => body.frame().await,
        };
        let Some(frame) = frame else { break };
        let frame = frame
            .map_err(|err| ApiError::bad_request(format!("the body could not be read: {err}")))?;
        if let Ok(data) = frame.into_data() {
            received += data.len();
            if received > options.body_limit {
                return Err(too_large());
            }
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// When the body's next bytes must have come, given how many have.
fn deadline(options: &HttpOptions, started: Instant, received: usize) -> Option<Instant> {
    if options.body_read_timeout.is_zero() {
        return None;
    }
    let earned = match options.body_min_rate {
        0 => Duration::ZERO,
        rate => Duration::from_secs_f64(received as f64 / f64::from(rate)),
    };
    Some(started + options.body_read_timeout + earned)
}

fn too_slow(options: &HttpOptions, received: usize) -> ApiError {
    ApiError::body_too_slow(format!(
        "the body arrived too slowly ({received} bytes so far): it must come within {} ms plus one second per {} bytes",
        options.body_read_timeout.as_millis(),
        options.body_min_rate
    ))
}
