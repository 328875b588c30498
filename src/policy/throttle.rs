//! Rows 14 and 15: per-consumer rate limits (GCRA, exact across worker threads, O(1), no
//! allocation per request) and per-provider concurrency caps. The arithmetic is a pure
//! function of the stored state and the time passed in; the state is a slot of atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::config::{Consumer, Provider, Throttle};

const NANOS_PER_SEC: f64 = 1e9;

/// A consumer's rate: `rate` requests a second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Nanoseconds each request "costs" (1 / rate).
    emission: u64,
    /// How far ahead of now the theoretical arrival time may run: burst × emission.
    capacity: u64,
    pub burst: u32,
}

impl Limit {
    pub fn new(rate: f64, burst: u32) -> Limit {
        let emission = (NANOS_PER_SEC / rate).round().max(1.0) as u64;
        let burst = burst.max(1);
        Limit {
            emission,
            capacity: emission.saturating_mul(u64::from(burst)),
            burst,
        }
    }
}

/// What the limiter decided for one request, with the figures for `X-Rate-Limit-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The theoretical arrival time to store (unchanged when refused).
    pub tat: u64,
    /// Requests that could be made right now after this one.
    pub remaining: u32,
    /// Nanoseconds until a request would be allowed (0 when allowed).
    pub retry_after: u64,
    /// Nanoseconds until the full burst is available again.
    pub reset: u64,
}

/// GCRA: a request at `now` is allowed when, after adding its cost, the theoretical arrival
/// time is at most `capacity` ahead of `now`. Times are nanoseconds on a monotonic clock; a
/// clock that seems to go backwards only makes the consumer wait, it never underflows.
pub fn gcra(limit: &Limit, tat: u64, now: u64) -> Verdict {
    let next = tat.max(now).saturating_add(limit.emission);
    let ahead = next - now;
    if ahead <= limit.capacity {
        let remaining = ((limit.capacity - ahead) / limit.emission) as u32;
        Verdict {
            allowed: true,
            tat: next,
            remaining,
            retry_after: 0,
            reset: ahead,
        }
    } else {
        let current = tat.max(now) - now;
        Verdict {
            allowed: false,
            tat,
            remaining: 0,
            retry_after: ahead - limit.capacity,
            reset: current,
        }
    }
}

/// Each consumer's limit, in configuration order: its own `rate`/`burst` where it has them,
/// else `[throttle]`'s.
pub fn consumer_limits(consumers: &[Consumer], defaults: &Throttle) -> Vec<Limit> {
    consumers
        .iter()
        .map(|c| Limit::new(c.rate.unwrap_or(defaults.rate), c.burst.unwrap_or(defaults.burst)))
        .collect()
}

/// Each provider's cap on requests in flight, in configuration order.
pub fn provider_caps(providers: &[Provider], defaults: &Throttle) -> Vec<u32> {
    providers
        .iter()
        .map(|p| p.max_in_flight.unwrap_or(defaults.max_in_flight))
        .collect()
}

/// The rate state of every consumer, shared by all workers.
#[derive(Debug)]
pub struct RateLimits {
    limits: Vec<Limit>,
    tats: Vec<AtomicU64>,
}

impl RateLimits {
    /// One limit per consumer, in configuration order.
    pub fn new(limits: Vec<Limit>) -> RateLimits {
        let tats = limits.iter().map(|_| AtomicU64::new(0)).collect();
        RateLimits { limits, tats }
    }

    pub fn limit(&self, consumer: usize) -> Option<&Limit> {
        self.limits.get(consumer)
    }

    /// Takes one request's worth from `consumer` at `now`, exactly even when several workers
    /// race (compare-and-swap on the stored arrival time).
    pub fn acquire(&self, consumer: usize, now: u64) -> Option<Verdict> {
        let (limit, slot) = (self.limits.get(consumer)?, self.tats.get(consumer)?);
        let mut tat = slot.load(Ordering::Acquire);
        loop {
            let verdict = gcra(limit, tat, now);
            if !verdict.allowed {
                return Some(verdict);
            }
            match slot.compare_exchange_weak(tat, verdict.tat, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(verdict),
                Err(current) => tat = current,
            }
        }
    }
}

/// Requests in flight to each provider, across all workers, and each consumer's share of them.
#[derive(Debug)]
pub struct InFlight {
    caps: Vec<u32>,
    counts: Vec<AtomicU32>,
    /// Places one consumer may hold at each provider (`[throttle] consumer_share` of its cap,
    /// rounded up), so that one consumer's slow requests cannot take them all.
    shares: Vec<u32>,
    /// Places held, by consumer, then provider. A consumer's row is made at its first request
    /// that reaches row 15: with `[sds]` tens of thousands of consumers and providers are
    /// known, but only those with an agreement ever get here, and a full consumer × provider
    /// table was 800 MB for 20,000 × 10,000 (issue 18).
    held: Box<[OnceLock<Box<[AtomicU32]>>]>,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The provider has `max_in_flight` requests in flight (row 15).
    Provider,
    /// This consumer holds its share of them already (row 14: it is sending too much at once).
    ConsumerShare { share: u32 },
}

