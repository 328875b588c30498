//! `ssp audit keygen`, `verify`, `find`, `stats` and `verify-extract` (SPEC section 2). Each
//! prints and returns the exit code; `main.rs` only picks the command.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::extract::{Builder, Checker};
use super::files::{self, ACTIVE, LineRead};
use super::hex;
use super::json::Val;
use super::query::{Dim, Fields, Filter, Finder, Stats};
use super::record::{self, MAX_LINE, Parsed};
use super::seal::{self, Key};
use super::verify::{Kind, Report, Role, Verifier};
use super::witness::Witness;

/// Exit code for usage and I/O errors.
const ERROR: u8 = 3;

/// `ssp audit keygen --out FILE`: writes the evolving key at epoch 0 (mode 0600, never over an
/// existing file) and prints the initial key once.
pub fn keygen(out: &Path) -> u8 {
    let key = match seal::random::<32>() {
        Ok(bytes) => Key::new(0, bytes),
        Err(e) => {
            eprintln!("ssp audit keygen: cannot read /dev/urandom: {e}");
            return ERROR;
        }
    };
    if let Err(e) = seal::create(out, &key) {
        let why = if e.kind() == io::ErrorKind::AlreadyExists {
            "already exists; an audit key is never overwritten (remove it first if you really mean to)".into()
        } else {
            e.to_string()
        };
        eprintln!("ssp audit keygen: {}: {why}", out.display());
        return ERROR;
    }
    println!("audit key written to {} (epoch 0, mode 0600)", out.display());
    println!("initial key: {}", hex::encode(key.bytes()));
    println!(
        "Keep the initial key OFF this machine (with the auditor): `ssp audit verify DIR --key-file K0` needs it \
         to check every seal, and whoever holds it can forge seals. It is not shown again."
    );
    0
}

/// What `ssp audit verify` is given besides the folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// The initial key (`--key-file K0`), kept off the box: checks every seal.
    pub key_file: Option<&'a Path>,
    /// The box's evolving key file (`--current-key`, `[audit] key`): shows a chain whose newest
    /// sealed records were cut away.
    pub current_key: Option<&'a Path>,
    /// Records after the last seal are a finding (`--require-sealed`).
    pub require_sealed: bool,
    /// Records shipped off the box (`--witness`), a file or a folder of files: shows a chain
    /// cut back, rolled back or forked.
    pub witness: Option<&'a Path>,
}

/// `ssp audit verify DIR [--key-file K0] [--current-key KEY] [--require-sealed] [--witness W]`:
/// one summary line; 0 intact, 1 tampered, 2 gap / truncation / unsealed tail (when sealing is
/// required), 3 error, 4 cut and 5 forked (against the witness).
pub fn verify(dir: &Path, options: &VerifyOptions) -> u8 {
    match check(dir, options) {
        Ok(report) => {
            println!("{}", report.summary());
            report.exit_code()
        }
        Err(message) => {
            eprintln!("ssp audit verify: {message}");
            ERROR
        }
    }
}

fn check(dir: &Path, options: &VerifyOptions) -> Result<Report, String> {
    let k0 = options.key_file.map(read_initial_key).transpose()?;
    // Read before the audit: the key only moves forward, so a proxy still writing can only
    // add seals after this read, never make the key look further on than the audit allows.
    let current = options
        .current_key
        .map(|path| read_key(path).map(|key| (path, key)))
        .transpose()?;
    // So is the witness: a shipper carries records off the box after they are written, so a
    // live folder holds at least what the witness held when it was read.
    let mut witness = options
        .witness
        .map(|path| read_witness(path, k0.as_ref()))
        .transpose()?;
    let mut report = scan(
        dir,
        k0.clone(),
        options.require_sealed,
        &mut |file, line, _, p| {
            if let Some(witness) = &mut witness {
                witness.see(file, line, p.seq, &p.h);
            }
            Ok(())
        },
    )?;
    if let Some((path, key)) = current {
        report.check_current_key(&path.display().to_string(), &key, k0.as_ref());
    }
    if let Some(witness) = witness {
        witness.finish(&mut report);
    }
    Ok(report)
}

/// What [`scan`] calls with each record that verified: its file, line, bytes and chain fields.
type Each<'a> = dyn FnMut(&str, u64, &[u8], &Parsed) -> Result<(), String> + 'a;

