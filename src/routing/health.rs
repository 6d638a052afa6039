//! What the gateway knows about each target's health: a circuit breaker fed by real requests
//! (passive health), the verdict of the active probes of its provider, and a latency average for
//! `least_latency` routing.
//!
//! All state is atomics inside an `Arc<TargetHealth>`, so the request path reads and updates it
//! without a lock. [`HealthRegistry`] hands out the same `Arc` for the same (provider, model) across
//! routing-table rebuilds, so a reload keeps breakers, probe results and latencies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::LazyLock;

/// Consecutive failures that open a breaker, unless the provider's config says otherwise.
pub const FAILURE_THRESHOLD: u32 = 3;
/// How long a breaker stays open the first time; doubled on each failed half-open trial.
pub const BASE_COOLDOWN: Duration = Duration::from_secs(5);
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);
/// Weight of the newest sample in the latency average.
const EWMA_ALPHA: f64 = 0.3;
/// Latencies kept per target for percentiles.
const RECENT_LATENCIES: usize = 64;
/// Fewer samples than this make no percentile.
pub const MIN_PERCENTILE_SAMPLES: usize = 20;

/// Time origin for the millisecond timestamps kept in atomics.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`], offset so that small values are always in the past.
fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed,
    /// No requests until the cooldown ends.
    Open,
    /// The cooldown ended: one trial request may go; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Health of one target (a provider and an upstream model).
#[derive(Debug)]
pub struct TargetHealth {
    consecutive_failures: AtomicU32,
    /// 0 when closed; else the time (ms since [`EPOCH`]) until which the breaker is open.
    open_until_ms: AtomicU64,
    /// Number of times in a row the breaker opened; sets the next cooldown.
    trips: AtomicU32,
    /// A half-open trial request is in flight.
    trial_in_flight: AtomicBool,
    /// Latency to the first byte, exponentially averaged, as f64 bits; 0 = no sample yet.
    latency_ewma_ms: AtomicU64,
    /// The latest latencies to first byte in microseconds, a ring written at
    /// `recent_written % RECENT_LATENCIES`, for hedging's percentiles.
    recent_latencies_us: [AtomicU32; RECENT_LATENCIES],
    recent_written: AtomicUsize,
    /// Set by the active probes of the target's provider.
    probe_healthy: Arc<AtomicBool>,
    /// The breaker was last opened by a 429, not by failures.
    rate_limited: AtomicBool,
    failure_threshold: AtomicU32,
    base_cooldown_ms: AtomicU64,
}

impl TargetHealth {
    fn new(probe_healthy: Arc<AtomicBool>) -> Self {
        TargetHealth {
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            trial_in_flight: AtomicBool::new(false),
            latency_ewma_ms: AtomicU64::new(0),
            recent_latencies_us: std::array::from_fn(|_| AtomicU32::new(0)),
            recent_written: AtomicUsize::new(0),
            probe_healthy,
            rate_limited: AtomicBool::new(false),
            failure_threshold: AtomicU32::new(FAILURE_THRESHOLD),
            base_cooldown_ms: AtomicU64::new(BASE_COOLDOWN.as_millis() as u64),
        }
    }

    /// Applies the provider's breaker settings (on every table build, so reloads take effect).
    pub fn set_policy(&self, failure_threshold: u32, base_cooldown: Duration) {
        self.failure_threshold
            .store(failure_threshold.max(1), Ordering::Release);
        self.base_cooldown_ms
            .store(base_cooldown.as_millis().max(1) as u64, Ordering::Release);
    }

    /// The breaker is open because the provider rate-limited us.
    pub fn is_rate_limited(&self) -> bool {
        self.state() == BreakerState::Open && self.rate_limited.load(Ordering::Acquire)
    }

    /// A standalone health record (tests and direct `PROVIDER/MODEL` routes).
    pub fn detached() -> Arc<TargetHealth> {
        Arc::new(TargetHealth::new(Arc::new(AtomicBool::new(true))))
    }