impl InFlight {
    /// `caps` per provider; `share` in (0, 1] of each for one consumer, of `consumers`.
    pub fn new(caps: Vec<u32>, share: f64, consumers: usize) -> Arc<InFlight> {
        let counts = caps.iter().map(|_| AtomicU32::new(0)).collect();
        let shares = caps
            .iter()
            .map(|&cap| ((f64::from(cap) * share).ceil() as u32).clamp(1, cap.max(1)))
            .collect();
        let held = (0..consumers).map(|_| OnceLock::new()).collect();
        Arc::new(InFlight {
            caps,
            counts,
            shares,
            held,
        })
    }

    /// A place among `provider`'s in-flight requests for `consumer`, released when the permit
    /// is dropped (on every path: success, error, timeout, consumer gone). `None` for indexes
    /// it does not know.
    pub fn try_acquire(self: &Arc<Self>, consumer: usize, provider: usize) -> Option<Result<Permit, Busy>> {
        let (cap, count) = (*self.caps.get(provider)?, self.counts.get(provider)?);
        let row = self.held.get(consumer)?;
        let row = row.get_or_init(|| self.caps.iter().map(|_| AtomicU32::new(0)).collect());
        let (share, held) = (*self.shares.get(provider)?, row.get(provider)?);
        let take = |counter: &AtomicU32, limit: u32| {
            counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok()
        };
        if !take(held, share) {
            return Some(Err(Busy::ConsumerShare { share }));
        }
        if !take(count, cap) {
            held.fetch_sub(1, Ordering::AcqRel);
            return Some(Err(Busy::Provider));
        }
        Some(Ok(Permit {
            in_flight: self.clone(),
            consumer,
            provider,
        }))
    }

    pub fn current(&self, provider: usize) -> u32 {
        self.counts.get(provider).map_or(0, |c| c.load(Ordering::Acquire))
    }
}