/// Reads the audit files of `dir` in chain order through the verifier, and gives `each` every
/// record that verified: the file and line it is on, its bytes and what the chain needs of it.
/// An `Err` from `each` (its output failed) stops the reading. (`dyn`: one copy of the loop
/// for every command, as the binary is at its size budget.)
fn scan(dir: &Path, k0: Option<Key>, require_sealed: bool, each: &mut Each) -> Result<Report, String> {
    let ordered = chain_order(dir)?;
    if ordered.is_empty() {
        return Err(format!("{}: no audit files", dir.display()));
    }
    let mut verifier = Verifier::new(k0);
    let mut buf = Vec::with_capacity(MAX_LINE);
    for (name, role) in ordered {
        let path = dir.join(&name);
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        verifier.begin_file(&name, role);
        let mut line = 0;
        loop {
            line += 1;
            match files::next_line(&mut reader, &mut buf, MAX_LINE)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                LineRead::Line { complete: true } => {
                    if let Some(parsed) = verifier.accept(&buf) {
                        each(&name, line, &buf, parsed)?;
                    }
                }
                LineRead::Line { complete: false } => verifier.partial_line(),
                LineRead::TooLong => {
                    verifier.overlong_line();
                    break;
                }
                LineRead::Eof => break,
            }
        }
    }
    let mut report = verifier.finish(require_sealed);
    report.check_torn(|name| side_file(&dir.join(name)));
    Ok(report)
}

/// The longest witness line read: a shipper may put its own prefix before a record.
const WITNESS_LINE: usize = 1 << 16;

/// The seals of a witness (a file, or every file in a folder), checked against the initial
/// key when it is given.
fn read_witness(path: &Path, k0: Option<&Key>) -> Result<Witness, String> {
    let name = path.display().to_string();
    let mut witness = Witness::new(&name);
    // In any order: the witness's order says nothing.
    let paths: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| format!("{name}: {e}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![path.to_owned()]
    };
    let mut buf = Vec::new();
    for path in paths {
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = BufReader::new(file);
        loop {
            match files::next_line(&mut reader, &mut buf, WITNESS_LINE)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                LineRead::Line { .. } if buf.trim_ascii().is_empty() => {}
                LineRead::Line { .. } => match shipped(&buf) {
                    Some(parsed) => witness.record(&parsed),
                    None => witness.skipped += 1,
                },
                LineRead::TooLong => {
                    return Err(format!(
                        "{}: a line longer than {WITNESS_LINE} bytes: not a file of audit records",
                        path.display()
                    ));
                }
                LineRead::Eof => break,
            }
        }
    }
    if let Some(k0) = k0 {
        witness
            .check_macs(k0)
            .map_err(|e| format!("the witness {name}: {e}"))?;
    }
    Ok(witness)
}

/// A record as a shipper may carry it: after a prefix of its own (a syslog or journal header),
/// perhaps with a CR after it. Checked whole, so a line cut short is not a record.
fn shipped(line: &[u8]) -> Option<Parsed> {
    let start = line.windows(7).position(|w| w == b"{\"seq\":")?;
    record::parse(line[start..].trim_ascii_end()).ok()
}

/// `--name value` pairs, in order.
fn pairs<'a>(args: &[&'a str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    args.chunks(2)
        .map(|pair| match pair {
            [name, value] if name.starts_with("--") => Ok((*name, *value)),
            [name] if name.starts_with("--") => Err(format!("{name} needs a value")),
            _ => Err(format!("unexpected {:?}", pair[0])),
        })
        .collect()
}

/// Prints `Err` as the command's message, the exit code for errors.
fn report_error(command: &str, result: Result<u8, String>) -> u8 {
    result.unwrap_or_else(|message| {
        eprintln!("ssp audit {command}: {message}");
        ERROR
    })
}

/// What the folder's records were, for the line each command ends with.
fn read_line(report: &Report) -> String {
    let range = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
        _ => String::new(),
    };
    format!("{} records read and verified{range}", report.records)
}

/// `ssp audit find DIR [filters] [--key-file K0] [--proof OUT]`: prints the records found
/// (stdout), then one line (stderr): how many, of how many read, and the folder's verify
/// summary. Exit: the folder's verify code; else 2 when records found are not in the extract
/// (after the last seal); 3 error.
pub fn find(dir: &Path, args: &[&str]) -> u8 {
    report_error("find", run_find(dir, args))
}

