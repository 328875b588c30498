//! The pure half of a refresh: whether a candidate CRL may replace the one held, and when to
//! try next. Time is passed in (seconds since the epoch for CRL dates); nothing here reads a
//! clock or touches the network.

use std::cmp::Ordering;
use std::time::Duration;

use super::Failure;
use crate::config::CrlRefresh;
use crate::tls::CrlSummary;
use crate::x509::compare_unsigned;

/// What to do with a candidate whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Newer than the one held: put it in force.
    Newer,
    /// The same issue (thisUpdate and CRL number equal): nothing to do.
    Unchanged,
    Refused(Failure),
}

/// A candidate replaces `held` only if it comes from the same issuer, is not already past its
/// nextUpdate at `now`, and neither its thisUpdate nor (when both carry one) its CRL number
/// goes backwards. An attacker who can only replay old, validly signed CRLs gains nothing.
pub fn judge(held: &CrlSummary, candidate: &CrlSummary, now: i64) -> Judgement {
    if candidate.issuer_der != held.issuer_der {
        return Judgement::Refused(Failure::WrongIssuer(candidate.issuer.clone()));
    }
    if let Some(next) = candidate.next_update
        && next < now
    {
        return Judgement::Refused(Failure::Expired(next));
    }
    let by_date = candidate.this_update.cmp(&held.this_update);
    let by_number = match (&candidate.number, &held.number) {
        (Some(c), Some(h)) => compare_unsigned(c, h),
        _ => Ordering::Equal,
    };
    match (by_date, by_number) {
        (Ordering::Less, _) | (_, Ordering::Less) => Judgement::Refused(Failure::Older),
        (Ordering::Equal, Ordering::Equal) => Judgement::Unchanged,
        _ => Judgement::Newer,
    }
}

