//! SPEC section 4 rows 14–16 for a request rows 5–13 admitted: its sender's rate and its
//! sender's share of the receiver's places (14), the receiver's places in flight (15), and
//! whether anything may be admitted at all (16). The counters are shared state and live in
//! `throttle`; what their answers mean for this request is decided here, from values.

use std::fmt::Display;
use std::sync::Arc;

use super::Admission;
use super::refusal::Refusal;
use super::throttle::{Busy, InFlight, Permit, RateLimits, Verdict};
use crate::config::ClockUnsynced;

/// `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` for an admitted request's answer (row 14).
pub type RateFields = [(&'static str, u64); 3];

/// Row 16: while the audit cannot be written, nothing is admitted; nor, under
/// `clock_unsynced = "deny"`, while the kernel says the clock is not synchronised.
pub fn ready(audit_healthy: bool, clock_policy: ClockUnsynced, clock_synced: bool) -> Result<(), Refusal> {
    if !audit_healthy {
        return Err(Refusal::AuditUnavailable);
    }
    if clock_policy == ClockUnsynced::Deny && !clock_synced {
        return Err(Refusal::ClockNotSynchronised);
    }
    Ok(())
}

/// Row 14's rate: what the sender's limiter said (`None`: a consumer it does not know, which
/// cannot happen and is refused rather than let through unlimited).
pub fn rate(from: &dyn Display, burst: u32, verdict: Option<Verdict>) -> Result<Verdict, Refusal> {
    let throttled = |retry_after, reset| Refusal::Throttled {
        from: from.to_string(),
        limit: burst,
        retry_after,
        reset,
    };
    match verdict {
        None => Err(throttled(1, 1)),
        Some(v) if !v.allowed => Err(throttled(whole_seconds(v.retry_after), whole_seconds(v.reset))),
        Some(v) => Ok(v),
    }
}

/// Rows 14 and 15's places: what the in-flight counters said. A sender past its share of the
/// receiver is throttled (it is sending too much at once); a receiver at its cap is busy.
pub fn place(
    from: &dyn Display,
    to: &dyn Display,
    rate: &Verdict,
    burst: u32,
    answer: Option<Result<Permit, Busy>>,
) -> Result<Permit, Refusal> {
    match answer {
        Some(Ok(permit)) => Ok(permit),
        Some(Err(Busy::ConsumerShare { .. })) => Err(Refusal::Throttled {
            from: from.to_string(),
            limit: burst,
            retry_after: 1,
            reset: whole_seconds(rate.reset),
        }),
        // `None`: indexes the counters do not know; refused rather than uncapped.
        Some(Err(Busy::Provider)) | None => Err(Refusal::ProviderBusy { to: to.to_string() }),
    }
}

/// The rate fields of an admitted request's answer.
pub fn rate_fields(burst: u32, rate: &Verdict) -> RateFields {
    [
        ("X-Rate-Limit-Limit", u64::from(burst)),
        ("X-Rate-Limit-Remaining", u64::from(rate.remaining)),
        ("X-Rate-Limit-Reset", whole_seconds(rate.reset)),
    ]
}

/// Rows 14 and 15 against the shared counters at `nanos`: the permit (released when the
/// exchange ends, however it ends) and the answer's rate fields.
pub fn acquire(
    rates: &RateLimits,
    in_flight: &Arc<InFlight>,
    admission: &Admission,
    nanos: u64,
) -> Result<(Permit, RateFields), Refusal> {
    let route = admission.route;
    let (from, to) = (&admission.ssp.from, &admission.ssp.to);
    let burst = rates.limit(route.consumer).map_or(0, |l| l.burst);
    let verdict = rate(from, burst, rates.acquire(route.consumer, nanos))?;
    let permit = place(
        from,
        to,
        &verdict,
        burst,
        in_flight.try_acquire(route.consumer, route.provider),
    )?;
    Ok((permit, rate_fields(burst, &verdict)))
}

/// Nanoseconds as whole seconds, rounded up so a client that waits that long is not early.
fn whole_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(allowed: bool, retry_after: u64, reset: u64) -> Verdict {
        Verdict {
            allowed,
            tat: 0,
            remaining: 3,
            retry_after,
            reset,
        }
    }

    #[test]
    fn row_16_refuses_without_an_audit_and_without_a_clock_only_when_told_to() {
        assert!(matches!(
            ready(false, ClockUnsynced::Warn, true),
            Err(Refusal::AuditUnavailable)
        ));
        assert!(matches!(
            ready(true, ClockUnsynced::Deny, false),
            Err(Refusal::ClockNotSynchronised)
        ));
        assert!(ready(true, ClockUnsynced::Warn, false).is_ok());
        assert!(ready(true, ClockUnsynced::Deny, true).is_ok());
    }

    #[test]
    fn a_refused_rate_says_when_to_come_back_in_whole_seconds_rounded_up() {
        let Err(Refusal::Throttled {
            from,
            limit,
            retry_after,
            reset,
        }) = rate(
            &"200000000001",
            5,
            Some(verdict(false, 1_500_000_000, 2_000_000_001)),
        )
        else {
            panic!("not throttled");
        };
        assert_eq!(
            (from.as_str(), limit, retry_after, reset),
            ("200000000001", 5, 2, 3)
        );
        assert!(rate(&"x", 5, Some(verdict(true, 0, 10))).is_ok());
        assert!(rate(&"x", 5, None).is_err(), "an unknown consumer is refused");
    }

    #[test]
    fn past_its_share_a_sender_is_throttled_and_a_full_receiver_is_busy() {
        let v = verdict(true, 0, 1_000_000_000);
        let share = place(&"a", &"b", &v, 5, Some(Err(Busy::ConsumerShare { share: 2 })));
        assert!(matches!(share, Err(Refusal::Throttled { reset: 1, .. })));
        let busy = place(&"a", &"b", &v, 5, Some(Err(Busy::Provider)));
        assert!(matches!(busy, Err(Refusal::ProviderBusy { to }) if to == "b"));
        assert!(matches!(
            place(&"a", &"b", &v, 5, None),
            Err(Refusal::ProviderBusy { .. })
        ));
    }

    #[test]
    fn the_rate_fields_carry_the_burst_what_is_left_and_the_reset() {
        let fields = rate_fields(5, &verdict(true, 0, 2_500_000_000));
        assert_eq!(
            fields,
            [
                ("X-Rate-Limit-Limit", 5),
                ("X-Rate-Limit-Remaining", 3),
                ("X-Rate-Limit-Reset", 3)
            ]
        );
    }
}