#[derive(Debug)]
pub struct Permit {
    in_flight: Arc<InFlight>,
    consumer: usize,
    provider: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(count) = self.in_flight.counts.get(self.provider) {
            count.fetch_sub(1, Ordering::AcqRel);
        }
        let row = self.in_flight.held.get(self.consumer).and_then(OnceLock::get);
        if let Some(held) = row.and_then(|row| row.get(self.provider)) {
            held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// When a request body still arriving must next have moved: `gap` after its last bytes (`now`),
/// and never later than `gap` plus the time its `received` bytes earn at `min_rate` bytes a
/// second from when the request `began` (Apache's `mod_reqtimeout` MinRate). A body trickled a
/// byte at a time cannot hold its provider's in-flight place for longer than about `gap`.
/// `min_rate` 0: only the gap counts.
pub fn body_deadline(
    began: std::time::Instant,
    received: u64,
    now: std::time::Instant,
    gap: std::time::Duration,
    min_rate: u64,
) -> std::time::Instant {
    let by_gap = now + gap;
    if min_rate == 0 {
        return by_gap;
    }
    let earned_nanos = u128::from(received) * 1_000_000_000 / u128::from(min_rate);
    let earned = std::time::Duration::from_nanos(u64::try_from(earned_nanos).unwrap_or(u64::MAX));
    by_gap.min(began + gap + earned)
}

/// Failures per key, each costing a token from a small bucket (GCRA): a key whose bucket is
/// empty is struck out until it refills. Memory is bounded under a flood of many keys.
#[derive(Debug)]
pub struct Strikes<K> {
    /// `None`: no limit (the key's setting is 0).
    limit: Option<Limit>,
    tats: std::sync::Mutex<std::collections::HashMap<K, u64>>,
}

/// Refused handshakes per consumer address (`[limits] refused_handshakes`): an address past
/// it is served resumed sessions only (`tls::resumption`).
pub type HandshakeFailures = Strikes<std::net::IpAddr>;

/// Refused requests per consumer certificate, by fingerprint (`[limits] refusals`): past it,
/// each refusal closes its connection, and the audit counts the refusals in one record a
/// second instead of one record each (`proxy::refusals`).
pub type RefusalStrikes = Strikes<Arc<str>>;

/// Keys remembered before stale ones are forgotten, bounding memory under a flood from
/// many addresses or certificates.
const MAX_REMEMBERED: usize = 65_536;

impl<K: std::hash::Hash + Eq> Strikes<K> {
    pub fn new(limit: Option<Limit>) -> Strikes<K> {
        Strikes {
            limit,
            tats: Default::default(),
        }
    }

    /// Counts one failure of `key`; returns whether `key` is now past its allowance (the
    /// failure that empties the bucket is still within it).
    pub fn record(&self, key: K, now: u64) -> bool {
        let Some(limit) = self.limit else { return false };
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() >= MAX_REMEMBERED {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.entry(key).or_insert(0);
        // Struck out or not, the failure is counted: the arrival time keeps running ahead.
        *tat = (*tat).max(now).saturating_add(limit.emission);
        tat.saturating_sub(now) > limit.capacity
    }

    /// Whether `key` has used up its allowance.
    pub fn is_blocked(&self, key: &K, now: u64) -> bool {
        let Some(limit) = self.limit else { return false };
        let tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        tats.get(key)
            .is_some_and(|&tat| tat.saturating_sub(now) > limit.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_wait() {
        let limit = Limit::new(2.0, 3);
        let mut tat = 0;
        let now = 10 * SEC;
        for expected_remaining in [2, 1, 0] {
            let v = gcra(&limit, tat, now);
            assert!(v.allowed);
            assert_eq!(v.remaining, expected_remaining);
            tat = v.tat;
        }
        let refused = gcra(&limit, tat, now);
        assert!(!refused.allowed);
        assert_eq!(refused.tat, tat, "a refusal costs nothing");
        assert_eq!(refused.retry_after, SEC / 2);
        assert_eq!(refused.reset, 3 * SEC / 2);
    }

    #[test]
    fn capacity_refills_at_the_rate() {
        let limit = Limit::new(2.0, 3);
        let mut tat = 0;
        let start = 100 * SEC;
        for _ in 0..3 {
            tat = gcra(&limit, tat, start).tat;
        }
        assert!(!gcra(&limit, tat, start + SEC / 2 - 1).allowed);
        let v = gcra(&limit, tat, start + SEC / 2);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
        // After a long idle the whole burst is back, never more.
        let idle = gcra(&limit, tat, start + 3600 * SEC);
        assert_eq!(idle.remaining, 2);
    }

    #[test]
    fn clock_going_backwards_never_grants_extra() {
        let limit = Limit::new(1.0, 1);
        let now = 50 * SEC;
        let first = gcra(&limit, 0, now);
        assert!(first.allowed);
        let earlier = gcra(&limit, first.tat, now - 10 * SEC);
        assert!(!earlier.allowed);
        assert_eq!(
            earlier.retry_after,
            11 * SEC,
            "wait until the stored arrival time"
        );
    }

    #[test]
    fn fractional_rates_work() {
        let limit = Limit::new(0.5, 1);
        let v = gcra(&limit, 0, 10 * SEC);
        assert!(v.allowed);
        assert_eq!(gcra(&limit, v.tat, 10 * SEC).retry_after, 2 * SEC);
    }

    #[test]
    fn shared_limits_are_exact_across_threads() {
        let limits = Arc::new(RateLimits::new(vec![Limit::new(1.0, 1000)]));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let limits = limits.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| limits.acquire(0, 5 * SEC).is_some_and(|v| v.allowed))
                        .count()
                })
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(allowed, 1000, "exactly the burst, whatever the interleaving");
    }

    #[test]
    fn an_address_with_too_many_refused_handshakes_is_blocked_until_it_refills() {
        let failures = HandshakeFailures::new(Some(Limit::new(1.0, 3)));
        let (bad, good): (std::net::IpAddr, std::net::IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let now = 10 * SEC;
        for _ in 0..3 {
            assert!(!failures.is_blocked(&bad, now));
            assert!(!failures.record(bad, now), "within the burst");
        }
        assert!(!failures.is_blocked(&bad, now), "the burst itself is tolerated");
        assert!(failures.record(bad, now), "the one past the burst is struck out");
        assert!(failures.is_blocked(&bad, now));
        assert!(
            !failures.is_blocked(&good, now),
            "other addresses are not affected"
        );
        assert!(
            !failures.is_blocked(&bad, now + SEC),
            "blocked only until the bucket refills"
        );
    }

    #[test]
    fn per_consumer_and_per_provider_overrides_win_over_the_defaults() {
        let defaults = Throttle {
            rate: 20.0,
            burst: 40,
            max_in_flight: 64,
            consumer_share: 0.5,
        };
        let consumer = |rate, burst| Consumer {
            asid: "1".into(),
            fqdn: "a".into(),
            interactions: vec![],
            providers: vec![],
            rate,
            burst,
            line: 1,
        };
        let limits = consumer_limits(
            &[
                consumer(None, None),
                consumer(Some(50.0), Some(100)),
                consumer(Some(1.0), None),
            ],
            &defaults,
        );
        assert_eq!(
            limits,
            vec![Limit::new(20.0, 40), Limit::new(50.0, 100), Limit::new(1.0, 40)]
        );
        let provider = |cap| Provider {
            asid: "9".into(),
            endpoints: vec![],
            interactions: vec![],
            connect: Vec::new(),
            max_in_flight: cap,
            line: 1,
        };
        assert_eq!(
            provider_caps(&[provider(None), provider(Some(128))], &defaults),
            vec![64, 128]
        );
    }

    #[test]
    fn a_body_must_keep_its_average_rate_as_well_as_its_gap() {
        use std::time::{Duration, Instant};
        let (t0, gap) = (Instant::now(), Duration::from_secs(10));
        // Fast enough: the gap decides.
        let d = body_deadline(t0, 100_000, t0 + Duration::from_secs(5), gap, 1024);
        assert_eq!(d, t0 + Duration::from_secs(15));
        // A byte every 2 s: the rate decides, about `gap` after the start whatever it sends.
        let d = body_deadline(t0, 4, t0 + Duration::from_secs(8), gap, 1024);
        assert!(d < t0 + gap + Duration::from_millis(4), "{:?}", d - t0);
        // Off: the gap alone.
        let d = body_deadline(t0, 4, t0 + Duration::from_secs(8), gap, 0);
        assert_eq!(d, t0 + Duration::from_secs(18));
        // No overflow with an absurd count.
        let _ = body_deadline(t0, u64::MAX, t0, gap, 1);
    }

    #[test]
    fn in_flight_permits_are_capped_and_released_on_drop() {
        let in_flight = InFlight::new(vec![2], 1.0, 1);
        let a = in_flight.try_acquire(0, 0).unwrap().unwrap();
        let _b = in_flight.try_acquire(0, 0).unwrap().unwrap();
        assert_eq!(
            in_flight.try_acquire(0, 0).unwrap().unwrap_err(),
            Busy::ConsumerShare { share: 2 }
        );
        drop(a);
        assert_eq!(in_flight.current(0), 1);
        assert!(in_flight.try_acquire(0, 0).unwrap().is_ok());
        assert!(in_flight.try_acquire(0, 7).is_none(), "unknown provider");
        assert!(in_flight.try_acquire(1, 0).is_none(), "unknown consumer");
    }

    #[test]
    fn an_sds_sized_table_costs_a_row_only_for_consumers_that_send() {
        // 20,000 consumers and 10,000 providers, as an SDS export gives (issue 18): a full
        // table would be 800 MB; rows are made for the consumers that reach row 15.
        let in_flight = InFlight::new(vec![64; 10_000], 0.5, 20_000);
        assert_eq!(in_flight.held.iter().filter(|row| row.get().is_some()).count(), 0);
        let permit = in_flight.try_acquire(19_999, 9_999).unwrap().unwrap();
        assert_eq!(in_flight.held.iter().filter(|row| row.get().is_some()).count(), 1);
        assert_eq!(in_flight.current(9_999), 1);
        drop(permit);
        assert_eq!(in_flight.current(9_999), 0);
        let row = in_flight.held[19_999].get().unwrap();
        assert_eq!(
            row[9_999].load(Ordering::Acquire),
            0,
            "the consumer's place is given back"
        );
    }

    #[test]
    fn one_consumer_holds_at_most_its_share_and_leaves_the_rest_to_others() {
        // Four places at provider 0, half of them (rounded up) for any one consumer.
        let in_flight = InFlight::new(vec![4, 3], 0.5, 3);
        let greedy: Vec<Permit> = (0..2)
            .map(|_| in_flight.try_acquire(0, 0).unwrap().unwrap())
            .collect();
        assert_eq!(
            in_flight.try_acquire(0, 0).unwrap().unwrap_err(),
            Busy::ConsumerShare { share: 2 }
        );
        let other = in_flight.try_acquire(1, 0).unwrap().unwrap();
        let third = in_flight.try_acquire(2, 0).unwrap().unwrap();
        assert_eq!(in_flight.current(0), 4);
        assert_eq!(
            in_flight.try_acquire(1, 0).unwrap().unwrap_err(),
            Busy::Provider,
            "within its share, but the provider is full"
        );
        assert_eq!(in_flight.current(0), 4, "a refused place is given back");
        drop((greedy, other, third));
        assert_eq!(in_flight.current(0), 0);
        // 3 × 0.5 rounds up to 2; a share never rounds down to nothing.
        let tiny = InFlight::new(vec![1], 0.01, 1);
        assert!(tiny.try_acquire(0, 0).unwrap().is_ok());
    }
}