    pub fn state(&self) -> BreakerState {
        match self.open_until_ms.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if now_ms() < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether routing should send traffic here: probes say healthy and the breaker is not open.
    pub fn is_healthy(&self) -> bool {
        self.probe_healthy.load(Ordering::Acquire) && self.state() != BreakerState::Open
    }

    /// Asks to send a request. Closed: yes. Open: no. Half-open: yes for exactly one caller until
    /// its outcome is recorded.
    pub fn try_acquire(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self
                .trial_in_flight
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    pub fn record_success(&self, latency: Option<Duration>) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
        self.trips.store(0, Ordering::Release);
        self.trial_in_flight.store(false, Ordering::Release);
        if let Some(latency) = latency {
            self.observe_latency(latency);
        }
    }

    /// A failure the provider is responsible for (5xx, timeout, connect error, broken stream).
    pub fn record_failure(&self) {
        let was_trial = self.trial_in_flight.swap(false, Ordering::AcqRel);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if was_trial || failures >= self.failure_threshold.load(Ordering::Acquire) {
            let trips = self.trips.fetch_add(1, Ordering::AcqRel);
            let base = Duration::from_millis(self.base_cooldown_ms.load(Ordering::Acquire));
            let cooldown = base.saturating_mul(1u32 << trips.min(6)).min(MAX_COOLDOWN);
            self.rate_limited.store(false, Ordering::Release);
            self.open_for(cooldown);
        }
    }

    /// A 429: the provider asked for a pause. Opens at once for `retry_after` (or the base
    /// cooldown), so no request hammers a rate-limited target.
    pub fn record_rate_limited(&self, retry_after: Option<Duration>) {
        self.trial_in_flight.store(false, Ordering::Release);
        let base = Duration::from_millis(self.base_cooldown_ms.load(Ordering::Acquire));
        self.rate_limited.store(true, Ordering::Release);
        self.open_for(retry_after.unwrap_or(base).min(MAX_COOLDOWN));
    }

    /// The attempt ended without telling anything about the provider (client went away, request
    /// refused before sending). Frees a half-open trial slot.
    pub fn record_neutral(&self) {
        self.trial_in_flight.store(false, Ordering::Release);
    }

    fn open_for(&self, duration: Duration) {
        let until = now_ms() + duration.as_millis().max(1) as u64;
        // Never shorten an existing, longer pause.
        self.open_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    fn observe_latency(&self, latency: Duration) {
        let slot = self.recent_written.fetch_add(1, Ordering::AcqRel) % RECENT_LATENCIES;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.recent_latencies_us[slot].store(micros, Ordering::Release);
        let sample = latency.as_secs_f64() * 1000.0;
        let old = f64::from_bits(self.latency_ewma_ms.load(Ordering::Acquire));
        let new = if old == 0.0 {
            sample
        } else {
            old + EWMA_ALPHA * (sample - old)
        };
        self.latency_ewma_ms.store(new.to_bits(), Ordering::Release);
    }

    /// The averaged latency to first byte, if any request has completed.
    pub fn latency_ms(&self) -> Option<f64> {
        let v = f64::from_bits(self.latency_ewma_ms.load(Ordering::Acquire));
        (v > 0.0).then_some(v)
    }

    /// The `percentile` (0–100) of the latest latencies to first byte; `None` with fewer than
    /// [`MIN_PERCENTILE_SAMPLES`] of them.
    pub fn latency_percentile(&self, percentile: u8) -> Option<Duration> {
        let written = self.recent_written.load(Ordering::Acquire);
        let count = written.min(RECENT_LATENCIES);
        if count < MIN_PERCENTILE_SAMPLES {
            return None;
        }
        let mut samples = [0u32; RECENT_LATENCIES];
        for (sample, slot) in samples.iter_mut().zip(&self.recent_latencies_us[..count]) {
            *sample = slot.load(Ordering::Acquire);
        }
        let samples = &mut samples[..count];
        // Nearest rank: the smallest sample with at least `percentile` % at or below it.
        let rank = (usize::from(percentile.min(100)) * count)
            .div_ceil(100)
            .max(1)
            - 1;
        let (_, at, _) = samples.select_nth_unstable(rank);
        Some(Duration::from_micros(u64::from(*at)))
    }

    /// Milliseconds until an open breaker half-opens.
    pub fn open_for_ms(&self) -> u64 {
        self.open_until_ms
            .load(Ordering::Acquire)
            .saturating_sub(now_ms())
    }

    pub fn probe_healthy(&self) -> bool {
        self.probe_healthy.load(Ordering::Acquire)
    }
}

/// Health records that outlive routing tables, keyed by provider and model.
#[derive(Default)]
pub struct HealthRegistry {
    targets: Mutex<HashMap<(String, String), Arc<TargetHealth>>>,
    providers: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl HealthRegistry {
    /// The shared probe verdict of a provider (healthy until a probe says otherwise).
    pub fn provider(&self, provider: &str) -> Arc<AtomicBool> {
        let mut map = self
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(provider.to_string())
            .or_insert_with(|| Arc::new(AtomicBool::new(true)))
            .clone()
    }

    /// The health record of a target, created on first use. Called when building a table, never
    /// on the request path.
    pub fn target(&self, provider: &str, model: &str) -> Arc<TargetHealth> {
        let probe = self.provider(provider);
        let mut map = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry((provider.to_string(), model.to_string()))
            .or_insert_with(|| Arc::new(TargetHealth::new(probe)))
            .clone()
    }

    /// Forgets targets no table uses any more.
    pub fn retain(&self, keep: &dyn Fn(&str, &str) -> bool) {
        let mut map = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|(p, m), _| keep(p, m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_half_opens_for_one_trial() {
        let h = TargetHealth::detached();
        assert_eq!(h.state(), BreakerState::Closed);
        h.record_failure();
        h.record_failure();
        assert_eq!(h.state(), BreakerState::Closed, "below the threshold");
        h.record_failure();
        assert_eq!(h.state(), BreakerState::Open);
        assert!(!h.try_acquire());
        assert!(!h.is_healthy());
        // Pretend the cooldown passed.
        h.open_until_ms.store(1, Ordering::Release);
        assert_eq!(h.state(), BreakerState::HalfOpen);
        assert!(h.try_acquire(), "one trial goes through");
        assert!(!h.try_acquire(), "and only one");
        h.record_success(Some(Duration::from_millis(40)));
        assert_eq!(h.state(), BreakerState::Closed);
        assert!(h.try_acquire());
        assert_eq!(h.latency_ms(), Some(40.0));
    }

    #[test]
    fn failed_trial_reopens_with_a_longer_cooldown() {
        let h = TargetHealth::detached();
        for _ in 0..FAILURE_THRESHOLD {
            h.record_failure();
        }
        let first = h.open_for_ms();
        h.open_until_ms.store(1, Ordering::Release);
        assert!(h.try_acquire());
        h.record_failure();
        assert_eq!(h.state(), BreakerState::Open);
        assert!(
            h.open_for_ms() > first,
            "cooldown grows: {} vs {first}",
            h.open_for_ms()
        );
    }

    #[test]
    fn rate_limit_opens_at_once_for_retry_after() {
        let h = TargetHealth::detached();
        h.record_rate_limited(Some(Duration::from_secs(7)));
        assert_eq!(h.state(), BreakerState::Open);
        assert!(h.is_rate_limited());
        let left = h.open_for_ms();
        assert!((6_000..=7_000).contains(&left), "{left}");
        // A shorter pause never shortens a longer one.
        h.record_rate_limited(Some(Duration::from_secs(1)));
        assert!(h.open_for_ms() > 6_000);
    }

    #[test]
    fn neutral_outcomes_free_the_trial_without_changing_state() {
        let h = TargetHealth::detached();
        h.record_rate_limited(Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(3));
        assert!(h.try_acquire());
        h.record_neutral();
        assert!(
            h.try_acquire(),
            "a cancelled trial does not block the next one"
        );
    }

    #[test]
    fn registry_keeps_records_across_lookups_and_shares_probe_state() {
        let r = HealthRegistry::default();
        let a = r.target("openai", "gpt");
        let b = r.target("openai", "gpt");
        assert!(Arc::ptr_eq(&a, &b));
        let other = r.target("openai", "mini");
        r.provider("openai").store(false, Ordering::Release);
        assert!(!a.is_healthy() && !other.is_healthy());
        r.retain(&|_, m| m == "gpt");
        assert!(Arc::ptr_eq(&a, &r.target("openai", "gpt")));
        assert!(!Arc::ptr_eq(&other, &r.target("openai", "mini")));
    }

    #[test]
    fn latency_percentiles_need_enough_recent_samples() {
        let h = TargetHealth::detached();
        for ms in 1..MIN_PERCENTILE_SAMPLES as u64 {
            h.record_success(Some(Duration::from_millis(ms)));
        }
        assert_eq!(h.latency_percentile(90), None);
        h.record_success(Some(Duration::from_millis(20)));
        // 1..=20 ms: the 90th percentile is the 18th sample.
        assert_eq!(h.latency_percentile(90), Some(Duration::from_millis(18)));
        assert_eq!(h.latency_percentile(100), Some(Duration::from_millis(20)));
        // Only the latest samples count: 64 slow ones push the fast ones out.
        for _ in 0..RECENT_LATENCIES {
            h.record_success(Some(Duration::from_millis(500)));
        }
        assert_eq!(h.latency_percentile(50), Some(Duration::from_millis(500)));
    }

    #[test]
    fn latency_is_an_exponential_average() {
        let h = TargetHealth::detached();
        h.record_success(Some(Duration::from_millis(100)));
        h.record_success(Some(Duration::from_millis(200)));
        let v = h.latency_ms().unwrap();
        assert!((v - 130.0).abs() < 1e-9, "{v}");
    }
}
