//! Durations as the configuration writes them: `"500ms"`, `"10s"`, `"2m"`, `"1h"`.

use std::time::Duration;

/// Parses an integer amount directly followed by one of the units `ms`, `s`, `m`, `h`.
///
/// Strict on purpose: no spaces, no sign, no fractions and no bare numbers, so that a typo in a
/// timeout is refused at load time instead of becoming a surprising value. `"0s"` is accepted
/// here; keys where zero makes no sense refuse it themselves.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected =
        || format!("expected a duration such as \"500ms\", \"10s\", \"2m\" or \"1h\", found {s:?}");
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (amount, unit) = s.split_at(digits);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(expected()),
    };
    if amount.is_empty() {
        return Err(expected());
    }
    amount
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_integer_amounts_with_a_unit() {
        let table = [
            ("500ms", Duration::from_millis(500)),
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("007s", Duration::from_secs(7)),
        ];
        for (text, expected) in table {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn parse_duration_refuses_anything_else() {
        let table = [
            "",
            "10",
            "-1s",
            "+1s",
            "1.5s",
            " 10s",
            "10s ",
            "10 s",
            "s",
            "ms",
            "10S",
            "10sec",
            "1d",
            "1h30m",
            "١٠s",
            "99999999999999999999s",
            "18446744073709551615h",
        ];
        for text in table {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn parse_duration_error_quotes_the_input() {
        let message = parse_duration("1.5s").unwrap_err();
        assert!(message.contains("\"1.5s\""), "{message}");
    }
}
