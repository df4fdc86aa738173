//! Configuration: one typed struct read from the environment at start-up, with
//! the defaults of the API contract. A wrong value stops start-up with a message
//! that names the variable.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Two load-balancer health checks at the usual half-second interval, and
/// short enough that a deploy or a Ctrl-C is not kept waiting.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 1_000;

/// Per client: far above what a person or a polite script sends, and about
/// 1% of what one server commits (some 5,000 commands/s measured), so a
/// runaway client cannot crowd out the others.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 50;

/// A page load or a batch of writes may come at once: two seconds' worth.
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 100;

// The limits of a connection and of a request's head and body, with the
// defaults of the reverse proxies one would otherwise put in front: Apache's
// `mod_reqtimeout` (`header=20`, `body=20,MinRate=500`), nginx's
// `keepalive_timeout 75s` (longer than the 60 s idle timeout of common load
// balancers, so they close first) and `large_client_header_buffers` (8 KiB
// for the request line), Node's 16 KiB of header fields, Apache's
// `LimitRequestFields 100`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 20_000;
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_MS: u64 = 75_000;
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 20_000;
pub const DEFAULT_BODY_MIN_RATE: u32 = 500;
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Per peer address: more than a browser (6) or a pooling client opens, and
/// few enough that one address cannot hold the process's sockets. Behind a
/// proxy every connection shares its address: raise it, or 0 for none.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub gateway: GatewayConfig,
    pub consistency_wait: Duration,
    /// Carts unchanged this long expire (`AGORA_CART_TTL`, humantime, 30d),
    /// checked every `AGORA_CART_EXPIRY_INTERVAL_MS` by the saga role.
    pub carts: saga::cart_expiry::ExpiryOptions,
    pub log: LogConfig,
    /// How projections and the saga find committed events the broker lost.
    pub repair: projections::repair::RepairOptions,
    /// The projections a projector runs (`AGORA_PROJECTIONS`, names
    /// separated by commas; default every one), so they can be spread over
    /// processes. Processes that run the same projection share its durable
    /// consumer, so that is safe too.
    pub projections: Vec<projections::Projection>,
    pub webhooks: WebhooksConfig,
    /// `AGORA_SSE_MAX_STREAMS`: live-update streams open per process at most.
    pub sse_max_streams: usize,
    /// `AGORA_SEARCH_CACHE_BYTES`: each of the API's search caches (the
    /// pages' keys, the facet counts) at most; 0 turns them off.
    pub search_cache_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// `AGORA_WEBHOOK_RETRY_SCALE`: multiplies the retry schedule (tests shrink it).
    pub retry_scale: f64,
    /// `AGORA_WEBHOOKS_ALLOW_LOOPBACK=true`: endpoints on loopback (http too) are accepted.
    pub allow_loopback: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    /// Connections per process. Measured on this class of machine, Postgres
    /// peaked near 8 busy connections and slowed at 32 and more, so requests
    /// queue in front of a small pool rather than crowd the server.
    pub pool_size: u32,
}

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub body_limit: usize,
    /// A body must arrive within this, plus a second per `body_min_rate`
    /// bytes received (`AGORA_BODY_READ_TIMEOUT_MS`, `AGORA_BODY_MIN_RATE`):
    /// Apache's `mod_reqtimeout` default, `body=20,MinRate=500`.
    pub body_read_timeout: Duration,
    pub body_min_rate: u32,
    pub request_timeout: Duration,
    /// Connections and request heads (`AGORA_HEADER_READ_TIMEOUT_MS`,
    /// `AGORA_KEEP_ALIVE_TIMEOUT_MS`, `AGORA_MAX_CONNECTIONS_PER_PEER`,
    /// `AGORA_MAX_URI_BYTES`, `AGORA_MAX_HEADER_BYTES`, `AGORA_MAX_HEADERS`).
    pub connections: api::ConnectionLimits,
    /// How often expired `Idempotency-Key` records are deleted, and how many
    /// per statement (`AGORA_IDEMPOTENCY_SWEEP_INTERVAL_MS`, `_BATCH`).
    pub idempotency_sweep: commands::idempotency::SweepOptions,
    /// On SIGTERM, how long `/readyz` reports 503 while requests are still
    /// served, before the listener closes, so load balancers notice first
    /// (`AGORA_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace: Duration,
    /// Per-client requests per second and burst; 0 turns limits off.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub enabled: bool,
    pub jwt_secret: Option<Secret>,
    /// `AGORA_ACCESS_TOKEN_TTL`: how long an access token of a sign-in lives.
    pub access_token_ttl: Duration,
    /// `AGORA_REFRESH_TOKEN_TTL`: how long a refresh token lives unused.
    pub refresh_token_ttl: Duration,
    /// `AGORA_OIDC_*`; `None` when `AGORA_OIDC_ISSUER` is not set.
    pub oidc: Option<OidcConfig>,
    /// `AGORA_DATA_KEY` (32 bytes, base64): wraps the per-user data keys
    /// that seal personal data. Never stored in the database.
    pub data_key: Option<commands::MasterKey>,
}

