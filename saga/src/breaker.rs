//! A circuit breaker in front of the payment gateway.
//!
//! Hand-rolled, about a hundred lines, because the crates on offer do not fit
//! two needs: the state must be observable (the `agora_circuit_state` gauge,
//! and the tests wait on it), and half-open must let exactly one probe
//! through while every other caller is still refused. `failsafe` keeps its
//! state private and lets every caller through when half-open.
//!
//! Closed: calls go through; `threshold` failures in a row open it. Open:
//! every call is refused at once until `cool_down` has passed. Half-open:
//! the next caller gets the one probe; its success closes the breaker, its
//! failure (or its being dropped unfinished) opens it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The value of the `agora_circuit_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// Shared by every step of one saga process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Breaker {
    inner: Arc<Mutex<Inner>>,
    counts: Arc<Counts>,
    threshold: u32,
    cool_down: Duration,
}

#[derive(Debug, Default)]
struct Counts {
    transitions: AtomicU64,
    refused: AtomicU64,
    in_flight: AtomicU64,
}

/// The call was refused: the circuit is open, or half-open with its probe
/// already out. `retry_at` is when a probe may next go.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub retry_at: Instant,
}

/// Leave to make one call. Report its result with `succeeded` or `failed`;
/// dropping it unreported counts as a failure.
#[derive(Debug)]
pub struct Permit {
    breaker: Breaker,
    reported: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        metrics::gauge!("agora_circuit_state").set(CircuitState::Closed.gauge());
        Self {
            inner: Arc::new(Mutex::new(Inner::Closed { failures: 0 })),
            counts: Arc::default(),
            threshold: threshold.max(1),
            cool_down,
        }
    }

    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// State changes so far: with `refused`, lets an observer tell that
    /// calls were refused within one spell of the circuit being open.
    pub fn transitions(&self) -> u64 {
        self.counts.transitions.load(Ordering::SeqCst)
    }

    /// Calls refused so far.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::SeqCst)
    }

    /// Calls let through and not yet reported: calls let through while the
    /// circuit was closed may still be on their way when it opens.
    pub fn in_flight(&self) -> u64 {
        self.counts.in_flight.load(Ordering::SeqCst)
    }

    pub fn try_acquire(&self) -> Result<Permit, Refused> {
        let mut inner = self.lock();
        let retry_at = match *inner {
            Inner::Closed { .. } => None,
            Inner::Open { until } if Instant::now() < until => Some(until),
            Inner::Open { .. } => {
                self.transition(&mut inner, Inner::HalfOpen);
                None
            }
            // The probe is out: everyone else waits for its verdict.
            Inner::HalfOpen => {
                Some(Instant::now() + self.cool_down.min(Duration::from_millis(200)))
            }
        };
        if let Some(retry_at) = retry_at {
            self.counts.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Refused { retry_at });
        }
        self.counts.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Permit {
            breaker: self.clone(),
            reported: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a valid state behind (each
        // change is one assignment), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn success(&self) {
        let mut inner = self.lock();
        if !matches!(*inner, Inner::Closed { .. }) {
            self.transition(&mut inner, Inner::Closed { failures: 0 });
        } else {
            *inner = Inner::Closed { failures: 0 };
        }
    }

    fn failure(&self) {
        let mut inner = self.lock();
        let open = Inner::Open {
            until: Instant::now() + self.cool_down,
        };
        match *inner {
            Inner::Closed { failures } if failures + 1 >= self.threshold => {
                self.transition(&mut inner, open)
            }
            Inner::Closed { failures } => {
                *inner = Inner::Closed {
                    failures: failures + 1,
                }
            }
            Inner::HalfOpen => self.transition(&mut inner, open),
            // A call let through before the circuit opened failed late: the
            // circuit is already open, and its cool-down stands.
            Inner::Open { .. } => {}
        }
    }
}

impl Breaker {
    fn transition(&self, inner: &mut Inner, to: Inner) {
        self.counts.transitions.fetch_add(1, Ordering::SeqCst);
        transition(inner, to);
    }
}

fn transition(inner: &mut Inner, to: Inner) {
    *inner = to;
    let state = match inner {
        Inner::Closed { .. } => CircuitState::Closed,
        Inner::Open { .. } => CircuitState::Open,
        Inner::HalfOpen => CircuitState::HalfOpen,
    };
    tracing::warn!(state = state.label(), "payment gateway circuit changed");
    metrics::gauge!("agora_circuit_state").set(state.gauge());
    metrics::counter!("agora_circuit_transitions_total", "to" => state.label()).increment(1);
}

impl Permit {
    /// Gives the leave back unused: no verdict on the gateway. A half-open
    /// probe returned this way lets the next caller probe at once.
    pub fn abandon(mut self) {
        self.reported = true;
        self.breaker.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut inner = self.breaker.lock();
        if matches!(*inner, Inner::HalfOpen) {
            let open = Inner::Open {
                until: Instant::now(),
            };
            self.breaker.transition(&mut inner, open);
        }
    }

    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.breaker.success();
    }

    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.breaker.failure();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.breaker.failure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_refuses_until_the_cool_down() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        for _ in 0..2 {
            breaker.try_acquire().unwrap().failed();
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.try_acquire().unwrap().failed();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(breaker.try_acquire().is_err());
        tokio::time::advance(Duration::from_millis(1001)).await;
        let probe = breaker.try_acquire().expect("the probe goes through");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(
            breaker.try_acquire().is_err(),
            "only one probe while half-open"
        );
        probe.succeeded();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(breaker.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_abandoned_probe_opens_it_again() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        breaker.try_acquire().unwrap().failed();
        tokio::time::advance(Duration::from_millis(1001)).await;
        breaker.try_acquire().unwrap().failed();
        assert_eq!(breaker.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_millis(1001)).await;
        drop(breaker.try_acquire().unwrap());
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_of_failures() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        breaker.try_acquire().unwrap().failed();
        breaker.try_acquire().unwrap().succeeded();
        breaker.try_acquire().unwrap().failed();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn state_and_transitions_are_reported_as_metrics() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let breaker = Breaker::new(1, Duration::from_secs(60));
            breaker.try_acquire().unwrap().failed();
        });
        let metrics: Vec<(String, Vec<String>, DebugValue)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels = key.labels().map(|l| format!("{}={}", l.key(), l.value()));
                (key.name().to_owned(), labels.collect(), value)
            })
            .collect();
        assert!(
            metrics.contains(&(
                "agora_circuit_state".to_owned(),
                vec![],
                DebugValue::Gauge(2.0.into())
            )),
            "{metrics:?}"
        );
        assert!(
            metrics.contains(&(
                "agora_circuit_transitions_total".to_owned(),
                vec!["to=open".to_owned()],
                DebugValue::Counter(1)
            )),
            "{metrics:?}"
        );
    }
}
