//! `ssp run` as a long-running service: signals (SIGHUP reload, SIGTERM/SIGINT drain, SIGUSR1
//! reopen), systemd notifications and the watchdog. The proxy itself knows none of this; it
//! only reads `Runtime`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::config;
use crate::proxy::{Runtime, Shared};
use crate::systemd;

/// Loads a configuration and puts it in force as one swap, or refuses it whole.
pub fn reload(runtime: &Runtime, path: &Path) -> Result<(), String> {
    let cfg = config::load(path).map_err(|e| e.to_string())?;
    let current = runtime.current();
    if cfg.server.listen != current.config.server.listen || cfg.server.workers != current.config.server.workers {
        log::warn!("reload: `listen` and `workers` changes take effect at the next restart");
    }
    let shared = Shared::load(cfg).map_err(|e| e.to_string())?;
    runtime.replace(shared);
    Ok(())
}

/// Handles signals on their own thread until the process ends. `reopen` runs on SIGUSR1.
pub fn handle_signals(
    runtime: Arc<Runtime>,
    config_path: PathBuf,
    reopen: Box<dyn Fn() + Send>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])?;
    std::thread::Builder::new().name("ssp-signals".into()).spawn(move || {
        for signal in signals.forever() {
            match signal {
                SIGHUP => {
                    systemd::reloading();
                    match reload(&runtime, &config_path) {
                        Ok(()) => log::info!("reload: {} is in force", config_path.display()),
                        Err(e) => log::error!("reload refused, the previous configuration keeps serving: {e}"),
                    }
                    systemd::notify("READY=1");
                }
                SIGUSR1 => reopen(),
                _ if runtime.is_stopping() => {
                    log::warn!("second stop signal: exiting without waiting");
                    std::process::exit(1);
                }
                _ => {
                    log::info!("stopping: finishing requests in flight");
                    systemd::notify("STOPPING=1");
                    runtime.stop();
                }
            }
        }
    })?;
    Ok(())
}

/// Pings systemd's watchdog while every worker loop keeps turning.
pub fn watchdog(runtime: Arc<Runtime>) -> std::io::Result<()> {
    let Some(interval) = systemd::watchdog_interval() else {
        return Ok(());
    };
    std::thread::Builder::new().name("ssp-watchdog".into()).spawn(move || {
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
