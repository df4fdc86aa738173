//! Prometheus metrics: the process-wide recorder, `GET /metrics`, and the
//! HTTP middleware that counts and times every request.
//!
//! Every crate records through the `metrics` facade; this module installs the
//! one recorder those calls reach. A process has one global recorder, so
//! installation happens once however many routers are built (tests build
//! many), and `/metrics` renders from the handle kept here.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

// Latencies from a cached read (well under a millisecond) to a request
// waiting out the read-your-writes wait or the request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histograms are folded into their buckets when nobody scrapes,
/// so samples do not pile up in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process, once, and registers the
/// main series at zero. Later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS);
        // Only a malformed bucket list can fail here, and ours is a constant.
        let recorder = match builder {
            Ok(builder) => builder.build_recorder(),
            Err(error) => {
                tracing::error!(%error, "invalid histogram buckets; using summaries");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            // Someone else's recorder got there first (an embedding
            // program): our handle then renders nothing, but nothing breaks.
            tracing::warn!(%error, "a metrics recorder was already installed; /metrics will be empty");
        }
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms fold only when scraped");
        }
        describe();
        handle
    })
}

/// `GET /metrics`: every series of this process in the text format.
pub async fn render() -> Response {
    let body = install().render();
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

/// Counts and times one request by method, route template and status, from
/// [`RequestTimer::start`] to [`RequestTimer::finish`]; a step of
/// [`crate::edge::edge`]. The route is the matched template
/// (`/products/{id}`), never the raw path, so ids cannot multiply the
/// series; a path that matched nothing is `unmatched`.
pub struct RequestTimer {
    method: &'static str,
    route: Option<MatchedPath>,
    started: Instant,
    _in_flight: InFlight,
}

impl RequestTimer {
    pub fn start(req: &Request) -> Self {
        Self {
            method: method_label(req.method()),
            route: req.extensions().get::<MatchedPath>().cloned(),
            started: Instant::now(),
            _in_flight: InFlight::enter(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(self, status: StatusCode) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        Series::with(self.method, route, status, |series| {
            series.requests.increment(1);
            series.duration.record(elapsed);
        });
    }
}

/// The handles of one method, route and status. Looked up in the recorder
/// once and kept, so a request pays one map lookup, not two registry
/// lookups with their label allocations. The set is bounded: methods and
/// statuses are fixed lists, routes are the route table's templates.
struct Series {
    method: &'static str,
    status: StatusCode,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

type Known = RwLock<HashMap<String, Vec<Series>>>;

impl Series {
    fn with(method: &'static str, route: &str, status: StatusCode, use_it: impl FnOnce(&Series)) {
        static KNOWN: OnceLock<Known> = OnceLock::new();
        let known = KNOWN.get_or_init(Known::default);
        fn find<'a>(
            all: &'a HashMap<String, Vec<Series>>,
            method: &str,
            route: &str,
            status: StatusCode,
        ) -> Option<&'a Series> {
            all.get(route)?
                .iter()
                .find(|s| s.method == method && s.status == status)
        }
        {
            let all = known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = find(&all, method, route, status) {
                return use_it(series);
            }
        }
        let mut all = known.write().unwrap_or_else(PoisonError::into_inner);
        if find(&all, method, route, status).is_none() {
            let route_label = SharedString::from_owned(route.to_owned());
            all.entry(route.to_owned()).or_default().push(Series {
                method,
                status,
                requests: metrics::counter!("agora_http_requests_total", "method" => method, "route" => route_label.clone(), "status" => status_label(status)),
                duration: metrics::histogram!("agora_http_request_duration_seconds", "method" => method, "route" => route_label),
            });
        }
        if let Some(series) = find(&all, method, route, status) {
            use_it(series);
        }
    }
}

/// Counts a request in flight until dropped, however the request ends (a
/// dropped connection or a timeout included).
struct InFlight(&'static metrics::Gauge);

impl InFlight {
    fn enter() -> Self {
        static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
        let gauge = GAUGE.get_or_init(|| metrics::gauge!("agora_http_requests_in_flight"));
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

// The statuses this API answers, without formatting a number per request.
fn status_label(status: StatusCode) -> SharedString {
    let label = match status.as_u16() {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        412 => "412",
        413 => "413",
        415 => "415",
        422 => "422",
        428 => "428",
        429 => "429",
        500 => "500",
        503 => "503",
        other => return SharedString::from_owned(other.to_string()),
    };
    SharedString::const_str(label)
}

// A fixed set, so a client inventing methods cannot create series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Aggregate types, as stored and as labelled.
const AGGREGATES: [&str; 4] = ["user", "product", "order", "payment"];
const OUTCOMES: [&str; 5] = ["ok", "rejected", "conflict", "precondition_failed", "error"];

/// Describes the series this crate and its dependencies record, and sets
/// the main ones to zero, so dashboards show 0 rather than "no data" before
/// the first event.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

    describe_counter!(
        "agora_http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        "agora_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route template."
    );
    describe_gauge!(
        "agora_http_requests_in_flight",
        "HTTP requests being answered now."
    );
    // Adding zero registers the series without overwriting a value set
    // before this ran.
    metrics::gauge!("agora_http_requests_in_flight").increment(0.0);

    describe_gauge!(
        "agora_sse_streams_open",
        "Live-update streams (Server-Sent Events) open now, against AGORA_SSE_MAX_STREAMS."
    );
    metrics::gauge!("agora_sse_streams_open").increment(0.0);
    describe_counter!(
        "agora_sse_refused_total",
        "Live-update streams refused (503) at the cap."
    );
    metrics::counter!("agora_sse_refused_total").absolute(0);

    describe_counter!("agora_commands_total", "Commands run, by aggregate and outcome (ok, rejected, conflict, precondition_failed, error).");
    describe_counter!(
        "agora_command_retries_total",
        "Commands run again after losing an optimistic race on their aggregate."
    );
    describe_histogram!(
        "agora_command_duration_seconds",
        Unit::Seconds,
        "Time to run a command, load and append included."
    );
    describe_counter!(
        "agora_events_appended_total",
        "Events appended to the store, by aggregate."
    );
    describe_counter!(
        "agora_aggregate_cache_hits_total",
        "Aggregate loads served from the in-process cache."
    );
    describe_counter!(
        "agora_aggregate_cache_misses_total",
        "Aggregate loads that read the store."
    );
    for aggregate in AGGREGATES {
        for outcome in OUTCOMES {
            metrics::counter!("agora_commands_total", "aggregate" => aggregate, "outcome" => outcome).absolute(0);
        }
        metrics::counter!("agora_command_retries_total", "aggregate" => aggregate).absolute(0);
        metrics::counter!("agora_events_appended_total", "aggregate" => aggregate).absolute(0);
        metrics::counter!("agora_aggregate_cache_hits_total", "aggregate" => aggregate).absolute(0);
        metrics::counter!("agora_aggregate_cache_misses_total", "aggregate" => aggregate)
            .absolute(0);
    }

    describe_counter!(
        "agora_read_cache_hits_total",
        "Single-resource reads answered from the read cache, by model."
    );
    describe_counter!(
        "agora_read_cache_misses_total",
        "Single-resource reads that went to the read tables, by model."
    );
    for model in crate::cache::MODELS {
        metrics::counter!("agora_read_cache_hits_total", "model" => model).absolute(0);
        metrics::counter!("agora_read_cache_misses_total", "model" => model).absolute(0);
    }

    describe_counter!(
        "agora_facet_cache_hits_total",
        "Product searches whose facet counts came from the facet cache."
    );
    describe_counter!(
        "agora_facet_cache_misses_total",
        "Product searches whose facet counts were counted in the read tables."
    );
    metrics::counter!("agora_facet_cache_hits_total").absolute(0);
    metrics::counter!("agora_facet_cache_misses_total").absolute(0);

    describe_counter!(
        "agora_relay_published_total",
        "Events the relay published and JetStream acknowledged."
    );
    describe_gauge!(
        "agora_relay_lag_events",
        "Committed events not yet acknowledged by JetStream."
    );
    describe_gauge!(
        "agora_relay_leader",
        "1 on the process holding the relay's leadership lock."
    );
    describe_gauge!(
        "agora_relay_last_publish_timestamp_seconds",
        Unit::Seconds,
        "When the relay last had a batch acknowledged (Unix time)."
    );
    metrics::counter!("agora_relay_published_total").absolute(0);
    metrics::gauge!("agora_relay_leader").increment(0.0);

    describe_gauge!(
        "agora_projection_position",
        "The last global position a projection applied."
    );
    describe_gauge!(
        "agora_projection_lag_events",
        "How far the newest event a projection receives is ahead of its position."
    );
    describe_gauge!(
        "agora_projection_dead_letters",
        "Messages a projection gave up on."
    );
    describe_counter!(
        "agora_projection_applied_total",
        "Events a projection applied (repeats and skips not counted)."
    );
    for projection in projections::Projection::ALL {
        metrics::counter!("agora_projection_applied_total", "projection" => projection.name())
            .absolute(0);
    }

    describe_counter!(
        "agora_rate_limited_total",
        "Requests refused with 429 because their client was over its quota."
    );
    metrics::counter!("agora_rate_limited_total").absolute(0);

    describe_counter!(
        "agora_logins_total",
        "POST /auth/login by outcome (ok, invalid_credentials, deactivated, throttled)."
    );
    for outcome in ["ok", "invalid_credentials", "deactivated", "throttled"] {
        metrics::counter!("agora_logins_total", "outcome" => outcome).absolute(0);
    }
    describe_counter!(
        "agora_refreshes_total",
        "POST /auth/refresh by outcome (ok, invalid, reused: a used token came back and its sign-in was revoked)."
    );
    for outcome in ["ok", "invalid", "reused"] {
        metrics::counter!("agora_refreshes_total", "outcome" => outcome).absolute(0);
    }
    describe_counter!(
        "agora_oidc_key_fetches_total",
        "Fetches of the OpenID Connect provider's keys, by outcome (ok, error)."
    );
    describe_counter!(
        "agora_oidc_users_registered_total",
        "Users registered on first sight of their OpenID Connect token."
    );
}
