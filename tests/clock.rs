//! `[server] clock_unsynced`: the kernel's NTP state, faked behind `clock::KernelClock`, as the
//! proxy's admission, `/readyz`, `/metrics` and audit see it.

mod common;

use std::io;

use common::*;
use ssp::clock::{ClockState, KernelClock};
use ssp::service;

/// The kernel's answer, as the test says.
struct Fake(io::Result<ClockState>);

impl KernelClock for Fake {
    fn read(&self) -> io::Result<ClockState> {
        match &self.0 {
            Ok(state) => Ok(*state),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

fn kernel(synchronized: bool) -> Fake {
    Fake(Ok(ClockState {
        synchronized,
        max_error_us: if synchronized { 12_000 } else { 16_000_000 },
    }))
}

fn alarms(proxy: &Proxy) -> Vec<String> {
    std::fs::read_to_string(proxy.dir().join("audit/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "alarm")
        .map(|r| r["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn under_deny_an_unsynchronised_clock_stops_admission_until_it_is_back() {
    let proxy = Proxy::with(Options {
        server: "clock_unsynced = \"deny\"".into(),
        ..Options::default()
    });
    service::check_clock(&proxy.runtime, &kernel(true));
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 200);

    service::check_clock(&proxy.runtime, &kernel(false));
    let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_outcome(&r, 503, "transient", "CLOCK_NOT_SYNCHRONISED", Some(TRACE_ID));
    let health = service::health(&proxy.runtime);
    assert!(!health.ready && health.live, "{health:?}");
    assert!(
        health
            .reasons
            .iter()
            .any(|r| r.contains("clock not synchronised")),
        "{health:?}"
    );

    // A kernel that cannot be asked vouches for nothing either.
    service::check_clock(
        &proxy.runtime,
        &Fake(Err(io::Error::from_raw_os_error(libc::EPERM))),
    );
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 503);

    service::check_clock(&proxy.runtime, &kernel(true));
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 200);
    assert!(service::health(&proxy.runtime).ready);
    assert_eq!(proxy.seen().len(), 2, "nothing refused reached the provider");
    proxy.stop();
    let alarms = alarms(&proxy);
    assert_eq!(
        alarms.len(),
        2,
        "lost once, back once (the good start is no news): {alarms:?}"
    );
    assert!(alarms[0].contains("NOT synchronised"), "{alarms:?}");
    assert!(alarms[1].contains("is synchronised"), "{alarms:?}");
}

#[test]
fn under_warn_an_unsynchronised_clock_is_reported_and_requests_are_served() {
    let proxy = Proxy::start();
    service::check_clock(&proxy.runtime, &kernel(false));
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 200);
    assert!(service::health(&proxy.runtime).ready);
    let samples = service::clock_samples(&proxy.runtime.clock);
    let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    assert_eq!(value("ssp_clock_synchronized"), Some(0.0));
    assert_eq!(value("ssp_clock_max_error_seconds"), Some(16.0));
    proxy.stop();
    assert_eq!(alarms(&proxy).len(), 1);
}