/// How long to wait before the next fetch of a CRL whose nextUpdate is `next_update`, after
/// an attempt at `now` that `failed` or not. `jitter` is a number in [0, 1) chosen by the
/// caller; it spreads the fetches of many gateways over up to `crl_refresh_jitter` (never more
/// than the wait itself, so a short retry stays short).
///
/// Normally every `interval`; every `retry` after a failure or once less than `margin` is left
/// before nextUpdate, and never sleeping past the moment the margin begins.
pub fn next_attempt(
    s: &CrlRefresh,
    next_update: Option<i64>,
    now: i64,
    failed: bool,
    jitter: f64,
) -> Duration {
    let margin_starts_in =
        next_update.map(|next| next.saturating_sub(now).saturating_sub(secs_i64(s.margin)));
    let hurried = failed || margin_starts_in.is_some_and(|left| left <= 0);
    let mut wait = if hurried { s.retry } else { s.interval };
    if let Some(left) = margin_starts_in.filter(|&left| left > 0) {
        wait = wait.min(Duration::from_secs(left as u64));
    }
    let spread = s.jitter.min(wait).mul_f64(jitter.clamp(0.0, 1.0));
    wait.max(Duration::from_millis(1)) + spread
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crl(issuer: &[u8], this_update: i64, next_update: Option<i64>, number: Option<&[u8]>) -> CrlSummary {
        CrlSummary {
            path: "a.crl".into(),
            url: None,
            issuer: String::from_utf8_lossy(issuer).into_owned(),
            this_update,
            next_update,
            number: number.map(<[u8]>::to_vec),
            revoked: 0,
            der: Vec::new().into(),
            issuer_der: issuer.to_vec(),
        }
    }

    const NOW: i64 = 1_000_000;

    #[test]
    fn candidates_are_judged_against_the_crl_held() {
        let held = crl(b"L1C", 900_000, Some(1_100_000), Some(&[5]));
        let table = [
            (
                "later date, later number",
                crl(b"L1C", 950_000, Some(1_200_000), Some(&[6])),
                Judgement::Newer,
            ),
            (
                "later date, no number",
                crl(b"L1C", 950_000, Some(1_200_000), None),
                Judgement::Newer,
            ),
            (
                "later date, same number",
                crl(b"L1C", 950_000, Some(1_200_000), Some(&[5])),
                Judgement::Newer,
            ),
            (
                "same date, later number",
                crl(b"L1C", 900_000, Some(1_200_000), Some(&[0, 6])),
                Judgement::Newer,
            ),
            (
                "same issue",
                crl(b"L1C", 900_000, Some(1_100_000), Some(&[0, 5])),
                Judgement::Unchanged,
            ),
            (
                "older date",
                crl(b"L1C", 899_999, Some(1_200_000), Some(&[6])),
                Judgement::Refused(Failure::Older),
            ),
            (
                "number backwards",
                crl(b"L1C", 950_000, Some(1_200_000), Some(&[4])),
                Judgement::Refused(Failure::Older),
            ),
            (
                "stale on arrival",
                crl(b"L1C", 950_000, Some(NOW - 1), Some(&[6])),
                Judgement::Refused(Failure::Expired(NOW - 1)),
            ),
            (
                "another issuer",
                crl(b"ROOT", 950_000, Some(1_200_000), Some(&[6])),
                Judgement::Refused(Failure::WrongIssuer("ROOT".into())),
            ),
            (
                "no nextUpdate",
                crl(b"L1C", 950_000, None, Some(&[6])),
                Judgement::Newer,
            ),
        ];
        for (what, candidate, expected) in table {
            assert_eq!(judge(&held, &candidate, NOW), expected, "{what}");
        }
    }

    fn settings() -> CrlRefresh {
        CrlRefresh {
            interval: Duration::from_secs(3600),
            jitter: Duration::from_secs(600),
            margin: Duration::from_secs(4 * 3600),
            retry: Duration::from_secs(300),
            proxy: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn next_attempt_follows_interval_retry_margin_and_jitter() {
        let s = settings();
        let day = 86_400;
        let h = |n: u64| Duration::from_secs(n * 3600);
        let m = |n: u64| Duration::from_secs(n * 60);
        let table = [
            ("fresh CRL, success", Some(NOW + day), false, 0.0, h(1)),
            (
                "fresh CRL, full jitter",
                Some(NOW + day),
                false,
                0.999_999_9,
                h(1) + m(10) - Duration::from_micros(60),
            ),
            ("fresh CRL, half jitter", Some(NOW + day), false, 0.5, h(1) + m(5)),
            ("fresh CRL, failure", Some(NOW + day), true, 0.0, m(5)),
            (
                "failure, jitter capped by the wait",
                Some(NOW + day),
                true,
                0.5,
                m(5) + Duration::from_secs(150),
            ),
            ("inside the margin", Some(NOW + 3 * 3600), false, 0.0, m(5)),
            ("stale", Some(NOW - 10), false, 0.0, m(5)),
            (
                "margin begins in 10 minutes",
                Some(NOW + 4 * 3600 + 600),
                false,
                0.0,
                m(10),
            ),
            ("no nextUpdate", None, false, 0.0, h(1)),
            ("no nextUpdate, failure", None, true, 0.0, m(5)),
        ];
        for (what, next, failed, jitter, expected) in table {
            let wait = next_attempt(&s, next, NOW, failed, jitter);
            let diff = wait.abs_diff(expected);
            assert!(
                diff < Duration::from_millis(1),
                "{what}: {wait:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn next_attempt_handles_short_test_intervals_and_extremes() {
        let mut s = settings();
        s.interval = Duration::from_millis(200);
        s.retry = Duration::from_millis(100);
        s.jitter = Duration::ZERO;
        assert_eq!(
            next_attempt(&s, Some(NOW + 86_400), NOW, false, 0.7),
            Duration::from_millis(200)
        );
        assert_eq!(
            next_attempt(&s, Some(NOW + 86_400), NOW, true, 0.7),
            Duration::from_millis(100)
        );
        // Clock or CRL dates at the ends of the range do not overflow.
        assert_eq!(
            next_attempt(&s, Some(i64::MIN), i64::MAX, false, 0.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            next_attempt(&s, Some(i64::MAX), i64::MIN, false, 0.0),
            Duration::from_millis(200)
        );
    }
}
