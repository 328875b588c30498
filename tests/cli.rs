//! SPEC section 2: the real binary. `check` validates like `nginx -t` (exit 0, or 2 naming
//! file and line); `run` serves, here checked end to end with curl.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn ssp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run ssp")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The demo configuration with every path made absolute, `edit` applied, written to `dir`.
fn demo_config(dir: &Path, edit: impl Fn(String) -> String) -> String {
    let demo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.toml")).unwrap();
    let absolute = demo.replace("\"pki/", &format!("\"{}/", pki_dir().display()));
    let path = dir.join("ssp.toml");
    std::fs::write(&path, edit(absolute)).unwrap();
    path.display().to_string()
}

#[test]
fn version_prints_the_crate_version_commit_build_date_rustc_and_target() {
    let out = ssp(&["--version"]);
    assert!(out.status.success());
    let version = text(&out.stdout);
    let lines: Vec<&str> = version.lines().collect();
    assert_eq!(
        lines[0],
        format!("ssp {}", env!("CARGO_PKG_VERSION")),
        "{version}"
    );
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{version}"))
    };
    let commit = field("commit");
    assert!(
        commit == "unknown" || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{version}"
    );
    let built = field("built").as_bytes();
    assert!(
        built.len() == 10 && built[4] == b'-' && built[7] == b'-',
        "{version}"
    );
    assert!(field("rustc").starts_with("rustc 1."), "{version}");
    assert!(field("target").contains("linux"), "{version}");
}

