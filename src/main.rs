//! The command line (SPEC section 2). Only this file knows about arguments and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ssp::config::CrlExpired;
use ssp::proxy::{self, Runtime, Shared};
use ssp::x509::format_utc;

mod relay;
use ssp::{service, startup, systemd};

/// One command of the command line: `ssp --help` lists them, `ssp <command> --help` shows
/// one, and `ssp.8` (the man page) is made from the same text (`scripts/man-page`).
struct Command {
    /// The words that name it.
    name: &'static str,
    /// Its arguments.
    args: &'static str,
    /// What it does, in one line.
    about: &'static str,
    /// The rest of its `--help`: exit codes, and what an operator needs to know.
    details: &'static str,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "run",
        args: "--config FILE",
        about: "run the proxy in the foreground (systemd Type=notify)",
        details: "Loads and checks everything as `ssp check` does first: on any problem it prints the \
same lines and exits 2. Exit 1 when it cannot start or serve (an address in use, the audit \
folder); 0 after SIGTERM or SIGINT has let requests in flight finish and sealed the audit. \
SIGHUP reloads the configuration (refused whole on any problem, the old one keeps serving); \
SIGUSR1 reopens the transactions log. Logs go to stderr, each line with its UTC time unless \
stderr is the journal (JOURNAL_STREAM), which stamps lines itself; the level comes from \
RUST_LOG (default info).",
    },
    Command {
        name: "check",
        args: "--config FILE [--sds NEW]",
        about: "check the configuration and every file it names, as run and a reload do",
        details: "Prints a summary and exits 0, or prints every problem it finds, one a line \
(FILE:LINE: `key`: message, or the offending file's path), and exits 2. Also exits 2 when a \
CRL is past its nextUpdate under crl_expired = \"deny\": run would start, but refuse every \
consumer until a fresh CRL arrives. With --sds, NEW is checked as the [sds] export in place of \
the one [sds] ldif names, and exit 2 also when it drops more than [sds] max_shrink of that \
one's ASIDs, as a reload would refuse it. Creates and changes nothing.",
    },
    Command {
        name: "crl fetch",
        args: "--config FILE",
        about: "fetch every CRL that has a url once, and store the newer ones",
        details: "One line per CRL (updated, unchanged, failed: reason). Exit 0 when none failed, 1 \
when any did, 2 when the configuration does not load. A running proxy picks the stored files \
up at its next refresh or reload.",
    },
    Command {
        name: "sds show",
        args: "--config FILE",
        about: "print the consumers and providers this configuration and its SDS export yield",
        details: "Each consumer with its FQDN, interactions and agreements (\"sds\" when the \
export has its ASID, \"local\" when only the file does), each provider with its endpoints and \
CPA ids, and every entry of the export left out with the reason (missing attribute, unknown \
party key, two endpoints for one interaction). Exit 0, or 2 when the configuration or the \
export does not load (FILE:LINE: message).",
    },
    Command {
        name: "sds diff",
        args: "OLD NEW",
        about: "print what changes between two SDS exports",
        details: "One line per change, by ASID: + added, - removed, ~ changed (an interaction, an \
FQDN, an endpoint or CPA id), then how many of OLD's ASIDs NEW drops. Read it before a \
reload. Exit 0 no change, 1 changes, 2 a file that does not load.",
    },
    // Not in the gateway build (`scripts/build-static`): it needs the repository's fixtures.
    #[cfg(feature = "demo")]
    Command {
        name: "demo",
        args: "",
        about: "run the proxy and a demo provider on loopback with the fixture PKI",
        details: "Run it from the repository: it prints curl commands to paste (one allowed request, \
the same search by POST, one refused) and runs until Ctrl-C.",
    },
    Command {
        name: "audit keygen",
        args: "--out FILE",
        about: "create the audit sealing key (mode 0600) and print the initial key once",
        details: "Give the printed initial key to the auditor: it verifies every seal, and must not \
stay on the box. FILE is never overwritten; [audit] key names it.",
    },
    Command {
        name: "audit verify",
        args: "DIR [--key-file K0] [--current-key KEY] [--require-sealed] [--witness W]",
        about: "verify the audit files in DIR",
        details: "One summary line. Exit 0 intact, 1 tampered, 2 gap, truncation or (with \
--require-sealed) an unsealed tail, 3 usage or I/O error (also a witness that is not this \
box's), 4 cut (DIR lacks sealed records the witness holds), 5 forked (a witness seal is not \
DIR's record at that seq). K0 is the initial key; KEY, the box's [audit] key file, shows \
records cut from the end; W, records a log shipper carried off the box, shows them too.",
    },
    Command {
        name: "audit find",
        args: "DIR [--trace-id ID] [--from ASID] [--to ASID] [--interaction URN] [--status N] [--since T] [--until T] [--subject ID] [--key-file K0] [--proof OUT]",
        about: "print the verified records of the requests that match",
        details: "A request is a deny, or a req with its res. With --proof (and --key-file), OUT \
is an extract that proves the records to someone without the folder. Exit: verify's code; 2 \
also when matching records are after the last seal (not in the extract); 3 usage.",
    },
    Command {
        name: "audit verify-extract",
        args: "OUT --key-file K0",
        about: "check an extract written by audit find --proof",
        details: "One line. Exit 0 intact, 1 it does not verify (line and reason), 3 usage or I/O \
error.",
    },
    Command {
        name: "audit stats",
        args: "DIR [--by day,from,to,interaction,status] [--format csv|json] [--key-file K0]",
        about: "count requests per group from the verified records",
        details: "CSV on stdout and a summary on stderr (or one JSON document). A deny counts as \
its refusals; a req with its res's status. Exit: verify's code; 3 usage.",
    },
];

