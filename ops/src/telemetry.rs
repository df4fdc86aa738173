//! Logs and traces.
//!
//! Logs are structured, to stdout: JSON unless a person is watching a
//! terminal (or `AGORA_LOG_FORMAT` says otherwise), filtered by `RUST_LOG`.
//! Every line written while a request or a message is handled carries the
//! spans it happens in: the request's `correlation_id` and `trace_id`, or the
//! message's `correlation_id`, `causation_id` and `trace_id`.
//!
//! With the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, the same
//! spans are exported over OTLP (HTTP/protobuf), linked to the W3C trace
//! that came in with the request or the event.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogConfig;

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Keeps the exporter alive; dropping it sends the spans still buffered.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("agora: could not flush the last traces: {error}");
            }
        }
    }
}

fn filter(config: &LogConfig) -> EnvFilter {
    EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Starts logging (and trace export when configured and built in).
pub fn init(config: &LogConfig) -> Telemetry {
    let json = match config.format.as_deref() {
        Some("json") => true,
        Some(_) => false,
        None => !std::io::stdout().is_terminal(),
    };
    let logs = tracing_subscriber::fmt::layer().with_target(false);
    let logs: BoxedLayer = if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter(config))
            .boxed()
    } else {
        logs.with_filter(filter(config)).boxed()
    };
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut layers = vec![logs];

    #[cfg(feature = "otlp")]
    let mut problem = None;
    #[cfg(feature = "otlp")]
    let provider = match &config.otlp_endpoint {
        None => None,
        Some(_) => match otlp::provider(&config.service_name) {
            Ok(provider) => {
                layers.push(otlp::layer(&provider, filter(config)));
                schemas::trace::set_step_hook(otlp::step);
                Some(provider)
            }
            Err(error) => {
                problem = Some(error);
                None
            }
        },
    };

    tracing_subscriber::registry().with(layers).init();

    #[cfg(feature = "otlp")]
    {
        match (&config.otlp_endpoint, problem) {
            (Some(endpoint), None) => {
                tracing::info!(%endpoint, service = %config.service_name, "exporting traces over OTLP")
            }
            (Some(endpoint), Some(error)) => {
                tracing::error!(%endpoint, %error, "cannot export traces over OTLP; logging only")
            }
            (None, _) => {}
        }
        Telemetry { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        if let Some(endpoint) = &config.otlp_endpoint {
            tracing::warn!(
                %endpoint,
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no OTLP export: \
                 traces are not exported (rebuild with `cargo build --features ops/otlp`)"
            );
        }
        Telemetry {}
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use schemas::TraceParent;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{EnvFilter, Layer};

    use super::BoxedLayer;

    /// A tracer provider exporting in batches to the endpoint the standard
    /// `OTEL_EXPORTER_OTLP_*` variables name.
    pub fn provider(service_name: &str) -> Result<SdkTracerProvider, String> {
        let service_name = service_name.to_owned();
        // The blocking HTTP client must not be built on an async runtime's
        // thread (it runs one of its own), so it is built on a thread of its own.
        std::thread::spawn(move || {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|error| error.to_string())?;
            Ok(SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build())
        })
        .join()
        .map_err(|_| "setting up the exporter panicked".to_owned())?
    }

    pub fn layer(provider: &SdkTracerProvider, filter: EnvFilter) -> BoxedLayer {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("agora"))
            .with_filter(filter)
            .boxed()
    }

    /// Links `span` to `parent` (a remote span: the caller's, or the step
    /// that wrote the event) and answers the span's own ids.
    pub fn step(span: &tracing::Span, parent: Option<TraceParent>) -> Option<TraceParent> {
        if let Some(parent) = parent {
            let remote = SpanContext::new(
                TraceId::from_bytes(parent.trace_id.to_be_bytes()),
                SpanId::from_bytes(parent.span_id.to_be_bytes()),
                TraceFlags::new(parent.flags),
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        own.is_valid().then(|| TraceParent {
            trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(own.span_id().to_bytes()),
            flags: own.trace_flags().to_u8(),
        })
    }
}