fn run_find(dir: &Path, args: &[&str]) -> Result<u8, String> {
    let mut filter = Filter::default();
    let mut query = Vec::new();
    let (mut key_file, mut proof) = (None, None);
    for (option, value) in pairs(args)? {
        match option {
            "--key-file" => key_file = Some(Path::new(value)),
            "--proof" => proof = Some(Path::new(value)),
            _ if filter.set(option, value)? => query.push(format!("{option} {value}")),
            _ => return Err(format!("unknown option {option}")),
        }
    }
    let k0 = key_file.map(read_initial_key).transpose()?;
    let mut builder = match proof {
        Some(out) => {
            let k0 = k0.as_ref().ok_or(
                "--proof needs --key-file K0: the extract is closed with a MAC made from it, \
                 and its seals are checked as the records are read",
            )?;
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            let builder = Builder::new(BufWriter::new(file), k0, &query.join(" "));
            Some((out, builder.map_err(|e| format!("{}: {e}", out.display()))?))
        }
        None => None,
    };
    let mut finder = Finder::new(filter);
    let mut stdout = BufWriter::new(io::stdout().lock());
    let mut found = 0u64;
    let scanned = scan(dir, k0, false, &mut |_, _, line, p| {
        let hit = Fields::of(line).is_some_and(|f| finder.matches(p.seq, &f));
        if hit {
            found += 1;
            stdout
                .write_all(line)
                .and_then(|()| stdout.write_all(b"\n"))
                .map_err(|e| format!("stdout: {e}"))?;
        }
        if let Some((out, builder)) = &mut builder {
            builder
                .record(line, p, hit)
                .map_err(|e| format!("{}: {e}", out.display()))?;
        }
        Ok(())
    })
    .and_then(|report| {
        stdout
            .flush()
            .map(|()| report)
            .map_err(|e| format!("stdout: {e}"))
    });
    let report = match scanned {
        Ok(report) => report,
        Err(e) => {
            if let Some((out, _)) = builder {
                // Half an extract proves nothing: it is not left to be mistaken for one.
                let _ = std::fs::remove_file(out);
            }
            return Err(e);
        }
    };
    let mut code = report.exit_code();
    let mut line = format!("{found} records found; {}", read_line(&report));
    if let Some((out, builder)) = builder {
        let proven = builder.proven;
        let (file, unproven) = builder.finish().map_err(|e| format!("{}: {e}", out.display()))?;
        let size = file.get_ref().metadata().map_or(0, |m| m.len());
        line.push_str(&format!(
            "; extract {}: {proven} records with the seals that prove them, {size} bytes",
            out.display()
        ));
        if unproven > 0 {
            line.push_str(&format!(
                "; {unproven} records found after the last seal are not in it (no seal covers \
                 them yet): run find again after the proxy's next seal"
            ));
            if code == 0 {
                code = 2;
            }
        }
    }
    eprintln!("{line}; the folder: {}", report.summary());
    Ok(code)
}

/// `ssp audit stats DIR [--by day,from,to,interaction,status] [--format csv|json]
/// [--key-file K0]`: requests counted per group, from the records that verified; CSV on
/// stdout with the statement of what was read on stderr, or one JSON document holding both.
/// Exit: the folder's verify code, 3 error.
pub fn stats(dir: &Path, args: &[&str]) -> u8 {
    report_error("stats", run_stats(dir, args))
}