/// `ssp --help`.
fn overview() -> String {
    let mut text = String::from("usage: ssp <command> [arguments]\n\ncommands:\n");
    for c in COMMANDS {
        text.push_str(&format!("  {}\n      {}\n", synopsis(c), c.about));
    }
    text.push_str(
        "  ssp --version | --help | <command> --help\n\n\
         Logging goes to stderr; set the level with RUST_LOG (e.g. RUST_LOG=info).",
    );
    text
}

fn synopsis(c: &Command) -> String {
    format!("ssp {} {}", c.name, c.args).trim_end().to_string()
}

/// `ssp <command> --help`.
fn help(c: &Command) -> String {
    let mut about = c.about.to_string();
    about[..1].make_ascii_uppercase();
    format!("usage: {}\n\n{about}.\n\n{}", synopsis(c), wrap(c.details, 80))
}

/// `text` cut into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / width);
    let mut line = 0;
    for word in text.split(' ') {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

/// `ssp --version`: what was built, from what, with what (`build.rs`).
fn version() -> String {
    format!(
        "ssp {}\ncommit: {}\nbuilt: {}\nrustc: {}\ntarget: {}",
        env!("CARGO_PKG_VERSION"),
        env!("SSP_COMMIT"),
        env!("SSP_BUILD_DATE"),
        env!("SSP_RUSTC"),
        env!("SSP_TARGET")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The long-running commands log to stderr themselves; the others' output may go into a
    // pipe that closes early.
    let relays = match args.first() {
        Some(&"run" | &"demo") => Vec::new(),
        _ => relay::start(),
    };
    let code = dispatch(&args);
    relay::finish(relays);
    code
}

fn dispatch(args: &[&str]) -> ExitCode {
    let command = COMMANDS.iter().find(|c| {
        let words: Vec<&str> = c.name.split(' ').collect();
        args.starts_with(&words)
    });
    let Some(command) = command else {
        return match args {
            ["--version" | "-V"] => say(&version()),
            [] | ["--help" | "-h" | "help"] => say(&overview()),
            ["help", name @ ..] => match COMMANDS.iter().find(|c| c.name == name.join(" ")) {
                Some(c) => say(&help(c)),
                None => unknown(&name.join(" ")),
            },
            [first, ..] => unknown(first),
        };
    };
    let rest = &args[command.name.split(' ').count()..];
    if rest.iter().any(|a| matches!(*a, "--help" | "-h")) {
        return say(&help(command));
    }
    match (command.name, rest) {
        ("run", ["--config", file]) => {
            init_logging("info");
            run(PathBuf::from(file))
        }
        ("check", ["--config", file]) => check(PathBuf::from(file), None),
        ("check", ["--config", file, "--sds", new]) => check(PathBuf::from(file), Some(PathBuf::from(new))),
        ("sds show", ["--config", file]) => ExitCode::from(ssp::sds::cli::show(Path::new(file))),
        ("sds diff", [old, new]) => ExitCode::from(ssp::sds::cli::diff(Path::new(old), Path::new(new))),
        ("crl fetch", ["--config", file]) => {
            init_logging("warn");
            crl_fetch(PathBuf::from(file))
        }
        ("audit keygen", ["--out", file]) => ExitCode::from(ssp::audit::cli::keygen(Path::new(file))),
        ("audit verify", [dir, options @ ..]) => audit_verify(Path::new(dir), options),
        ("audit find", [dir, rest @ ..]) => ExitCode::from(ssp::audit::cli::find(Path::new(dir), rest)),
        ("audit stats", [dir, rest @ ..]) => ExitCode::from(ssp::audit::cli::stats(Path::new(dir), rest)),
        ("audit verify-extract", [file, rest @ ..]) => {
            ExitCode::from(ssp::audit::cli::verify_extract(Path::new(file), rest))
        }
        #[cfg(feature = "demo")]
        ("demo", []) => {
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
        // `audit verify` keeps its documented exit code for usage errors.
        ("audit verify", _) => usage(command, 3),
        _ => usage(command, 2),
    }
}

fn say(text: &str) -> ExitCode {
    println!("{text}");
    ExitCode::SUCCESS
}

fn unknown(name: &str) -> ExitCode {
    eprintln!("ssp: unknown command \"{name}\"; `ssp --help` lists the commands");
    ExitCode::from(2)
}

fn usage(command: &Command, code: u8) -> ExitCode {
    eprintln!(
        "usage: {}\n(`ssp {} --help` says more)",
        synopsis(command),
        command.name
    );
    ExitCode::from(code)
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
            (other, _) => {
                eprintln!("ssp audit verify: unknown option or missing file: \"{other}\"");
                return ExitCode::from(3);
            }
        }
    }
    ExitCode::from(ssp::audit::cli::verify(dir, &verify))
}

/// Log lines on stderr: with their UTC time, except under journald, which stamps each line
/// itself and reads a leading `<N>` as its priority (`journalctl -p warning`).
fn init_logging(default: &str) {
    use std::io::Write;
    let journal = under_journald();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format(move |out, record| {
            let level = record.level();
            if journal {
                let priority = match level {
                    log::Level::Error => 3,
                    log::Level::Warn => 4,
                    log::Level::Info => 6,
                    log::Level::Debug | log::Level::Trace => 7,
                };
                writeln!(out, "<{priority}>{level} {}: {}", record.target(), record.args())
            } else {
                let now = ssp::audit::record::format_ts(std::time::SystemTime::now());
                writeln!(out, "{now} {level} {}: {}", record.target(), record.args())
            }
        })
        .init();
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the stream
/// it connects, which a redirection (`ssp run 2>file` in a unit) no longer matches.
fn under_journald() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    // /proc/self/fd/2 follows to what stderr is; its metadata is the stream's.
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()))
}

