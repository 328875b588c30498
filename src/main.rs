//! The command line (SPEC section 2). Only this file knows about arguments and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ssp::config::{self, CrlExpired};
use ssp::proxy::{self, Runtime, Shared};
use ssp::x509::format_utc;
use ssp::{service, systemd};

const USAGE: &str = "\
usage: ssp <command>

  ssp run --config FILE     run the proxy in the foreground
  ssp check --config FILE   validate the configuration and everything it names; exit 0 or 2
  ssp crl fetch --config FILE
                            fetch every CRL that has a url once, store the newer ones; exit 0
                            all updated or unchanged, 1 any failed, 2 configuration problem
  ssp demo                  run the proxy and a demo provider on loopback with the fixture PKI
  ssp audit keygen --out FILE
                            create the audit sealing key (mode 0600); prints the initial key once
  ssp audit verify DIR [--key-file K0] [--current-key KEY] [--require-sealed] [--witness W]
                            verify the audit files in DIR: exit 0 intact, 1 tampered,
                            2 gap/truncated/unsealed (with --require-sealed), 3 usage or I/O error;
                            KEY (the box's [audit] key file) shows records cut from the end;
                            W (records shipped off the box) shows them too: 4 cut, 5 forked
  ssp audit find DIR [--trace-id ID] [--from ASID] [--to ASID] [--interaction I] [--status N]
                     [--since T] [--until T] [--subject ID] [--key-file K0] [--proof OUT]
                            print the records found; OUT: an extract that proves them
  ssp audit verify-extract OUT --key-file K0
                            check an extract: exit 0 intact, 1 not, 3 usage or I/O error
  ssp audit stats DIR [--by day,from,to,interaction,status] [--format csv|json] [--key-file K0]
                            requests counted from the verified records
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
        ["crl", "fetch", "--config", file] => {
            init_logging("warn");
            crl_fetch(PathBuf::from(file))
        }
        ["audit", "keygen", "--out", file] => ExitCode::from(ssp::audit::cli::keygen(Path::new(file))),
        ["audit", "verify", dir, rest @ ..] => audit_verify(Path::new(dir), rest),
        ["audit", "find", dir, rest @ ..] => ExitCode::from(ssp::audit::cli::find(Path::new(dir), rest)),
        ["audit", "stats", dir, rest @ ..] => ExitCode::from(ssp::audit::cli::stats(Path::new(dir), rest)),
        ["audit", "verify-extract", file, rest @ ..] => {
            ExitCode::from(ssp::audit::cli::verify_extract(Path::new(file), rest))
        }
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

fn audit_verify(dir: &Path, options: &[&str]) -> ExitCode {
    let mut verify = ssp::audit::cli::VerifyOptions::default();
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match (*option, options.clone().next()) {
            ("--key-file", Some(file)) => {
                verify.key_file = Some(Path::new(*file));
                options.next();
            }
            ("--current-key", Some(file)) => {
                verify.current_key = Some(Path::new(*file));
                options.next();
            }
            ("--require-sealed", _) => verify.require_sealed = true,
            ("--witness", Some(path)) => {
                verify.witness = Some(Path::new(*path));
                options.next();
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(3);
            }
        }
    }
    ExitCode::from(ssp::audit::cli::verify(dir, &verify))
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
    let now = ssp::crl::unix_now();
    let mut refuses_everyone = Vec::new();
    for crl in &shared.crls {
        let next = crl.next_update.map_or("none".to_string(), format_utc);
        let stale = crl.next_update.is_some_and(|n| n < now);
        let url = crl.url.as_ref().map_or(String::new(), |u| format!(", from {u}"));
        println!(
            "  crl {}: issuer \"{}\", thisUpdate {}, nextUpdate {next}, {} revoked{url}{}",
            crl.path.display(),
            crl.issuer,
            format_utc(crl.this_update),
            crl.revoked,
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

/// One refresh of every CRL with a `url`, in the foreground: one line per CRL. A running
/// proxy keeps using what it holds until its own refresh or a reload reads the stored file.
fn crl_fetch(file: PathBuf) -> ExitCode {
    let shared = match load(file) {
        Ok(shared) => shared,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let settings = &shared.config.server.crl_refresh;
    let now = ssp::crl::unix_now();
    let mut failed = false;
    let fetched: Vec<_> = shared.crls.iter().filter(|c| c.url.is_some()).collect();
    if fetched.is_empty() {
        println!("no CRL has a url: nothing to fetch");
    }
    for held in fetched {
        let outcome = match ssp::crl::fetch(held, &shared.tls_material, settings, now) {
            Ok(None) => ssp::crl::Outcome::Unchanged,
            Ok(Some((new, bytes))) => match ssp::durable_file::replace(&held.path, &bytes, 0o644) {
                Ok(()) => ssp::crl::Outcome::Updated(new),
                Err(e) => ssp::crl::Outcome::Failed(ssp::crl::Failure::Write(e.to_string())),
            },
            Err(failure) => ssp::crl::Outcome::Failed(failure),
        };
        failed |= matches!(outcome, ssp::crl::Outcome::Failed(_));
        println!("{}", outcome.line(held));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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
    let runtime = match Runtime::start(shared) {
        Ok(runtime) => Arc::new(runtime),
        Err(e) => {
            eprintln!("ssp: {e}");
            return ExitCode::from(2);
        }
    };
    let reopen = runtime.clone();
    let started = service::handle_signals(
        runtime.clone(),
        file,
        Box::new(move || reopen.transactions.reopen()),
    )
    .and_then(|()| service::watchdog(runtime.clone()))
    .and_then(|()| service::start_admin(&runtime))
    .and_then(|()| service::start_crl_refresher(&runtime));
    if let Err(e) = started {
        eprintln!("ssp: {e}");
        return ExitCode::FAILURE;
    }
    systemd::notify("READY=1");
    let served = proxy::serve(runtime.clone(), listeners);
    runtime.shutdown("stopped");
    match served {
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
