//! `ssp run` as a long-running service: signals (SIGHUP reload, SIGTERM/SIGINT drain, SIGUSR1
//! reopen), systemd notifications and the watchdog. The proxy itself knows none of this; it
//! only reads `Runtime`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::admin::{self, Health};
use crate::audit::{ConfigFacts, CrlFacts, Event};
use crate::clock::{self, KernelClock};
use crate::config::{ClockUnsynced, CrlExpired};
use crate::crl::{self, unix_now};
use crate::metrics::{Kind, Sample};
use crate::proxy::Runtime;
use crate::startup;
use crate::systemd;
use crate::tls::CrlSummary;

/// Loads a configuration as `ssp check` does and puts it in force as one swap, or refuses it
/// whole. Either way the outcome is in `/metrics`, and in the audit: a `config` record for
/// the new configuration, an `alarm` for a refusal.
pub fn reload(runtime: &Runtime, path: &Path) -> Result<(), String> {
    let refuse = |why: String| {
        runtime.metrics.config_refused(unix_now());
        runtime.audit.record(Event::Alarm {
            message: format!("reload refused, the previous configuration keeps serving: {why}"),
        });
        Err(why)
    };
    let shared = match startup::load(path) {
        Ok(shared) => shared,
        Err(problems) => return refuse(problems.0.join("; ")),
    };
    let current = runtime.current();
    // An SDS export that drops too many of the ASIDs in force is refused (issue 18).
    if let (Some(known), Some(new)) = (&current.config.sds, &shared.config.sds)
        && let Err(why) = crate::sds::check_shrink(&known.asids, &new.asids, new.max_shrink)
    {
        return refuse(format!("{}: {why}", new.ldif.display()));
    }
    if shared.config.server.listen != current.config.server.listen
        || shared.config.server.workers != current.config.server.workers
    {
        log::warn!("reload: `listen` and `workers` changes take effect at the next restart");
    }
    runtime.replace(shared);
    config_in_force(runtime, "reload");
    Ok(())
}

/// Records the configuration in force (`cause`: "start" or "reload") in the audit and in
/// `/metrics`: today's allowlist, certificates and CRLs are in the audit trail.
pub fn config_in_force(runtime: &Runtime, cause: &'static str) {
    let shared = runtime.current();
    let cfg = &shared.config;
    runtime.metrics.config_loaded(unix_now(), cfg.sha256);
    let text = |path: &Path| path.display().to_string();
    // The SDS export is one of the files the allowlist comes from.
    let sds = cfg.sds.iter().map(|sds| (text(&sds.ldif), sds.sha256));
    runtime.audit.record(Event::Config(Box::new(ConfigFacts {
        cause,
        path: text(&cfg.path),
        sha256: cfg.sha256,
        files: shared
            .tls_material
            .files
            .iter()
            .map(|(path, sha256)| (text(path), *sha256))
            .chain(sds)
            .collect(),
        consumers: cfg.consumers.len(),
        providers: cfg.providers.len(),
        crls: shared
            .crls
            .iter()
            .map(|crl| CrlFacts {
                path: text(&crl.path),
                issuer: crl.issuer.clone(),
                this_update: crl.this_update,
                next_update: crl.next_update,
            })
            .collect(),
    })));
}

/// Handles signals on their own thread until the process ends. `reopen` runs on SIGUSR1.
pub fn handle_signals(
    runtime: Arc<Runtime>,
    config_path: PathBuf,
    reopen: Box<dyn Fn() + Send>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])?;
    // Reloads read files, which can be slow (a network file system) or, despite every check,
    // stuck: they run on a thread of their own, so that a stop signal is always handled.
    let (reloads, reload_asked) = std::sync::mpsc::channel::<()>();
    let reloading = runtime.clone();
    std::thread::Builder::new()
        .name("ssp-reload".into())
        .spawn(move || {
            for () in reload_asked {
                systemd::reloading();
                match reload(&reloading, &config_path) {
                    Ok(()) => log::info!("reload: {} is in force", config_path.display()),
                    Err(e) => {
                        log::error!("reload refused, the previous configuration keeps serving: {e}")
                    }
                }
                systemd::notify("READY=1");
            }
        })?;
    std::thread::Builder::new()
        .name("ssp-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        let _ = reloads.send(());
                    }
                    SIGUSR1 => reopen(),
                    _ if runtime.is_stopping() => {
                        // Requests in flight are cut off, but the audit is still sealed.
                        log::warn!("second stop signal: exiting without waiting for requests in flight");
                        runtime.shutdown("second stop signal");
                        std::process::exit(1);
                    }
                    SIGTERM if !runtime.is_leaving() && !stop_delay(&runtime).is_zero() => {
                        let delay = stop_delay(&runtime);
                        // First, so that /readyz says so by the time the log does.
                        runtime.announce_stop();
                        log::info!(
                            "stopping in {delay:?} ([server] stop_delay): /readyz says \"stopping\" \
                             and requests are served as usual until then"
                        );
                        systemd::notify("STOPPING=1");
                        let later = runtime.clone();
                        let spawned =
                            std::thread::Builder::new()
                                .name("ssp-stop-delay".into())
                                .spawn(move || {
                                    std::thread::sleep(delay);
                                    if !later.is_stopping() {
                                        stop_now(&later);
                                    }
                                });
                        if let Err(e) = spawned {
                            log::warn!("stop delay: {e}; stopping at once");
                            stop_now(&runtime);
                        }
                    }
                    // SIGINT (a person at a terminal), a second SIGTERM during the delay, or
                    // no delay: stop accepting now.
                    _ => {
                        if !runtime.is_leaving() {
                            systemd::notify("STOPPING=1");
                        }
                        stop_now(&runtime);
                    }
                }
            }
        })?;
    Ok(())
}