/// Loads everything `run` would (`startup::load`, the one code path of check, run and
/// reload), or prints every problem found and says what that means.
fn load(file: &Path, sds: Option<&Path>, command: &str) -> Result<Shared, ExitCode> {
    startup::load_with(file, sds).map_err(|problems| {
        for problem in &problems.0 {
            eprintln!("{problem}");
        }
        let n = problems.0.len();
        eprintln!(
            "{}: {n} problem{} found; ssp {command} stops here (exit 2)",
            file.display(),
            if n == 1 { "" } else { "s" }
        );
        ExitCode::from(2)
    })
}

fn check(file: PathBuf, sds_new: Option<PathBuf>) -> ExitCode {
    let shared = match load(&file, sds_new.as_deref(), "check") {
        Ok(shared) => shared,
        Err(code) => return code,
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
    let mut refused = false;
    if let (Some(new), None) = (&sds_new, &cfg.sds) {
        eprintln!(
            "{}: --sds {}: the configuration has no [sds] section to put it in",
            cfg.path.display(),
            new.display()
        );
        refused = true;
    }
    if let Some(sds) = &cfg.sds {
        let export = sds_new.as_deref().unwrap_or(&sds.ldif);
        println!(
            "  sds {}: {} nhsAs/nhsMhs records, {} ASIDs, {} entries skipped (`ssp sds show` says why)",
            export.display(),
            sds.records,
            sds.asids.len(),
            sds.skipped
        );
        // The export in place is what a running proxy holds (or will at its next reload).
        if let Some(new) = &sds_new {
            match ssp::sds::cli::read(&sds.ldif, sds.interactions.as_deref()) {
                Ok(in_place) => {
                    if let Err(why) = ssp::sds::check_shrink(&in_place.asids(), &sds.asids, sds.max_shrink) {
                        eprintln!("{}: {why}", new.display());
                        refused = true;
                    }
                }
                Err(_) => println!(
                    "  sds: no export that loads at {} to compare with",
                    sds.ldif.display()
                ),
            }
        }
    }
    // The clock as this process sees it now; `ssp run` watches it (`[server] clock_unsynced`).
    let clock = ssp::clock::KernelClock::read(&ssp::clock::Adjtimex);
    let synchronized = clock.as_ref().is_ok_and(|c| c.synchronized);
    println!(
        "  {}{}",
        if synchronized { "" } else { "WARNING: " },
        ssp::clock::describe(&clock)
    );
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
    if refuses_everyone.is_empty() && !refused {
        println!("{}: configuration ok", cfg.path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// One refresh of every CRL with a `url`, in the foreground: one line per CRL. A running
/// proxy keeps using what it holds until its own refresh or a reload reads the stored file.
fn crl_fetch(file: PathBuf) -> ExitCode {
    let shared = match load(&file, None, "crl fetch") {
        Ok(shared) => shared,
        Err(code) => return code,
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
    let shared = match load(&file, None, "run") {
        Ok(shared) => shared,
        Err(code) => return code,
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
    // What `check` could not see ahead (the audit folder's contents, a file that changed
    // since): exit 1, a failure to retry, not 2, a configuration to fix.
    let runtime = match Runtime::start(shared) {
        Ok(runtime) => Arc::new(runtime),
        Err(e) => {
            eprintln!("ssp: {e}");
            return ExitCode::FAILURE;
        }
    };
    service::config_in_force(&runtime, "start");
    let reopen = runtime.clone();
    let started = service::handle_signals(
        runtime.clone(),
        file,
        Box::new(move || reopen.transactions.reopen()),
    )
    .and_then(|()| service::watchdog(runtime.clone()))
    .and_then(|()| service::watch_clock(runtime.clone(), Box::new(ssp::clock::Adjtimex)))
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
