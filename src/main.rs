//! The command line (SPEC section 2). Only this file knows about arguments and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ssp::config;
use ssp::proxy::{self, Shared};
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
            init_logging("info");
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
    println!("{}: ok", cfg.path.display());
    let listen: Vec<String> = cfg.server.listen.iter().map(ToString::to_string).collect();
    println!(
        "  listen: {} (workers: {})",
        listen.join(", "),
        cfg.server.workers
    );
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
    for crl in &shared.crls {
        let next = crl.next_update.map_or("none".to_string(), format_utc);
        let stale = if crl.next_update.is_some_and(|n| n < now) {
            "  STALE"
        } else {
            ""
        };
        println!(
            "  crl {}: issuer \"{}\", thisUpdate {}, nextUpdate {next}{stale}",
            crl.path.display(),
            crl.issuer,
            format_utc(crl.this_update)
        );
    }
    ExitCode::SUCCESS
}

fn run(file: PathBuf) -> ExitCode {
    let shared = match load(file) {
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
    match proxy::run(Arc::new(shared), listeners) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssp: {e}");
            ExitCode::FAILURE
        }
    }
}