/// SIGTERM's `[server] stop_delay` in force; zero without an admin endpoint, where nothing
/// would tell a balancer that the stop is coming.
pub fn stop_delay(runtime: &Runtime) -> std::time::Duration {
    if runtime.admin_serving() {
        runtime.current().config.server.stop_delay
    } else {
        std::time::Duration::ZERO
    }
}

/// Stops accepting and drains (`[limits] drain_timeout`).
fn stop_now(runtime: &Runtime) {
    runtime.stop();
    log::info!("stopping: no new connections; finishing requests in flight");
}

/// How often the kernel is asked about the clock.
const CLOCK_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the clock's state from `source` once now (so admission under `clock_unsynced = "deny"`
/// starts with a known state), then every `CLOCK_CHECK` on a thread of its own; a change is
/// logged and recorded as an `alarm`.
pub fn watch_clock(runtime: Arc<Runtime>, source: Box<dyn KernelClock>) -> std::io::Result<()> {
    check_clock(&runtime, source.as_ref());
    std::thread::Builder::new()
        .name("ssp-clock".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CLOCK_CHECK);
                check_clock(&runtime, source.as_ref());
            }
        })?;
    Ok(())
}

/// One reading: kept for admission, `/readyz` and `/metrics`; a change (or the first reading
/// when it is bad) is logged and audited.
pub fn check_clock(runtime: &Runtime, source: &dyn KernelClock) {
    let reading = source.read();
    let news = runtime.clock.record(&reading);
    let message = format!("clock: {}", clock::describe(&reading));
    if !news {
        log::debug!("{message}");
        return;
    }
    if runtime.clock.synchronized() {
        log::info!("{message}");
    } else {
        log::warn!("{message}");
    }
    runtime.audit.record(crate::audit::Event::Alarm { message });
}

/// Pings systemd's watchdog while every worker loop keeps turning.
pub fn watchdog(runtime: Arc<Runtime>) -> std::io::Result<()> {
    let Some(interval) = systemd::watchdog_interval() else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("ssp-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                if runtime.workers_alive(Instant::now(), interval) {
                    systemd::notify("WATCHDOG=1");
                } else {
                    log::error!("watchdog: a worker loop is stuck; not pinging systemd");
                }
            }
        })?;
    Ok(())
}

/// Starts the admin endpoint of `[admin]`, if one is configured.
pub fn start_admin(runtime: &Arc<Runtime>) -> std::io::Result<()> {
    let cfg = runtime.current().config.admin.clone();
    let Some(addr) = cfg.listen else {
        return Ok(());
    };
    let (health_of, samples_of) = (runtime.clone(), runtime.clone());
    let (bound, _thread) = admin::start(
        addr,
        cfg.allow_remote,
        runtime.metrics.clone(),
        Arc::new(move || health(&health_of)),
        Arc::new(move || {
            let mut samples = audit_samples(&samples_of);
            samples.extend(crl_samples(&samples_of.current().crls, unix_now()));
            samples.extend(clock_samples(&samples_of.clock));
            samples.extend(sds_samples(samples_of.current().config.sds.as_ref()));
            samples
        }),
    )?;
    runtime.set_admin_serving();
    log::info!("admin endpoint on http://{bound}/ (healthz, readyz, metrics)");
    Ok(())
}

