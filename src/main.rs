//! The command line (SPEC section 2). Only this file knows about arguments and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ssp::config::{self, CrlExpired};
use ssp::proxy::{self, Runtime, Shared};
use ssp::{service, systemd};
use ssp::x509::format_utc;

const USAGE: &str = "\
usage: ssp <command>

  ssp run --config FILE     run the proxy in the foreground
  ssp check --config FILE   validate the configuration and everything it names; exit 0 or 2
  ssp demo                  run the proxy and a demo provider on loopback with the fixture PKI
  ssp --version | --help

Logging goes to stderr; set the level with RUST_LOG (e.g. RUST_LOG=info).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--version" | "-V"] => {
            println!("ssp {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["run", "--config", file] => {
            init_logging("info");
            run(PathBuf::from(file))
        }
        ["check", "--config", file] => check(PathBuf::from(file)),
        ["demo"] => {
            // The demo shows every request; `run` logs them at debug (the audit is the record).
            init_logging("info,ssp=debug");
            match ssp::demo::run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ssp demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
}

/// Loads everything `run` would, so a config that checks clean also starts.
fn load(file: PathBuf) -> Result<Shared, String> {
    let cfg = config::load(&file).map_err(|e| e.to_string())?;
    Shared::load(cfg).map_err(|e| e.to_string())
}

fn check(file: PathBuf) -> ExitCode {
    let shared = match load(file) {
        Ok(shared) => shared,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cfg = &shared.config;
    println!("{}:", cfg.path.display());
    let listen: Vec<String> = cfg.server.listen.iter().map(ToString::to_string).collect();
    let workers = match cfg.server.workers {
        0 => format!(
            "one per CPU ({})",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        n => n.to_string(),
    };
    println!("  listen: {} (workers: {workers})", listen.join(", "));
    println!(
        "  consumers: {}, providers: {}",
        cfg.consumers.len(),
        cfg.providers.len()
    );
    if shared.crls.is_empty() {
        println!("  WARNING: crl = []: revocation is not checked");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut refuses_everyone = Vec::new();
    for crl in &shared.crls {
        let next = crl.next_update.map_or("none".to_string(), format_utc);
        let stale = crl.next_update.is_some_and(|n| n < now);
        println!(
            "  crl {}: issuer \"{}\", thisUpdate {}, nextUpdate {next}{}",
            crl.path.display(),
            crl.issuer,
            format_utc(crl.this_update),
            if stale { "  STALE" } else { "" }
        );
        if stale && cfg.server.crl_expired == CrlExpired::Deny {
            refuses_everyone.push(crl);
        }
    }
    // A stale CRL under "deny" refuses every consumer: a problem worth exit code 2.
    for crl in &refuses_everyone {
        eprintln!(
            "{}: CRL is past its nextUpdate; with crl_expired = \"deny\" every handshake is refused",
            crl.path.display()
        );
    }
    if refuses_everyone.is_empty() {
        println!("{}: configuration ok", cfg.path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn run(file: PathBuf) -> ExitCode {
    let shared = match load(file.clone()) {
        Ok(shared) => shared,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if shared.crls.is_empty() {
        log::warn!("crl = []: client certificates are NOT checked for revocation");
    }
    let listeners = match proxy::bind(&shared) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ssp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = Arc::new(Runtime::new(shared));
    let started = service::handle_signals(runtime.clone(), file, Box::new(|| {}))
        .and_then(|()| service::watchdog(runtime.clone()));
    if let Err(e) = started {
        eprintln!("ssp: {e}");
        return ExitCode::FAILURE;
    }
    systemd::notify("READY=1");
    match proxy::serve(runtime, listeners) {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ssp: {e}");
            ExitCode::FAILURE
        }
    }
}