fn run_stats(dir: &Path, args: &[&str]) -> Result<u8, String> {
    let mut by = Dim::list("day,from,to,interaction,status")?;
    let (mut json, mut key_file) = (false, None);
    for (option, value) in pairs(args)? {
        match (option, value) {
            ("--by", _) => by = Dim::list(value)?,
            ("--format", "csv" | "json") => json = value == "json",
            ("--key-file", _) => key_file = Some(Path::new(value)),
            _ => return Err(format!("unknown option {option} {value}")),
        }
    }
    let k0 = key_file.map(read_initial_key).transpose()?;
    let mut stats = Stats::new(by);
    let report = scan(dir, k0, false, &mut |_, _, line, p| {
        if let Some(f) = Fields::of(line) {
            stats.record(p.seq, &f, p.seal.is_some());
        }
        Ok(())
    })?;
    // After a tampering only what a seal before it covered is counted; otherwise the records
    // after the last seal too, which verified but are not sealed yet.
    let tampered = report.findings.iter().any(|f| f.kind == Kind::Tampered);
    let requests = stats.finish(!tampered);
    let counted = if tampered {
        "only from records sealed before the tampering".to_owned()
    } else if report.unsealed_tail > 0 {
        format!(
            "including the {} records after the last seal (not sealed yet)",
            report.unsealed_tail
        )
    } else {
        "every record sealed".to_owned()
    };
    let statement = format!(
        "{requests} requests counted, {counted}; {}; the folder: {}",
        read_line(&report),
        report.summary()
    );
    let output = if json {
        stats.json(vec![
            ("records", Val::U64(report.records)),
            ("first_seq", Val::opt_u64(report.first_seq)),
            ("last_seq", Val::opt_u64(report.last_seq)),
            ("verified", Val::Bool(report.exit_code() == 0)),
            ("requests", Val::U64(requests)),
            ("statement", Val::owned(statement)),
        ])
    } else {
        eprintln!("{statement}");
        stats.csv()
    };
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    Ok(report.exit_code())
}

/// `ssp audit verify-extract OUT --key-file K0`: one line; 0 intact, 1 it does not verify
/// (the line and why named), 3 error.
pub fn verify_extract(path: &Path, args: &[&str]) -> u8 {
    report_error("verify-extract", run_verify_extract(path, args))
}

fn run_verify_extract(path: &Path, args: &[&str]) -> Result<u8, String> {
    let key_file = match pairs(args)?.as_slice() {
        [("--key-file", file)] => Path::new(*file),
        _ => return Err("usage: ssp audit verify-extract OUT --key-file K0".into()),
    };
    let mut checker = Checker::new(read_initial_key(key_file)?);
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    for line in 1.. {
        let checked = match files::next_line(&mut reader, &mut buf, WITNESS_LINE)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            LineRead::Line { .. } => checker.line(&buf),
            LineRead::TooLong => Err("a line longer than any an extract holds".into()),
            LineRead::Eof => break,
        };
        if let Err(message) = checked {
            println!("TAMPERED: {} line {line}: {message}", path.display());
            return Ok(1);
        }
    }
    match checker.finish() {
        Ok(summary) => {
            println!("{summary}");
            Ok(0)
        }
        Err(message) => {
            println!("TAMPERED: {}: {message}", path.display());
            Ok(1)
        }
    }
}

/// A key file, or the bare hex keygen printed (epoch 0).
fn read_key(path: &Path) -> Result<Key, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Key::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The initial key, from the hex keygen printed or a key file still at epoch 0.
fn read_initial_key(path: &Path) -> Result<Key, String> {
    let key = read_key(path)?;
    if key.epoch() != 0 {
        return Err(format!(
            "{}: this key is at epoch {}; verify needs the initial key (epoch 0) that keygen printed",
            path.display(),
            key.epoch()
        ));
    }
    Ok(key)
}

/// The audit files in chain order. Files are ordered by the seq of their first record, read
/// from their contents rather than their names (the verifier then checks that each one links to
/// the one before and that names agree); a file whose first line is unreadable is placed by its
/// name, for the verifier to report.
fn chain_order(dir: &Path) -> Result<Vec<(String, Role)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (role, name_seq) = if name == ACTIVE {
            (Role::Active, u64::MAX)
        } else if let Some((time, first_seq)) = files::parse_rotated(&name) {
            (
                Role::Rotated {
                    time: time.to_owned(),
                    first_seq,
                },
                first_seq,
            )
        } else {
            continue;
        };
        let path = dir.join(&name);
        let first = first_seq(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match first {
            None if role == Role::Active && entry.metadata().is_ok_and(|m| m.len() == 0) => continue,
            first => found.push((first.unwrap_or(name_seq), name, role)),
        }
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(found.into_iter().map(|(_, name, role)| (name, role)).collect())
}

fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    Ok(match files::next_line(&mut reader, &mut buf, MAX_LINE)? {
        LineRead::Line { complete: true } => record::parse(&buf).ok().map(|p| p.seq),
        _ => None,
    })
}

/// Length and SHA-256 of a torn side file, if it is there.
fn side_file(path: &Path) -> Option<(u64, [u8; 32])> {
    let mut file = File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        length += n as u64;
    }
    Some((length, hasher.finalize().into()))
}