impl AuthConfig {
    /// The data key, or the fixed development key when none is set (which
    /// `serve` allows only with `AGORA_AUTH=off`, and says so).
    pub fn data_key_or_development(&self) -> commands::MasterKey {
        self.data_key
            .clone()
            .unwrap_or_else(commands::MasterKey::development)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    pub roles_claim: String,
    pub admin_role: String,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub url: String,
    pub addr: SocketAddr,
    /// `AGORA_GATEWAY_TOKEN`: what `agora gateway` requires of every
    /// request, and what the saga sends.
    pub token: Option<Secret>,
    pub payment_deadline: Duration,
    /// One call from the saga to the gateway, at most.
    pub timeout: Duration,
    /// First retry delay after a failed gateway call; doubles, with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Consecutive gateway failures that open the circuit breaker.
    pub circuit_threshold: u32,
    /// How long the circuit stays open before one probe call.
    pub circuit_cool_down: Duration,
    /// How long one saga process holds an order it steps.
    pub saga_lease: Duration,
    /// Orders one saga process steps at once.
    pub saga_concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub filter: String,
    pub format: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: export traces there over OTLP
    /// (HTTP/protobuf), in builds with the `otlp` feature.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, else `agora`.
    pub service_name: String,
}

/// A value that must never reach a log: printed as `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch
    /// the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let prefix: String = env.get("AGORA_NATS_PREFIX", "agora".to_owned())?;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(env.invalid(
                "AGORA_NATS_PREFIX",
                &prefix,
                "use letters, digits, '_' or '-'",
            ));
        }
        let auth = env.raw("AGORA_AUTH").unwrap_or_else(|| "on".to_owned());
        let auth_enabled = match auth.as_str() {
            "on" => true,
            "off" => false,
            other => return Err(env.invalid("AGORA_AUTH", other, "expected on or off")),
        };
        let pool_size: u32 = env.get("AGORA_DB_POOL_SIZE", 16)?;
        if pool_size == 0 {
            return Err(env.invalid("AGORA_DB_POOL_SIZE", "0", "at least 1 connection is needed"));
        }
        let access_token_ttl = env.duration("AGORA_ACCESS_TOKEN_TTL", "15m")?;
        let refresh_token_ttl = env.duration("AGORA_REFRESH_TOKEN_TTL", "30d")?;
        if access_token_ttl.is_zero() || access_token_ttl > refresh_token_ttl {
            return Err(env.invalid(
                "AGORA_ACCESS_TOKEN_TTL",
                &humantime::format_duration(access_token_ttl).to_string(),
                "must be above zero and at most AGORA_REFRESH_TOKEN_TTL",
            ));
        }
        // Read whether or not OpenID Connect is on, so a typo in them is
        // reported either way.
        let roles_claim: String = env.get("AGORA_OIDC_ROLES_CLAIM", "roles".to_owned())?;
        let admin_role: String = env.get("AGORA_OIDC_ADMIN_ROLE", "agora-admin".to_owned())?;
        let oidc = match (
            env.raw("AGORA_OIDC_ISSUER")
                .filter(|s| !s.trim().is_empty()),
            env.raw("AGORA_OIDC_AUDIENCE")
                .filter(|s| !s.trim().is_empty()),
        ) {
            (None, None) => None,
            (Some(issuer), Some(audience)) => {
                if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                    return Err(env.invalid(
                        "AGORA_OIDC_ISSUER",
                        &issuer,
                        "must be the provider's https:// URL, as its tokens name it in iss",
                    ));
                }
                Some(OidcConfig {
                    issuer,
                    audience,
                    roles_claim,
                    admin_role,
                })
            }
            (Some(_), None) => {
                return Err(env.invalid(
                    "AGORA_OIDC_AUDIENCE",
                    "",
                    "must be set with AGORA_OIDC_ISSUER: the aud our tokens must carry",
                ))
            }
            (None, Some(audience)) => {
                return Err(env.invalid(
                    "AGORA_OIDC_ISSUER",
                    &audience,
                    "must be set with AGORA_OIDC_AUDIENCE",
                ))
            }
        };
        let gateway_timeout = Duration::from_millis(env.get("AGORA_GATEWAY_TIMEOUT_MS", 5_000)?);
        let saga_lease = Duration::from_millis(env.get("AGORA_SAGA_LEASE_MS", 30_000)?);
        // A step holds its order for one gateway call and a few commands; a
        // lease shorter than that would let a second process step it too.
        if saga_lease < gateway_timeout * 2 {
            return Err(env.invalid(
                "AGORA_SAGA_LEASE_MS",
                &saga_lease.as_millis().to_string(),
                "must be at least twice AGORA_GATEWAY_TIMEOUT_MS",
            ));
        }
        let connections = api::ConnectionLimits {
            header_read_timeout: Duration::from_millis(env.get(
                "AGORA_HEADER_READ_TIMEOUT_MS",
                DEFAULT_HEADER_READ_TIMEOUT_MS,
            )?),
            keep_alive_timeout: Duration::from_millis(
                env.get("AGORA_KEEP_ALIVE_TIMEOUT_MS", DEFAULT_KEEP_ALIVE_TIMEOUT_MS)?,
            ),
            max_connections_per_peer: env.get(
                "AGORA_MAX_CONNECTIONS_PER_PEER",
                DEFAULT_MAX_CONNECTIONS_PER_PEER,
            )?,
            max_uri_bytes: env.get("AGORA_MAX_URI_BYTES", DEFAULT_MAX_URI_BYTES)?,
            max_header_bytes: env.get("AGORA_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES)?,
            max_headers: env.get("AGORA_MAX_HEADERS", DEFAULT_MAX_HEADERS)?,
        };
        for (name, value) in [
            (
                "AGORA_HEADER_READ_TIMEOUT_MS",
                connections.header_read_timeout.as_millis() as usize,
            ),
            ("AGORA_MAX_URI_BYTES", connections.max_uri_bytes),
            ("AGORA_MAX_HEADER_BYTES", connections.max_header_bytes),
            ("AGORA_MAX_HEADERS", connections.max_headers),
        ] {
            if value == 0 {
                return Err(env.invalid(name, "0", "must be at least 1"));
            }
        }
        let sweep_batch: i64 = env.get("AGORA_IDEMPOTENCY_SWEEP_BATCH", 1_000)?;
        if sweep_batch < 1 {
            return Err(env.invalid(
                "AGORA_IDEMPOTENCY_SWEEP_BATCH",
                &sweep_batch.to_string(),
                "must be at least 1",
            ));
        }
        let sweep_interval: u64 = env.get("AGORA_IDEMPOTENCY_SWEEP_INTERVAL_MS", 60_000)?;
        if sweep_interval == 0 {
            return Err(env.invalid(
                "AGORA_IDEMPOTENCY_SWEEP_INTERVAL_MS",
                "0",
                "must be at least 1",
            ));
        }
        Ok(Self {
            database: DatabaseConfig {
                url: Secret(env.get(
                    "DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/agora".to_owned(),
                )?),
                pool_size,
            },
            nats: NatsConfig {
                url: env.get("NATS_URL", "nats://127.0.0.1:4222".to_owned())?,
                prefix,
            },
            http: HttpConfig {
                addr: env.get("AGORA_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
                body_limit: env.get("AGORA_BODY_LIMIT_BYTES", 64 * 1024)?,
                body_read_timeout: Duration::from_millis(
                    env.get("AGORA_BODY_READ_TIMEOUT_MS", DEFAULT_BODY_READ_TIMEOUT_MS)?,
                ),
                body_min_rate: env.get("AGORA_BODY_MIN_RATE", DEFAULT_BODY_MIN_RATE)?,
                connections,
                idempotency_sweep: commands::idempotency::SweepOptions {
                    interval: Duration::from_millis(sweep_interval),
                    batch: sweep_batch,
                },
                request_timeout: Duration::from_millis(
                    env.get("AGORA_REQUEST_TIMEOUT_MS", 30_000)?,
                ),
                shutdown_grace: Duration::from_millis(
                    env.get("AGORA_SHUTDOWN_GRACE_MS", DEFAULT_SHUTDOWN_GRACE_MS)?,
                ),
                rate_limit_per_second: env
                    .get("AGORA_RATE_LIMIT_PER_SECOND", DEFAULT_RATE_LIMIT_PER_SECOND)?,
                rate_limit_burst: env.get("AGORA_RATE_LIMIT_BURST", DEFAULT_RATE_LIMIT_BURST)?,
            },
            auth: AuthConfig {
                enabled: auth_enabled,
                jwt_secret: env
                    .raw("AGORA_JWT_SECRET")
                    .filter(|s| !s.is_empty())
                    .map(Secret),
                access_token_ttl,
                refresh_token_ttl,
                oidc,
                data_key: match env.raw("AGORA_DATA_KEY").filter(|s| !s.is_empty()) {
                    Some(text) => Some(
                        commands::MasterKey::parse(&text)
                            .map_err(|reason| env.invalid("AGORA_DATA_KEY", "(hidden)", &reason))?,
                    ),
                    None => None,
                },
            },
            gateway: GatewayConfig {
                url: env.get("AGORA_GATEWAY_URL", "http://127.0.0.1:8090".to_owned())?,
                addr: env.get(
                    "AGORA_GATEWAY_ADDR",
                    SocketAddr::from(([127, 0, 0, 1], 8090)),
                )?,
                token: env
                    .raw("AGORA_GATEWAY_TOKEN")
                    .filter(|s| !s.is_empty())
                    .map(Secret),
                payment_deadline: Duration::from_millis(
                    env.get("AGORA_PAYMENT_DEADLINE_MS", 60_000)?,
                ),
                timeout: gateway_timeout,
                retry_base: Duration::from_millis(env.get("AGORA_GATEWAY_RETRY_BASE_MS", 200)?),
                retry_max: Duration::from_millis(env.get("AGORA_GATEWAY_RETRY_MAX_MS", 10_000)?),
                circuit_threshold: env.get("AGORA_CIRCUIT_THRESHOLD", 5)?,
                circuit_cool_down: Duration::from_millis(
                    env.get("AGORA_CIRCUIT_COOL_DOWN_MS", 5_000)?,
                ),
                saga_lease,
                saga_concurrency: env.get("AGORA_SAGA_CONCURRENCY", 64)?,
            },
            consistency_wait: Duration::from_millis(env.get("AGORA_CONSISTENCY_WAIT_MS", 3_000)?),
            carts: saga::cart_expiry::ExpiryOptions {
                ttl: env.duration("AGORA_CART_TTL", "30d")?,
                interval: Duration::from_millis(env.get("AGORA_CART_EXPIRY_INTERVAL_MS", 60_000)?),
                ..saga::cart_expiry::ExpiryOptions::default()
            },
            webhooks: WebhooksConfig {
                retry_scale: {
                    let scale: f64 = env.get("AGORA_WEBHOOK_RETRY_SCALE", 1.0)?;
                    if !scale.is_finite() || scale < 0.0 {
                        return Err(env.invalid(
                            "AGORA_WEBHOOK_RETRY_SCALE",
                            &scale.to_string(),
                            "expected a number of at least 0",
                        ));
                    }
                    scale
                },
                allow_loopback: env.get("AGORA_WEBHOOKS_ALLOW_LOOPBACK", false)?,
            },
            sse_max_streams: env.get("AGORA_SSE_MAX_STREAMS", 10_000)?,
            search_cache_bytes: env.get(
                "AGORA_SEARCH_CACHE_BYTES",
                api::cache::CacheOptions::default().search_bytes,
            )?,
            repair: projections::repair::RepairOptions {
                every: Duration::from_millis(env.get("AGORA_REPAIR_INTERVAL_MS", 1_000)?),
                grace: Duration::from_millis(env.get("AGORA_REPAIR_GRACE_MS", 5_000)?),
                ..projections::repair::RepairOptions::default()
            },
            projections: env.projections("AGORA_PROJECTIONS")?,
            log: LogConfig {
                filter: env.get("RUST_LOG", "info".to_owned())?,
                format: env.raw("AGORA_LOG_FORMAT"),
                otlp_endpoint: env
                    .raw("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .filter(|s| !s.trim().is_empty()),
                service_name: env
                    .raw("OTEL_SERVICE_NAME")
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| "agora".to_owned()),
            },
        })
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    fn get<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse()
                .map_err(|err: T::Err| self.invalid(name, &value, &err.to_string())),
        }
    }

    /// A duration as `agora token --ttl` takes it: `15m`, `1h`, `30d`.
    fn duration(&self, name: &'static str, default: &str) -> Result<Duration, ConfigError> {
        let text = self.raw(name).unwrap_or_else(|| default.to_owned());
        humantime::parse_duration(text.trim())
            .map_err(|err| self.invalid(name, &text, &err.to_string()))
    }

    fn projections(&self, name: &'static str) -> Result<Vec<projections::Projection>, ConfigError> {
        let Some(text) = self.raw(name).filter(|t| !t.trim().is_empty()) else {
            return Ok(projections::Projection::ALL.to_vec());
        };
        let mut chosen = Vec::new();
        for part in text.split(',').map(str::trim) {
            let projection = projections::Projection::parse(part).ok_or_else(|| {
                let known: Vec<&str> = projections::Projection::ALL
                    .iter()
                    .map(|p| p.name())
                    .collect();
                self.invalid(
                    name,
                    &text,
                    &format!("{part:?} is not one of {}", known.join(", ")),
                )
            })?;
            if !chosen.contains(&projection) {
                chosen.push(projection);
            }
        }
        Ok(chosen)
    }

    fn invalid(&self, name: &'static str, value: &str, reason: &str) -> ConfigError {
        ConfigError {
            name,
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_those_of_the_contract() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(
            config.database.url.expose(),
            "postgres://postgres@127.0.0.1:5432/agora"
        );
        assert_eq!(config.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(config.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.nats.prefix, "agora");
        assert_eq!(config.gateway.url, "http://127.0.0.1:8090");
        assert_eq!(config.gateway.addr.to_string(), "127.0.0.1:8090");
        assert_eq!(config.consistency_wait, Duration::from_millis(3000));
        assert_eq!(config.carts.ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(
            config.gateway.payment_deadline,
            Duration::from_millis(60000)
        );
        assert_eq!(config.gateway.timeout, Duration::from_secs(5));
        assert_eq!(config.gateway.circuit_threshold, 5);
        assert_eq!(config.log.filter, "info");
        assert_eq!(config.log.otlp_endpoint, None);
        assert_eq!(config.log.service_name, "agora");
        assert!(config.auth.enabled);
        assert!(config.auth.jwt_secret.is_none());
        assert_eq!(config.auth.access_token_ttl, Duration::from_secs(15 * 60));
        assert_eq!(
            config.auth.refresh_token_ttl,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(config.auth.oidc, None);
        assert_eq!(config.http.shutdown_grace, Duration::from_millis(1000));
        assert_eq!(
            (
                config.http.rate_limit_per_second,
                config.http.rate_limit_burst
            ),
            (50, 100)
        );
        let c = &config.http.connections;
        assert_eq!(c.header_read_timeout, Duration::from_secs(20));
        assert_eq!(c.keep_alive_timeout, Duration::from_secs(75));
        assert_eq!(c.max_connections_per_peer, 256);
        assert_eq!(
            (c.max_uri_bytes, c.max_header_bytes, c.max_headers),
            (8192, 16384, 100)
        );
        assert_eq!(config.http.body_read_timeout, Duration::from_secs(20));
        assert_eq!(config.http.body_min_rate, 500);
        assert_eq!(config.http.idempotency_sweep.batch, 1000);
        assert!(config.gateway.token.is_none());
        assert_eq!(config.projections, projections::Projection::ALL.to_vec());
    }

    #[test]
    fn a_projector_runs_the_projections_named() {
        let some = config(&[("AGORA_PROJECTIONS", " orders, products,orders")]).unwrap();
        assert_eq!(
            some.projections,
            [
                projections::Projection::Orders,
                projections::Projection::Products
            ]
        );
    }

    #[test]
    fn a_wrong_value_names_its_variable() {
        let err = config(&[("AGORA_HTTP_ADDR", "not-an-address")]).unwrap_err();
        assert_eq!(err.name, "AGORA_HTTP_ADDR");
        assert!(err.to_string().starts_with("AGORA_HTTP_ADDR="), "{err}");
        let err = config(&[("AGORA_CONSISTENCY_WAIT_MS", "-1")]).unwrap_err();
        assert_eq!(err.name, "AGORA_CONSISTENCY_WAIT_MS");
        let err = config(&[("AGORA_AUTH", "maybe")]).unwrap_err();
        assert_eq!(err.name, "AGORA_AUTH");
        let err = config(&[("AGORA_NATS_PREFIX", "a.b")]).unwrap_err();
        assert_eq!(err.name, "AGORA_NATS_PREFIX");
        let err = config(&[("AGORA_RATE_LIMIT_BURST", "-1")]).unwrap_err();
        assert_eq!(err.name, "AGORA_RATE_LIMIT_BURST");
        let err = config(&[("AGORA_PROJECTIONS", "products,prodcts")]).unwrap_err();
        assert_eq!(err.name, "AGORA_PROJECTIONS");
        assert!(err.to_string().contains("\"prodcts\""), "{err}");
        let err = config(&[("AGORA_SHUTDOWN_GRACE_MS", "1s")]).unwrap_err();
        assert_eq!(err.name, "AGORA_SHUTDOWN_GRACE_MS");
        let err = config(&[("AGORA_SAGA_LEASE_MS", "1000")]).unwrap_err();
        assert_eq!(err.name, "AGORA_SAGA_LEASE_MS");
        let err = config(&[("AGORA_ACCESS_TOKEN_TTL", "soon")]).unwrap_err();
        assert_eq!(err.name, "AGORA_ACCESS_TOKEN_TTL");
        let err = config(&[("AGORA_ACCESS_TOKEN_TTL", "60d")]).unwrap_err();
        assert_eq!(err.name, "AGORA_ACCESS_TOKEN_TTL");
        let err = config(&[("AGORA_OIDC_ISSUER", "https://id.example")]).unwrap_err();
        assert_eq!(err.name, "AGORA_OIDC_AUDIENCE");
        let err = config(&[
            ("AGORA_OIDC_ISSUER", "id.example"),
            ("AGORA_OIDC_AUDIENCE", "agora"),
        ])
        .unwrap_err();
        assert_eq!(err.name, "AGORA_OIDC_ISSUER");
        let err = config(&[("AGORA_MAX_HEADER_BYTES", "0")]).unwrap_err();
        assert_eq!(err.name, "AGORA_MAX_HEADER_BYTES");
        let err = config(&[("AGORA_KEEP_ALIVE_TIMEOUT_MS", "75s")]).unwrap_err();
        assert_eq!(err.name, "AGORA_KEEP_ALIVE_TIMEOUT_MS");
        let err = config(&[("AGORA_IDEMPOTENCY_SWEEP_BATCH", "0")]).unwrap_err();
        assert_eq!(err.name, "AGORA_IDEMPOTENCY_SWEEP_BATCH");
    }

    #[test]
    fn openid_connect_takes_its_four_variables() {
        let config = config(&[
            ("AGORA_OIDC_ISSUER", "https://id.example/realms/shop"),
            ("AGORA_OIDC_AUDIENCE", "agora"),
            ("AGORA_OIDC_ROLES_CLAIM", "realm_access.roles"),
            ("AGORA_ACCESS_TOKEN_TTL", "5m"),
            ("AGORA_REFRESH_TOKEN_TTL", "7d"),
        ])
        .unwrap();
        let oidc = config.auth.oidc.expect("OpenID Connect on");
        assert_eq!(oidc.issuer, "https://id.example/realms/shop");
        assert_eq!(oidc.audience, "agora");
        assert_eq!(oidc.roles_claim, "realm_access.roles");
        assert_eq!(oidc.admin_role, "agora-admin");
        assert_eq!(config.auth.access_token_ttl, Duration::from_secs(300));
        assert_eq!(
            config.auth.refresh_token_ttl,
            Duration::from_secs(7 * 86400)
        );
    }

    #[test]
    fn secrets_never_print() {
        let config = config(&[
            ("AGORA_JWT_SECRET", "hunter2"),
            ("DATABASE_URL", "postgres://u:pw@h/db"),
            ("AGORA_GATEWAY_TOKEN", "gateway-secret"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("hunter2")
                && !printed.contains("pw@")
                && !printed.contains("gateway-secret"),
            "{printed}"
        );
    }

    #[test]
    fn every_variable_read_is_listed_in_the_example() {
        let example = include_str!("../../.env.example");
        let names = include_str!("config.rs").split('"').filter(|s| {
            s.len() > "AGORA_".len()
                && s.starts_with("AGORA_")
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        });
        for name in names {
            let listed = example
                .lines()
                .any(|line| line.starts_with(&format!("{name}=")));
            assert!(listed, "{name} is missing from .env.example");
        }
    }
}
