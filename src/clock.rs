//! The kernel's view of the wall clock. Certificate dates, CRL freshness, JWT expiry and every
//! audit timestamp rest on it, and N3/HSCN systems are required to keep it on NTP: the NTP
//! daemon (chrony, ntpd, timesyncd) tells the kernel whether it is disciplining the clock and
//! how far off it may be, and `adjtimex(2)` (read only) reports that.

use std::io;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

/// What the kernel says of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// An NTP daemon keeps it in step (`STA_UNSYNC` clear, state not `TIME_ERROR`).
    pub synchronized: bool,
    /// The kernel's maximum error estimate, microseconds (`timex.maxerror`).
    pub max_error_us: i64,
}

/// Where the state comes from: the kernel, or in tests a stand-in.
pub trait KernelClock: Send + Sync {
    fn read(&self) -> io::Result<ClockState>;
}

/// `adjtimex(2)` with no mode bits: it changes nothing and needs no privilege (the unit allows
/// the system call, see `packaging/ssp.service`).
pub struct Adjtimex;

impl KernelClock for Adjtimex {
    fn read(&self) -> io::Result<ClockState> {
        // SAFETY: a zeroed `timex` is valid (modes = 0: read only); the kernel fills it in.
        let mut timex: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a `timex` we own.
        let state = unsafe { libc::adjtimex(&mut timex) };
        if state < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ClockState {
            synchronized: state != libc::TIME_ERROR && timex.status & libc::STA_UNSYNC == 0,
            max_error_us: timex.maxerror as i64,
        })
    }
}

/// The last state read, shared with the workers (admission under `clock_unsynced = "deny"`),
/// `/readyz` and `/metrics`. Unknown (never read, or the read failed) counts as unsynchronised:
/// a clock nobody can vouch for is not one to decide certificate dates by.
#[derive(Debug, Default)]
pub struct ClockWatch {
    /// `UNKNOWN`, `SYNCHRONIZED` or `UNSYNCHRONIZED`.
    state: AtomicU8,
    /// -1: unknown.
    max_error_us: AtomicI64,
}

const UNKNOWN: u8 = 0;
const SYNCHRONIZED: u8 = 1;
const UNSYNCHRONIZED: u8 = 2;

impl ClockWatch {
    pub fn synchronized(&self) -> bool {
        self.state.load(Ordering::Relaxed) == SYNCHRONIZED
    }

    /// Microseconds, or `None` when unknown.
    pub fn max_error_us(&self) -> Option<i64> {
        Some(self.max_error_us.load(Ordering::Relaxed)).filter(|&e| e >= 0)
    }

    /// Takes a reading; returns whether it is news for the audit: the clock found or become
    /// unsynchronised, or synchronised again after that (not the first good reading at start).
    pub fn record(&self, reading: &io::Result<ClockState>) -> bool {
        let (state, max_error) = match reading {
            Ok(s) if s.synchronized => (SYNCHRONIZED, s.max_error_us),
            Ok(s) => (UNSYNCHRONIZED, s.max_error_us),
            Err(_) => (UNSYNCHRONIZED, -1),
        };
        self.max_error_us.store(max_error, Ordering::Relaxed);
        let before = self.state.swap(state, Ordering::Relaxed);
        before != state && !(before == UNKNOWN && state == SYNCHRONIZED)
    }
}

/// What to say when the state is first known or changes.
pub fn describe(reading: &io::Result<ClockState>) -> String {
    match reading {
        Ok(s) if s.synchronized => format!(
            "the kernel says the clock is synchronised (maximum error {} ms)",
            s.max_error_us / 1000
        ),
        Ok(s) => format!(
            "the kernel says the clock is NOT synchronised (no NTP daemon is keeping it; maximum error {} ms): \
             certificate dates, CRL freshness and audit timestamps depend on it",
            s.max_error_us / 1000
        ),
        Err(e) => format!(
            "cannot read the clock's state from the kernel (adjtimex: {e}): treated as not synchronised"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_is_unsynchronised_and_changes_are_reported_once() {
        let watch = ClockWatch::default();
        assert!(!watch.synchronized());
        let good = Ok(ClockState {
            synchronized: true,
            max_error_us: 16_000,
        });
        assert!(!watch.record(&good), "a good clock at start is no news");
        assert!(!watch.record(&good));
        assert!(watch.synchronized());
        assert_eq!(watch.max_error_us(), Some(16_000));
        let failed: io::Result<ClockState> = Err(io::Error::from_raw_os_error(libc::EPERM));
        assert!(watch.record(&failed), "lost");
        assert!(!watch.record(&failed));
        assert!(!watch.synchronized());
        assert_eq!(watch.max_error_us(), None);
        assert!(watch.record(&good), "back");
        let fresh = ClockWatch::default();
        let bad = Ok(ClockState {
            synchronized: false,
            max_error_us: 16_000_000,
        });
        assert!(fresh.record(&bad), "an unsynchronised clock at start is news");
    }

    #[test]
    fn this_machines_kernel_answers() {
        // Whatever the box's NTP state, the read itself works outside a seccomp filter.
        let state = Adjtimex.read().expect("adjtimex");
        assert!(state.max_error_us >= 0, "{state:?}");
    }
}