/// `/readyz`: not ready while the audit cannot be written, while a CRL is stale under
/// `crl_expired = "deny"` (every handshake is refused), or from the SIGTERM on (during
/// `[server] stop_delay` too, while it still serves: that is what the delay is for).
pub fn health(runtime: &Runtime) -> Health {
    let mut reasons = Vec::new();
    if !runtime.audit.healthy() {
        reasons.push("audit failing: admission is stopped (503 AUDIT_UNAVAILABLE)".to_string());
    }
    let shared = runtime.current();
    if shared.config.server.crl_expired == CrlExpired::Deny {
        let now = unix_now();
        for crl in shared
            .crls
            .iter()
            .filter(|c| c.next_update.is_some_and(|n| n < now))
        {
            reasons.push(format!(
                "CRL {} is past its nextUpdate: every consumer is refused",
                crl.path.display()
            ));
        }
    }
    if shared.config.server.clock_unsynced == ClockUnsynced::Deny && !runtime.clock.synchronized() {
        reasons.push(
            "clock not synchronised (kernel NTP state): admission is stopped (503 CLOCK_NOT_SYNCHRONISED)"
                .to_string(),
        );
    }
    if runtime.is_leaving() {
        reasons.push("stopping".to_string());
    }
    Health {
        live: true,
        ready: reasons.is_empty(),
        reasons,
    }
}

/// Starts the `ssp-crl` thread. Without any CRL `url` it only looks once a second whether a
/// reload has added one.
pub fn start_crl_refresher(runtime: &Arc<Runtime>) -> std::io::Result<()> {
    crl::refresher::start(runtime.clone())
}

/// `ssp_crl_next_update_seconds{issuer}`: how long until each CRL goes stale at `now`;
/// negative once it is (with `crl_expired = "deny"`, every consumer is then refused).
pub fn crl_samples(crls: &[CrlSummary], now: i64) -> Vec<Sample> {
    crls.iter()
        .map(|crl| Sample {
            name: "ssp_crl_next_update_seconds",
            help: "Seconds until each CRL's nextUpdate; negative when stale (+Inf without one).",
            kind: Kind::Gauge,
            labels: vec![("issuer", crl.issuer.clone())],
            value: crl.next_update.map_or(f64::INFINITY, |next| (next - now) as f64),
        })
        .collect()
}

/// The SDS export in force for `/metrics`: how many ASIDs it registers and how many of its
/// entries were skipped. A refused reload shows as `ssp_config_last_reload_success 0`.
pub fn sds_samples(sds: Option<&crate::config::Sds>) -> Vec<Sample> {
    let Some(sds) = sds else { return Vec::new() };
    let sample = |name, help, value: usize| Sample {
        name,
        help,
        kind: Kind::Gauge,
        labels: Vec::new(),
        value: value as f64,
    };
    vec![
        sample(
            "ssp_sds_asids",
            "ASIDs (consumers and providers) the SDS export in force registers.",
            sds.asids.len(),
        ),
        sample(
            "ssp_sds_skipped_entries",
            "Entries of the SDS export in force left out (ssp sds show says why).",
            sds.skipped,
        ),
    ]
}

/// The clock's state for `/metrics`: synchronised (1) or not (0, also when unknown), and the
/// kernel's maximum error estimate (+Inf when unknown).
pub fn clock_samples(clock: &clock::ClockWatch) -> Vec<Sample> {
    let sample = |name, help, value| Sample {
        name,
        help,
        kind: Kind::Gauge,
        labels: Vec::new(),
        value,
    };
    vec![
        sample(
            "ssp_clock_synchronized",
            "Whether the kernel says an NTP daemon keeps the clock synchronised (1) or not (0).",
            if clock.synchronized() { 1.0 } else { 0.0 },
        ),
        sample(
            "ssp_clock_max_error_seconds",
            "The kernel's estimate of the clock's maximum error.",
            clock.max_error_us().map_or(f64::INFINITY, |us| us as f64 / 1e6),
        ),
    ]
}

/// The audit's figures for `/metrics`.
pub fn audit_samples(runtime: &Runtime) -> Vec<Sample> {
    let stats = runtime.audit.stats();
    let sample = |name, help, kind, value| Sample {
        name,
        help,
        kind,
        labels: Vec::new(),
        value,
    };
    vec![
        sample(
            "ssp_audit_records_total",
            "Audit records written.",
            Kind::Counter,
            stats.records as f64,
        ),
        sample(
            // `_total`: a counter's name says so (promtool); SPEC section 6 says
            // `ssp_audit_sync_seconds`, see README "Operations".
            "ssp_audit_sync_seconds_total",
            "Time spent in audit fdatasync, in total.",
            Kind::Counter,
            stats.sync_seconds,
        ),
        sample(
            "ssp_audit_syncs_total",
            "Audit fdatasync calls.",
            Kind::Counter,
            stats.syncs as f64,
        ),
        sample(
            "ssp_audit_lost_total",
            "Audit records lost to a full queue (each also an alarm).",
            Kind::Counter,
            stats.lost as f64,
        ),
        sample(
            "ssp_audit_healthy",
            "1 while the audit can be written.",
            Kind::Gauge,
            f64::from(u8::from(runtime.audit.healthy())),
        ),
    ]
}