#[test]
fn help_lists_the_commands_and_unknown_usage_exits_2() {
    let out = ssp(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in [
        "ssp run --config",
        "ssp check --config",
        "ssp demo",
        "ssp audit verify DIR",
    ] {
        assert!(help.contains(command), "{help}");
    }
    let out = ssp(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "ssp: unknown command \"frobnicate\"; `ssp --help` lists the commands"
    );
    // A known command with the wrong arguments shows its own usage.
    let out = ssp(&["check", "fixtures/demo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("usage: ssp check --config FILE"),
        "{}",
        text(&out.stderr)
    );
    // `audit verify` keeps its documented exit code 3 for usage errors.
    let out = ssp(&["audit", "verify", "/nonexistent", "--frob"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn each_command_has_its_own_help() {
    for (args, usage) in [
        (&["run", "--help"][..], "usage: ssp run --config FILE"),
        (
            &["check", "--config", "x.toml", "-h"],
            "usage: ssp check --config FILE",
        ),
        (&["crl", "fetch", "--help"], "usage: ssp crl fetch --config FILE"),
        (
            &["audit", "keygen", "--help"],
            "usage: ssp audit keygen --out FILE",
        ),
        (&["audit", "verify", "--help"], "usage: ssp audit verify DIR"),
        (&["help", "demo"], "usage: ssp demo"),
    ] {
        let out = ssp(args);
        let help = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert!(help.starts_with(usage), "{args:?}:\n{help}");
        assert!(
            help.lines().count() >= 4,
            "{args:?}: more than the synopsis:\n{help}"
        );
        assert!(
            help.lines().skip(1).all(|l| l.len() <= 80),
            "{args:?}: wrapped:\n{help}"
        );
    }
}

/// A pipe whose reader is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut ends = [0; 2];
    // SAFETY: pipe2(2) fills `ends`; each end is owned once (closed, or an OwnedFd).
    unsafe {
        assert_eq!(libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC), 0);
        libc::close(ends[0]);
        Stdio::from(OwnedFd::from_raw_fd(ends[1]))
    }
}

fn ssp_into_closed_pipes(args: &[&str]) -> Option<i32> {
    Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .expect("run ssp")
        .code()
}

/// Issue 23: `ssp --help | true` and `ssp audit verify ... | true` panicked on the closed
/// pipe (exit 134 in a release build), so a script could not tell intact from tampered.
#[test]
fn output_into_a_closed_pipe_keeps_the_exit_code() {
    let proxy = Proxy::start();
    proxy.stop();
    let audit = proxy.dir().join("audit").display().to_string();
    let k0 = proxy.dir().join("audit.k0").display().to_string();
    let verify = [
        "audit",
        "verify",
        audit.as_str(),
        "--key-file",
        k0.as_str(),
        "--require-sealed",
    ];
    assert_eq!(ssp(&verify).status.code(), Some(0), "intact");
    for (args, code) in [
        (&["--help"][..], 0),
        (&["--version"], 0),
        (&["check", "--help"], 0),
        (&verify, 0),
        (&["audit", "verify", "/nonexistent/ssp-audit"], 3),
        (&["frobnicate"], 2),
        (&["check", "--config", "/nonexistent/ssp.toml"], 2),
    ] {
        assert_eq!(ssp_into_closed_pipes(args), Some(code), "{args:?}");
    }
}

/// Issue 23: log lines carry their time, except when stderr is the journal (systemd's
/// JOURNAL_STREAM names it), which stamps each line itself and takes `<N>` as its priority.
#[test]
fn log_lines_carry_their_time_unless_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let setup = Setup::new(&Options::default());
    let first_line = |journal: bool| {
        let log = setup.dir.path().join(format!("log-{journal}.txt"));
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssp"));
        cmd.args(["run", "--config"])
            .arg(&setup.config)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(file);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let _running = Running(cmd.spawn().expect("start ssp run"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(line) = text.lines().find(|l| l.contains("listening on")) {
                return line.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `listening on` in:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let line = first_line(false);
    // 2026-03-21T10:04:05.123Z INFO ssp::proxy::worker: listening on ...
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(
        time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "{line}"
    );
    assert!(rest.starts_with("INFO "), "{line}");
    let line = first_line(true);
    assert!(line.starts_with("<6>INFO "), "{line}");
}

#[test]
fn check_with_an_sds_export_needs_an_sds_section() {
    let dir = TempDir::new("cli-demo-check-sds");
    let key = dir.path().join("audit.key");
    assert_eq!(ssp::audit::cli::keygen(&key), 0, "audit keygen");
    let path = demo_config(dir.path(), |t| {
        t.replace("../target/ssp-demo/audit.key", &key.display().to_string())
    });
    let out = ssp(&["check", "--config", &path, "--sds", "/nonexistent/sds.ldif"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{stderr}", text(&out.stdout));
    assert!(
        stderr.contains("--sds /nonexistent/sds.ldif: the configuration has no [sds] section"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_demo_config_and_summarises_its_crl() {
    // With its audit key made, as `ssp demo` makes it on its first run.
    let dir = TempDir::new("cli-demo-check");
    let key = dir.path().join("audit.key");
    assert_eq!(ssp::audit::cli::keygen(&key), 0, "audit keygen");
    let path = demo_config(dir.path(), |t| {
        t.replace("../target/ssp-demo/audit.key", &key.display().to_string())
    });
    let out = ssp(&["check", "--config", &path]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let crl = stdout
        .lines()
        .find(|l| l.contains("level1c.crl"))
        .unwrap_or_else(|| panic!("no CRL line in:\n{stdout}"));
    assert!(crl.contains("nextUpdate 2049-12-01"), "{crl}");
    assert!(crl.contains("SSP Test NHS Level 1C"), "{crl}");
}

#[test]
fn check_names_file_and_line_of_an_unknown_key() {
    let dir = TempDir::new("cli-unknown-key");
    let path = demo_config(dir.path(), |t| {
        t.replace("workers = 2\n", "workers = 2\nbogus_key = 1\n")
    });
    let line = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("bogus_key"))
        .unwrap()
        + 1;
    let out = ssp(&["check", "--config", &path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{path}:{line}:")), "{stderr}");
    assert!(stderr.contains("bogus_key"), "{stderr}");
}

#[test]
fn check_names_a_missing_certificate_file() {
    let dir = TempDir::new("cli-missing-cert");
    let path = demo_config(dir.path(), |t| t.replace("ssp.pem", "no-such-cert.pem"));
    let out = ssp(&["check", "--config", &path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let missing = pki("no-such-cert.pem");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[test]
fn run_refuses_a_config_that_does_not_load() {
    let dir = TempDir::new("cli-run-bad");
    let path = demo_config(dir.path(), |t| {
        t.replace("workers = 2\n", "workers = 2\nbogus_key = 1\n")
    });
    let out = ssp(&["run", "--config", &path]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("bogus_key"));
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_serves_curl_end_to_end() {
    let Some(curl) = curl() else {
        eprintln!("note: curl not on PATH; skipping `ssp run` end to end");
        return;
    };
    let setup = Setup::new(&Options::default());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(["run", "--config"])
        .arg(&setup.config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssp run");
    let stderr = child.stderr.take().unwrap();
    let _running = Running(child);

    // Read the log on a thread so the child never blocks on a full pipe.
    let (lines, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let addr: SocketAddr = loop {
        let line = log
            .recv_timeout(Duration::from_secs(10))
            .expect("`listening on` in the log within 10 s");
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("");
            break addr.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    };

    let url = format!("https://localhost:{}/{}{SEARCH}", addr.port(), setup.endpoint);
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(pki("nhs-ca.pem"))
        .arg("--cert")
        .arg(pki("consumer-a.pem"))
        .arg("--key")
        .arg(pki("consumer-a.key"));
    for (name, value) in [
        ("Ssp-TraceID", TRACE_ID),
        ("Ssp-From", CONSUMER_A.asid),
        ("Ssp-To", PROVIDER_ASID),
        ("Ssp-InteractionID", INTERACTION),
        ("Authorization", JWT),
    ] {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    let out = cmd.arg(&url).output().expect("run curl");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    let (body, status) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{stdout}");
    assert_eq!(body, PROVIDER_BODY);
    let seen = setup.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, format!("{ROOT}{SEARCH}"));
    assert_eq!(seen[0].field("ssp-from"), Some(CONSUMER_A.asid));
}

/// Makes a FIFO at `path` (nobody ever writes to it: opening it to read would wait forever).
fn fifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// `ssp check` with a FIFO where a key file should be answers at once: not a regular file.
#[test]
fn check_refuses_a_fifo_named_as_a_file() {
    let dir = TempDir::new("cli-fifo");
    let key = dir.path().join("ssp.key");
    fifo(&key);
    let path = demo_config(dir.path(), |t| {
        t.replace(
            &format!("\"{}\"", pki("ssp.key").display()),
            &format!("\"{}\"", key.display()),
        )
    });
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains(&key.display().to_string())
    );
    let (done, finished) = mpsc::channel();
    let path_for_check = path.clone();
    std::thread::spawn(move || {
        let _ = done.send(ssp(&["check", "--config", &path_for_check]));
    });
    let out = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("ssp check hung on a FIFO");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&key.display().to_string()) && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

/// Runs `ssp` with `args` until it exits by itself (10 s at most, then it is killed and the
/// test fails): `ssp run` on a configuration it accepts would serve for ever.
fn ssp_exits(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssp");
    let pid = child.id();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match exited.recv_timeout(Duration::from_secs(10)) {
        Ok(out) => out.expect("ssp output"),
        Err(_) => {
            // SAFETY: kill(2) on the child we started, which has not been reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("ssp {args:?} did not exit within 10 s: it accepted the configuration");
        }
    }
}

/// The problem lines of a refusal: each names its file (absolute paths here); the closing
/// summary and log lines are left out.
fn problems(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with('/') && !l.contains(" found; ssp "))
        .collect()
}

/// Issue 23: a green `ssp check` means `ssp run` starts. Each configuration below checked
/// "ok" and then failed at run (or, worse, ran and refused every consumer); now check and run
/// load it through the same code, refuse it with exit 2 and say the same thing, every problem
/// in one pass. README "What `ssp check` catches" lists these rows.
#[test]
fn check_and_run_agree_on_every_start_time_failure() {
    use common::mint;
    let now = mint::unix_now();
    let level1c_crl = format!("\"{}\"", pki("level1c.crl").display());
    let setup = Setup::new(&Options::default());
    let dir = setup.dir.path();
    let good = std::fs::read_to_string(&setup.config).unwrap();
    assert!(good.contains(&level1c_crl), "harness config changed shape");
    let crl_file = |name: &str, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>| {
        let path = dir.join(name);
        std::fs::write(&path, mint::crl(issuer, now - 60, now + 86_400, 1, &[])).unwrap();
        format!("\"{}\"", path.display())
    };
    let other_root_crl = crl_file("other-root.crl", &mint::other_root());
    let forged_crl = crl_file("forged.crl", &mint::level1c_impostor());
    let audit_key = format!("\"{}\"", dir.join("audit.key").display());
    let missing_key = format!("\"{}\"", dir.join("missing.key").display());
    let remote_admin = ("[admin]\nlisten = \"\"", "[admin]\nlisten = \"0.0.0.0:0\"");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "a CRL issued under another root: every consumer refused (unknown revocation status)",
            good.replace(&level1c_crl, &other_root_crl),
            vec!["neither a trust anchor in client_ca"],
        ),
        (
            "a CRL not signed by its issuer's key: every consumer of Level 1C refused",
            good.replace(&level1c_crl, &forged_crl),
            vec!["CRL signature check failed"],
        ),
        (
            "crl_check = \"chain\" without the root's CRL: every consumer refused",
            good.replace("[server]\n", "[server]\ncrl_check = \"chain\"\n"),
            vec!["no CRL in `crl` is issued by the trust anchor"],
        ),
        (
            "[admin] listen beyond loopback without allow_remote",
            good.replace(remote_admin.0, remote_admin.1),
            vec!["not a loopback address"],
        ),
        (
            "[audit] key missing",
            good.replace(&audit_key, &missing_key),
            vec![
                "the audit key ([audit] key) does not exist",
                "ssp audit keygen --out",
            ],
        ),
        (
            "[audit] dir where a file is",
            good.replace(
                &format!("dir = \"{}/audit\"", dir.display()),
                &format!("dir = \"{}/audit\"", setup.config.display()),
            ),
            vec!["the audit folder ([audit] dir)", "is not a folder"],
        ),
        (
            "three problems at once: each is reported in the one pass",
            good.replace(&level1c_crl, &other_root_crl)
                .replace(remote_admin.0, remote_admin.1)
                .replace(&audit_key, &missing_key),
            vec![
                "not a loopback address",
                "neither a trust anchor in client_ca",
                "ssp audit keygen --out",
                "3 problems found",
            ],
        ),
    ];
    for (what, broken, expected) in cases {
        assert_ne!(broken, good, "{what}: the edit did not apply");
        let config = dir.join("broken.toml");
        std::fs::write(&config, broken).unwrap();
        let config = config.display().to_string();
        let check = ssp_exits(&["check", "--config", &config]);
        let run = ssp_exits(&["run", "--config", &config]);
        let (check_err, run_err) = (text(&check.stderr), text(&run.stderr));
        assert_eq!(check.status.code(), Some(2), "{what}: check said\n{check_err}");
        assert_eq!(run.status.code(), Some(2), "{what}: run said\n{run_err}");
        for words in expected {
            assert!(check_err.contains(words), "{what}: check said\n{check_err}");
        }
        assert!(!problems(&check_err).is_empty(), "{what}: {check_err}");
        assert_eq!(
            problems(&check_err),
            problems(&run_err),
            "{what}: check and run differ"
        );
    }
    // And the configuration they were made from checks and starts.
    let check = ssp_exits(&["check", "--config", &setup.config.display().to_string()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
}

/// `ssp.8` as the help texts make it: the overview's commands, each one's `--help`.
fn man_page() -> String {
    // roff: a backslash is `\e`, a minus `\-`, and a line may not start with `.` or `'`.
    let roff = |text: &str| {
        text.lines()
            .map(|l| {
                let l = l.trim().replace('\\', "\\e").replace('-', "\\-");
                if l.starts_with('.') || l.starts_with('\'') {
                    format!("\\&{l}")
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let overview = text(&ssp(&["--help"]).stdout);
    let mut page = format!(
        ".TH SSP 8 \"\" \"ssp {}\" \"System Administration\"\n\
         .SH NAME\nssp \\- Spine\\-Security\\-Proxy\\-style mutual\\-TLS forward proxy for NHS FHIR APIs\n\
         .SH SYNOPSIS\n",
        env!("CARGO_PKG_VERSION")
    );
    let synopses: Vec<&str> = overview
        .lines()
        .filter_map(|l| l.strip_prefix("  ssp "))
        .filter(|l| !l.starts_with("--version"))
        .collect();
    for synopsis in &synopses {
        page.push_str(&format!(".B ssp {}\n.br\n", roff(synopsis)));
    }
    page.push_str(".B ssp \\-\\-version | \\-\\-help | \\fIcommand\\fP \\-\\-help\n.SH COMMANDS\n");
    for synopsis in &synopses {
        let mut args: Vec<&str> = synopsis.split_whitespace().collect();
        args.push("--help");
        let help = text(&ssp(&args).stdout);
        let body = help.split_once("\n\n").map_or("", |(_, rest)| rest);
        page.push_str(&format!(".TP\n.B ssp {}\n", roff(synopsis)));
        let paragraphs: Vec<String> = body.split("\n\n").map(roff).collect();
        page.push_str(&format!("{}\n", paragraphs.join("\n.IP\n")));
    }
    let notes = overview.rsplit_once("\n\n").map_or("", |(_, last)| last);
    page.push_str(&format!(
        ".SH ENVIRONMENT\n{}\n.SH FILES\n\
         /etc/ssp/ssp.toml (the configuration), /var/lib/ssp/audit.key (the audit key),\n\
         /var/log/ssp (the audit and the transactions log).\n\
         .SH SEE ALSO\n/usr/share/doc/ssp/README.md, /usr/share/doc/ssp/SPEC.md, /usr/share/doc/ssp/AUDIT.md\n",
        roff(notes)
    ));
    page
}

/// Issue 23: the package's man page is made from the `--help` texts, so it cannot drift from
/// them. `SSP_WRITE_MAN_PAGE=1 cargo test --test cli the_man_page` (`scripts/man-page`)
/// writes it anew after a help text changed.
#[test]
fn the_man_page_is_the_help_text() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ssp.8");
    let page = man_page();
    if std::env::var_os("SSP_WRITE_MAN_PAGE").is_some() {
        std::fs::write(&path, &page).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == page,
        "packaging/ssp.8 differs from the help texts: run scripts/man-page"
    );
}
