//! The verifier, without I/O: fed the audit files in chain order, line by line, it checks
//! every hash, seq, link, file boundary and (given the initial key) every seal. `cli::verify`
//! reads the directory and prints the [`Report`].
//!
//! What counts as what (the exit codes of SPEC section 2):
//! - tampered (1): a line that does not hash or parse, a seq or `prev` that does not follow
//!   inside a file or across contiguous files, a record type out of place, a rotated file whose
//!   name disagrees with its contents, a seal whose epoch or MAC is wrong, a torn side file that
//!   does not match its declaration;
//! - gap (2): records missing between files or before the first one, a rotated file that does
//!   not end with `close`;
//! - unsealed (2, only when sealing is required): records after the last seal, or an
//!   incomplete last line;
//! - truncated (2): a rotated file that does not end with `close`, or (given the box's current
//!   key file) a chain that ends at a seal older than that key allows: see [`KeyEnd`];
//! - cut (4) and forked (5): what a witness (records shipped off the box) shows; see
//!   `witness.rs`.

use super::files;
use super::record::{self, GENESIS, Parsed, TornClaim};
use super::seal::Key;

/// The kind of file being fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `audit.jsonl`: must be the newest file; may end anywhere.
    Active,
    /// A renamed file, with the time and first seq its name claims.
    Rotated { time: String, first_seq: u64 },
}

/// What a finding means for the exit code: tampered is 1, cut 4, forked 5, the rest 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tampered,
    Gap,
    Truncated,
    Unsealed,
    /// A seal the witness holds is not in the folder: sealed records were removed.
    Cut,
    /// A seal the witness holds has another hash here: the chain was rolled back and written
    /// again, or forked.
    Forked,
}

impl Kind {
    /// Which finding the summary names first: changed records before removed ones, removed
    /// ones before records merely missing or unsealed (each kind's exit code tells them apart).
    fn rank(self) -> u8 {
        match self {
            Kind::Tampered => 0,
            Kind::Forked => 1,
            Kind::Cut => 2,
            Kind::Gap | Kind::Truncated | Kind::Unsealed => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub file: String,
    pub line: Option<u64>,
    pub seq: Option<u64>,
    pub message: String,
}

/// A `torn` record, for the caller to check against its side file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornAt {
    pub file: String,
    pub line: u64,
    pub seq: u64,
    pub claim: TornClaim,
}

/// What the end of the chain says about the box's key file (`[audit] key`). The key file only
/// moves forward, and whoever lacks an earlier key cannot move it back, so it outlives a cut:
/// records removed from the end of the audit take their seals with them, but not the key
/// evolutions those seals spent. The rule is AUDIT.md's "The box's key and a cut end".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyEnd {
    /// The epoch of the last seal.
    pub seal: Option<u64>,
    /// The key epoch the last `start` after that seal declared: a restart since.
    pub declared: Option<u64>,
    /// The last seal is the one a clean stop writes right after its `stop` record.
    pub stopped: bool,
}

impl KeyEnd {
    /// The highest epoch the box's key file can be at if nothing was cut from the end.
    ///
    /// The writer evolves the key file before it writes the seal made with the old key (so the
    /// box never holds a key that made a seal on disk), and evolves it again only after that
    /// seal is written. So after seal `n` the key file is at `n + 1`, and at `n + 2` while the
    /// next seal is being written, while the audit cannot be written, or after a crash in
    /// between. A clean stop writes `stop` and its seal and exits: exactly `n + 1`. A restart
    /// declares the key it loaded, `d`, and can evolve it once before it crashes unsealed.
    pub fn max_epoch(&self) -> Option<u64> {
        match (self.declared, self.seal) {
            (Some(d), _) => Some(d.saturating_add(1)),
            (None, Some(n)) if self.stopped => Some(n.saturating_add(1)),
            (None, Some(n)) => Some(n.saturating_add(2)),
            (None, None) => None,
        }
    }

    /// The lowest epoch the key file can be at once this end was written: one past the last
    /// seal, or what the last restart declared.
    fn min_epoch(&self) -> Option<u64> {
        self.declared.or(self.seal.map(|n| n.saturating_add(1)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The seq of the last seal (whose MAC verified, when a key was given).
    pub sealed_through: Option<u64>,
    pub seals: u64,
    pub macs_checked: bool,
    /// Records after the last seal.
    pub unsealed_tail: u64,
    pub torn: Vec<TornAt>,
    /// How the chain ends, for [`Report::check_current_key`].
    pub key_end: KeyEnd,
    /// The epoch of the box's key file, once checked against the chain.
    pub current_key: Option<u64>,
    /// Seals in the witness, and how many of them were found here unchanged.
    pub witness: Option<(u64, u64)>,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        match self.worst().map(|f| f.kind) {
            None => 0,
            Some(Kind::Tampered) => 1,
            Some(Kind::Cut) => 4,
            Some(Kind::Forked) => 5,
            Some(_) => 2,
        }
    }

    /// The first finding of the most serious kind found (see [`Kind::rank`]).
    pub fn worst(&self) -> Option<&Finding> {
        self.findings.iter().min_by_key(|f| f.kind.rank())
    }

    /// Checks each `torn` declaration against its side file: `side(name)` gives the side
    /// file's length and SHA-256, or `None` if it is not there (the declaration then stands).
    pub fn check_torn(&mut self, mut side: impl FnMut(&str) -> Option<(u64, [u8; 32])>) {
        for torn in std::mem::take(&mut self.torn) {
            let claim = &torn.claim;
            let problem = if !files::is_torn_name(&claim.file) {
                Some(format!("torn record names {:?}, not a side file", claim.file))
            } else {
                match side(&claim.file) {
                    Some((length, sha256)) if (length, sha256) != (claim.length, claim.sha256) => {
                        Some(format!("{} does not match its torn record", claim.file))
                    }
                    Some(_) => None,
                    None => {
                        self.notes
                            .push(format!("{} declared torn bytes are not present", claim.file));
                        None
                    }
                }
            };
            if let Some(message) = problem {
                self.findings.push(Finding {
                    kind: Kind::Tampered,
                    file: torn.file.clone(),
                    line: Some(torn.line),
                    seq: Some(torn.seq),
                    message,
                });
            }
            self.torn.push(torn);
        }
    }

    /// Compares the box's current key file (`--current-key`) with the end of the chain: a key
    /// further on than [`KeyEnd::max_epoch`] allows means sealed records were cut from the end.
    /// `k0`, the initial key, shows first that the key is this chain's at all; without it the
    /// key file's epoch is taken at its word. `file` names the key file in findings.
    pub fn check_current_key(&mut self, file: &str, key: &Key, k0: Option<&Key>) {
        let epoch = key.epoch();
        self.current_key = Some(epoch);
        if let Some(k0) = k0
            && k0.advance_to(epoch).as_ref() != Some(key)
        {
            // Not a cut: this key's epoch says nothing about this audit.
            self.findings.push(Finding {
                kind: Kind::Tampered,
                file: file.to_owned(),
                line: None,
                seq: None,
                message: format!(
                    "this key (epoch {epoch}) does not derive from the initial key given with \
                     --key-file: it is another chain's key (another box, or a new keygen), or the \
                     box's key file was replaced or its epoch edited"
                ),
            });
            return;
        }
        // A tampered chain's seals bound nothing; it already fails.
        if self.findings.iter().any(|f| f.kind == Kind::Tampered) {
            return;
        }
        let end = self.key_end;
        let Some(max) = end.max_epoch() else {
            self.notes.push(
                "the box's key cannot be compared with this audit: it has no seal, and no start \
                 that names a key epoch"
                    .into(),
            );
            return;
        };
        if epoch > max {
            let message = match (end.seal, end.declared) {
                (Some(n), None) => format!(
                    "the audit ends at seal epoch {n} but the box's key is at epoch {epoch}, so \
                     records sealed after epoch {n} are missing"
                ),
                (Some(n), Some(d)) => format!(
                    "the audit ends at seal epoch {n} and a restart with key epoch {d}, but the \
                     box's key is at epoch {epoch}, so records written after them are missing"
                ),
                (None, _) => format!(
                    "the audit has no seal and its last start declared key epoch {}, but the \
                     box's key is at epoch {epoch}, so sealed records are missing",
                    end.declared.unwrap_or_default()
                ),
            };
            self.findings.push(Finding {
                kind: Kind::Truncated,
                file: files::ACTIVE.into(),
                line: None,
                seq: self.last_seq,
                message,
            });
        } else if end.min_epoch().is_some_and(|min| epoch < min) {
            self.notes.push(format!(
                "the box's key (epoch {epoch}) is older than the end of this audit: it was copied \
                 before the audit was, or an older copy of it was restored"
            ));
        } else if epoch == max && end.declared.is_none() && !end.stopped {
            // The one end a cut cannot be told from: see `KeyEnd::max_epoch`.
            self.notes.push(
                "the box's key is two epochs past the last seal: a seal was being written, could \
                 not be written, or was lost in a crash, or the last seal interval was cut; \
                 verify again after the proxy's next seal or restart"
                    .into(),
            );
        }
    }

    /// One line for the operator.
    pub fn summary(&self) -> String {
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}..{b}"),
            _ => "no records".into(),
        };
        let sealed = match self.sealed_through {
            Some(s) if self.macs_checked => format!("sealed through seq {s} (MACs verified)"),
            Some(s) => format!("sealed through seq {s} (MACs not checked: no key)"),
            None => "never sealed".into(),
        };
        let status = match self.worst() {
            None => "intact".to_owned(),
            Some(f) => {
                let label = match f.kind {
                    Kind::Tampered => "TAMPERED",
                    Kind::Gap => "GAP",
                    Kind::Truncated => "TRUNCATED",
                    Kind::Unsealed => "UNSEALED",
                    Kind::Cut => "CUT",
                    Kind::Forked => "FORKED",
                };
                let line = f.line.map_or_else(String::new, |l| format!(" line {l}"));
                let seq = f.seq.map_or_else(String::new, |s| format!(" seq {s}"));
                format!("{label}: {}{line}{seq}: {}", f.file, f.message)
            }
        };
        let key = self
            .current_key
            .map_or_else(String::new, |e| format!(", box key at epoch {e}"));
        let witness = self.witness.map_or_else(String::new, |(seals, found)| {
            format!(", {found} of the witness's {seals} seals found here")
        });
        let mut out = format!(
            "{status}; {} files, {} records, {range}, {sealed}{key}{witness}, unsealed tail {} records",
            self.files, self.records, self.unsealed_tail
        );
        for note in &self.notes {
            out.push_str("; note: ");
            out.push_str(note);
        }
        out
    }
}

struct FileState {
    name: String,
    role: Role,
    line: u64,
    records: u64,
    last: Option<Parsed>,
}

pub struct Verifier {
    k0: Option<Key>,
    /// The last key derived, so consecutive seals cost one hash each.
    cursor: Option<Key>,
    report: Report,
    last: Option<(u64, [u8; 32])>,
    expected_epoch: Option<u64>,
    /// The key epoch a `start` declared since the last seal: the only allowed epoch jump.
    declared_epoch: Option<u64>,
    /// `start` records since the last seal: each restart can have lost at most one seal.
    starts: u64,
    /// The last record was `stop`: a seal now is a clean stop's last.
    after_stop: bool,
    file: Option<FileState>,
    active_seen: bool,
    incomplete: bool,
    /// After a tampering nothing later can be trusted or usefully checked.
    stopped: bool,
}

impl Verifier {
    /// `k0`: the initial key, to check seals; `None` checks everything else.
    pub fn new(k0: Option<Key>) -> Verifier {
        let report = Report {
            macs_checked: k0.is_some(),
            ..Report::default()
        };
        Verifier {
            k0,
            cursor: None,
            report,
            last: None,
            expected_epoch: None,
            declared_epoch: None,
            starts: 0,
            after_stop: false,
            file: None,
            active_seen: false,
            incomplete: false,
            stopped: false,
        }
    }

    pub fn begin_file(&mut self, name: &str, role: Role) {
        self.end_file();
        self.report.files += 1;
        let active = role == Role::Active;
        self.file = Some(FileState {
            name: name.to_owned(),
            role,
            line: 0,
            records: 0,
            last: None,
        });
        if self.active_seen {
            let message = format!(
                "its records follow those of {}, which must be the newest file",
                files::ACTIVE
            );
            self.finding(Kind::Tampered, None, None, message);
        }
        self.active_seen |= active;
    }

    /// A complete line, without its newline.
    pub fn line(&mut self, bytes: &[u8]) {
        self.accept(bytes);
    }

    /// As [`Verifier::line`], giving back the record if it verified: its hash, its link to the
    /// record before (unless a gap was just reported) and its place; a seal's MAC too when the
    /// initial key was given. `find`, `stats` and the witness see only such records.
    pub fn accept(&mut self, bytes: &[u8]) -> Option<&Parsed> {
        let line = self.next_line()?;
        let expected = self.last.map_or(0, |(seq, _)| seq.saturating_add(1));
        let parsed = match record::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.finding(Kind::Tampered, Some(line), Some(expected), e);
                return None;
            }
        };
        match self.follows(&parsed) {
            Ok(()) => {}
            Err((Kind::Tampered, message)) => {
                self.finding(Kind::Tampered, Some(line), Some(parsed.seq), message);
                return None;
            }
            // After a gap the chain resumes with this record.
            Err((kind, message)) => self.finding(kind, Some(line), Some(parsed.seq), message),
        }
        if let Err(message) = self.placement(&parsed).and_then(|()| self.check_seal(&parsed)) {
            self.finding(Kind::Tampered, Some(line), Some(parsed.seq), message);
            return None;
        }
        if let Some(claim) = &parsed.torn {
            let file = self.file_name();
            self.report.torn.push(TornAt {
                file,
                line,
                seq: parsed.seq,
                claim: claim.clone(),
            });
        }
        let report = &mut self.report;
        report.records += 1;
        report.first_seq.get_or_insert(parsed.seq);
        report.last_seq = Some(parsed.seq);
        report.unsealed_tail = if parsed.seal.is_some() {
            0
        } else {
            report.unsealed_tail + 1
        };
        self.last = Some((parsed.seq, parsed.h));
        self.after_stop = parsed.kind == "stop";
        let file = self.file.as_mut()?;
        file.records += 1;
        file.last = Some(parsed);
        file.last.as_ref()
    }

    /// The file ended without a newline after its last bytes.
    pub fn partial_line(&mut self) {
        let Some(line) = self.next_line() else { return };
        if self.file.as_ref().is_some_and(|f| f.role == Role::Active) {
            self.incomplete = true;
            self.report.notes.push(format!(
                "{} ends with an incomplete line (being written, or torn)",
                files::ACTIVE
            ));
        } else {
            self.finding(
                Kind::Tampered,
                Some(line),
                None,
                "incomplete last line in a rotated file".into(),
            );
        }
    }

    /// A line longer than any record.
    pub fn overlong_line(&mut self) {
        let Some(line) = self.next_line() else { return };
        self.finding(
            Kind::Tampered,
            Some(line),
            None,
            format!("line longer than {} bytes", record::MAX_LINE),
        );
    }

    pub fn finish(mut self, require_sealed: bool) -> Report {
        self.end_file();
        if require_sealed && !self.stopped && (self.report.unsealed_tail > 0 || self.incomplete) {
            let after = self
                .report
                .sealed_through
                .map_or_else(|| "no seal at all".into(), |s| format!("after seq {s}"));
            let message = format!("{} records are not sealed ({after})", self.report.unsealed_tail);
            self.report.findings.push(Finding {
                kind: Kind::Unsealed,
                file: files::ACTIVE.into(),
                line: None,
                seq: self.report.last_seq,
                message,
            });
        }
        self.report
    }

    fn next_line(&mut self) -> Option<u64> {
        let file = self.file.as_mut()?;
        file.line += 1;
        (!self.stopped).then_some(file.line)
    }

    fn file_name(&self) -> String {
        self.file.as_ref().map_or_else(String::new, |f| f.name.clone())
    }

    /// Does the record continue the chain? `Err((kind, why))` if not.
    fn follows(&self, p: &Parsed) -> Result<(), (Kind, String)> {
        let first_in_file = self.file.as_ref().is_some_and(|f| f.records == 0);
        let Some((seq, h)) = self.last else {
            return match (p.seq, p.prev == GENESIS) {
                (0, true) => Ok(()),
                (0, false) => Err((
                    Kind::Tampered,
                    "the first record does not link to the genesis hash".into(),
                )),
                (n, _) => Err((
                    Kind::Gap,
                    format!("the chain starts at seq {n}: the files before it are missing"),
                )),
            };
        };
        if seq.checked_add(1) == Some(p.seq) {
            if p.prev != h {
                return Err((
                    Kind::Tampered,
                    format!("prev does not match the hash of seq {seq}"),
                ));
            }
            return Ok(());
        }
        if first_in_file && p.seq > seq.saturating_add(1) {
            return Err((
                Kind::Gap,
                format!(
                    "seq {}..{} are missing: a file was removed",
                    seq.saturating_add(1),
                    p.seq - 1
                ),
            ));
        }
        Err((Kind::Tampered, format!("seq {} follows seq {seq}", p.seq)))
    }

    /// `open` first in every file and only there; nothing after `close`; names that match.
    fn placement(&self, p: &Parsed) -> Result<(), String> {
        let Some(file) = &self.file else { return Ok(()) };
        let first = file.records == 0;
        if first && p.kind != "open" {
            return Err("the file does not start with an open record".into());
        }
        if !first && p.kind == "open" {
            return Err("an open record inside a file".into());
        }
        if file.last.as_ref().is_some_and(|l| l.kind == "close") {
            return Err("a record after close".into());
        }
        match &file.role {
            Role::Rotated { first_seq, .. } if first && *first_seq != p.seq => {
                Err(format!("the file name says it starts at seq {first_seq}"))
            }
            _ => Ok(()),
        }
    }

    fn check_seal(&mut self, p: &Parsed) -> Result<(), String> {
        if p.kind == "start" {
            self.declared_epoch = p.key_epoch;
            self.starts += 1;
            // A start without a key (sealing off) did not touch the key file.
            if p.key_epoch.is_some() {
                self.report.key_end.declared = p.key_epoch;
            }
        }
        let Some((epoch, mac)) = p.seal else { return Ok(()) };
        // Epochs only go forward: a jump is a crash between evolving the key file and writing
        // its seal, which the next `start` declares; going back means an old key was reused.
        // One crash loses one seal, so a jump is at most one epoch per restart: any more would
        // let whoever holds the current key cut sealed records away and seal what is left.
        let declared_jump = self.declared_epoch.is_some_and(|d| d == epoch);
        let skipped = match self.expected_epoch {
            Some(expected) if epoch == expected => None,
            Some(expected) if declared_jump && epoch > expected && epoch - expected <= self.starts => {
                Some(expected)
            }
            Some(expected) => return Err(format!("seal epoch {epoch}, expected {expected}")),
            None => {
                // Not an error (a new folder may be started with an evolved key file), but
                // also what a chain written afresh with a stolen later key looks like.
                if epoch > 0 && self.report.first_seq == Some(0) {
                    self.report.notes.push(format!(
                        "the chain starts at seq 0 but its first seal (seq {}) uses key epoch {epoch}: \
                         the key had evolved before this chain began",
                        p.seq
                    ));
                }
                None
            }
        };
        if self.k0.is_some() {
            let key = self
                .key_at(epoch)
                .ok_or("seal epoch precedes the key given, or is implausibly far after it")?;
            if key.mac(p.seq, &p.prev, &p.ts) != mac {
                return Err("the seal's MAC does not verify: records before it were changed, or the key is not this chain's"
                    .into());
            }
        }
        if let Some(from) = skipped {
            self.report.notes.push(format!(
                "seal epochs {from}..{} were never written (lost in crashes, declared by restarts before seq {})",
                epoch - 1,
                p.seq
            ));
        }
        self.expected_epoch = Some(epoch.saturating_add(1));
        self.declared_epoch = None;
        self.starts = 0;
        self.report.seals += 1;
        self.report.sealed_through = Some(p.seq);
        self.report.key_end = KeyEnd {
            seal: Some(epoch),
            declared: None,
            stopped: self.after_stop,
        };
        Ok(())
    }

    fn key_at(&mut self, epoch: u64) -> Option<Key> {
        let from = match &self.cursor {
            Some(c) if c.epoch() <= epoch => c,
            _ => self.k0.as_ref()?,
        };
        let key = from.advance_to(epoch)?;
        self.cursor = Some(key.clone());
        Some(key)
    }

    fn end_file(&mut self) {
        let Some(file) = self.file.take() else { return };
        if self.stopped {
            return;
        }
        let Role::Rotated { time, .. } = &file.role else {
            return;
        };
        let problem = match &file.last {
            None => Some((Kind::Tampered, "a rotated file with no records".to_owned())),
            Some(last) if last.kind != "close" => Some((
                Kind::Truncated,
                "the rotated file does not end with a close record: it was cut short".to_owned(),
            )),
            Some(last) if record::compact_ts(&last.ts).as_deref() != Some(time.as_str()) => Some((
                Kind::Tampered,
                format!(
                    "the file name's time does not match its close record ({})",
                    last.ts
                ),
            )),
            Some(_) => None,
        };
        if let Some((kind, message)) = problem {
            let seq = file.last.as_ref().map(|l| l.seq);
            self.file = Some(file);
            self.finding(kind, None, seq, message);
            self.file = None;
        }
    }

    fn finding(&mut self, kind: Kind, line: Option<u64>, seq: Option<u64>, message: String) {
        let file = self.file_name();
        self.report.findings.push(Finding {
            kind,
            file,
            line,
            seq,
            message,
        });
        self.stopped |= kind == Kind::Tampered;
        if kind != Kind::Tampered {
            // The chain resumes after a gap: later links and seal epochs are checked from here.
            self.last = None;
            self.expected_epoch = None;
            self.declared_epoch = None;
            self.starts = 0;
            // What the missing records did to the key is unknown: later ones say it again.
            self.report.key_end = KeyEnd::default();
            self.after_stop = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Event;
    use crate::audit::record::{Entry, Head, line};

    const TS: &str = "2026-03-21T10:04:05.123Z";
    const K0: [u8; 32] = [5; 32];

    /// Builds a chain like the writer does: `kinds` per file, seals made with K0's epochs.
    fn build(files: &[&[&str]]) -> Vec<Vec<Vec<u8>>> {
        let mut head = Head::GENESIS;
        let mut key = Key::new(0, K0);
        let mut out = Vec::new();
        for kinds in files {
            let mut lines = Vec::new();
            for kind in *kinds {
                let (kind, n) = match kind.split_once('=') {
                    Some((k, n)) => (k, n.parse::<u64>().ok()),
                    None => (*kind, None),
                };
                let entry = match kind {
                    "open" => Entry::Open { previous: None },
                    "close" => Entry::Close { reason: "size" },
                    "stop" => Entry::Stop {
                        reason: "SIGTERM".into(),
                    },
                    "start" => Entry::Start {
                        version: "t".into(),
                        config_hash: [0; 32],
                        boot_id: [0; 16],
                        pid: 1,
                        sync: "batch",
                        key_epoch: n,
                    },
                    "seal" => {
                        if let Some(n) = n {
                            key = Key::new(0, K0).advance_to(n).unwrap();
                        }
                        let e = Entry::Seal {
                            epoch: key.epoch(),
                            mac: key.mac(head.next_seq, &head.prev, TS),
                        };
                        key = key.next();
                        e
                    }
                    _ => Entry::Event(Box::new(Event::Alarm { message: kind.into() })),
                };
                let l = line(head.next_seq, TS, &entry, &head.prev);
                head = Head {
                    next_seq: head.next_seq + 1,
                    prev: l.h,
                };
                lines.push(l.bytes[..l.bytes.len() - 1].to_vec());
            }
            out.push(lines);
        }
        out
    }

    fn run(files: &[Vec<Vec<u8>>], key: Option<Key>, require_sealed: bool) -> Report {
        let mut v = Verifier::new(key);
        let mut first_seq = 0;
        for (i, lines) in files.iter().enumerate() {
            if i + 1 == files.len() {
                v.begin_file("audit.jsonl", Role::Active);
            } else {
                let time = "20260321T100405Z".to_owned();
                v.begin_file(&format!("f{i}"), Role::Rotated { time, first_seq });
            }
            first_seq += lines.len() as u64;
            for l in lines {
                v.line(l);
            }
        }
        v.finish(require_sealed)
    }

    fn standard() -> Vec<Vec<Vec<u8>>> {
        build(&[
            &["open", "a", "seal", "close"],
            &["open", "b", "seal", "close"],
            &["open", "c", "seal"],
        ])
    }

    #[test]
    fn an_intact_chain_verifies_with_its_key() {
        let report = run(&standard(), Some(Key::new(0, K0)), true);
        assert_eq!(report.exit_code(), 0, "{}", report.summary());
        assert_eq!((report.files, report.records, report.seals), (3, 11, 3));
        assert_eq!((report.sealed_through, report.unsealed_tail), (Some(10), 0));
        assert_eq!(
            report.summary(),
            "intact; 3 files, 11 records, seq 0..10, sealed through seq 10 (MACs verified), unsealed tail 0 records"
        );
    }

    #[test]
    fn a_changed_deleted_inserted_duplicated_or_reordered_line_is_tampering() {
        let good = standard();
        let mut changed = good.clone();
        changed[1][1][20] ^= 1;
        let mut deleted = good.clone();
        deleted[1].remove(1);
        let mut inserted = good.clone();
        inserted[1].insert(1, good[0][1].clone());
        let mut duplicated = good.clone();
        duplicated[1].insert(1, good[1][1].clone());
        let mut reordered = good.clone();
        reordered[1].swap(1, 2);
        // The copy of line 2 is line 3: the first record that does not follow.
        for (name, files, line) in [
            ("changed", changed, 2),
            ("deleted", deleted, 2),
            ("inserted", inserted, 2),
            ("duplicated", duplicated, 3),
            ("reordered", reordered, 2),
        ] {
            let report = run(&files, None, false);
            assert_eq!(report.exit_code(), 1, "{name}: {}", report.summary());
            let f = report.worst().unwrap();
            assert_eq!(
                (f.file.as_str(), f.line),
                ("f1", Some(line)),
                "{name}: {}",
                report.summary()
            );
        }
    }

    #[test]
    fn a_missing_middle_file_is_a_gap_and_a_missing_first_file_too() {
        let mut files = standard();
        files.remove(1);
        let mut v = Verifier::new(None);
        v.begin_file(
            "f0",
            Role::Rotated {
                time: "20260321T100405Z".into(),
                first_seq: 0,
            },
        );
        files[0].iter().for_each(|l| v.line(l));
        v.begin_file("audit.jsonl", Role::Active);
        files[1].iter().for_each(|l| v.line(l));
        let report = v.finish(false);
        assert_eq!(report.exit_code(), 2, "{}", report.summary());
        assert!(
            report.summary().contains("seq 4..7 are missing"),
            "{}",
            report.summary()
        );

        let mut v = Verifier::new(None);
        v.begin_file("audit.jsonl", Role::Active);
        standard()[2].iter().for_each(|l| v.line(l));
        assert_eq!(v.finish(false).exit_code(), 2);
    }

    #[test]
    fn a_rotated_file_must_match_its_name_and_end_with_close() {
        let files = standard();
        let mut v = Verifier::new(None);
        v.begin_file(
            "f0",
            Role::Rotated {
                time: "20260321T100405Z".into(),
                first_seq: 4,
            },
        );
        files[0].iter().for_each(|l| v.line(l));
        assert!(
            v.finish(false)
                .summary()
                .contains("file name says it starts at seq 4")
        );

        let mut v = Verifier::new(None);
        v.begin_file(
            "f0",
            Role::Rotated {
                time: "20990101T000000Z".into(),
                first_seq: 0,
            },
        );
        files[0].iter().for_each(|l| v.line(l));
        assert_eq!(v.finish(false).exit_code(), 1);

        let mut v = Verifier::new(None);
        v.begin_file(
            "f0",
            Role::Rotated {
                time: "20260321T100405Z".into(),
                first_seq: 0,
            },
        );
        files[0][..3].iter().for_each(|l| v.line(l));
        let report = v.finish(false);
        assert_eq!(report.exit_code(), 2, "{}", report.summary());
    }

    #[test]
    fn the_active_file_must_be_the_newest() {
        let files = standard();
        let mut v = Verifier::new(None);
        v.begin_file("audit.jsonl", Role::Active);
        files[0].iter().for_each(|l| v.line(l));
        v.begin_file(
            "f1",
            Role::Rotated {
                time: "20260321T100405Z".into(),
                first_seq: 4,
            },
        );
        files[1].iter().for_each(|l| v.line(l));
        assert_eq!(v.finish(false).exit_code(), 1);
    }

    #[test]
    fn seals_fail_with_the_wrong_key() {
        let report = run(&standard(), Some(Key::new(0, [6; 32])), false);
        assert_eq!(report.exit_code(), 1);
        assert!(
            report.summary().contains("MAC does not verify"),
            "{}",
            report.summary()
        );
        // Without a key the same chain only shows where the seals are.
        let report = run(&standard(), None, false);
        assert!(
            report.summary().contains("MACs not checked"),
            "{}",
            report.summary()
        );
    }

    #[test]
    fn seal_epochs_must_follow_unless_a_start_declares_the_jump() {
        let k0 = || Some(Key::new(0, K0));
        let skipped = build(&[&["open", "seal", "a", "seal=2"]]);
        let report = run(&skipped, k0(), false);
        assert_eq!(report.exit_code(), 1);
        assert!(
            report.summary().contains("seal epoch 2, expected 1"),
            "{}",
            report.summary()
        );
        let declared = build(&[&["open", "seal", "start=2", "seal=2"]]);
        let report = run(&declared, k0(), false);
        assert_eq!(report.exit_code(), 0, "{}", report.summary());
        assert!(
            report.summary().contains("seal epochs 1..1 were never written"),
            "{}",
            report.summary()
        );
        // One restart loses at most one seal: a longer jump needs as many restarts.
        let too_far = build(&[&["open", "seal", "start=3", "seal=3"]]);
        assert_eq!(run(&too_far, k0(), false).exit_code(), 1);
        let two_restarts = build(&[&["open", "seal", "start=2", "a", "start=3", "seal=3"]]);
        assert_eq!(run(&two_restarts, k0(), false).exit_code(), 0);
        let late_key = run(&build(&[&["open", "a", "seal=4"]]), None, false);
        assert_eq!(late_key.exit_code(), 0, "{}", late_key.summary());
        assert!(
            late_key.summary().contains("first seal (seq 2) uses key epoch 4"),
            "{}",
            late_key.summary()
        );
        let replayed = build(&[&["open", "seal", "seal=0"]]);
        assert_eq!(run(&replayed, k0(), false).exit_code(), 1);
        // An old key file restored and declared: still going back.
        let restored = build(&[&["open", "seal", "seal", "start=1", "seal=1"]]);
        assert_eq!(run(&restored, k0(), false).exit_code(), 1);
    }

    #[test]
    fn unsealed_records_only_matter_when_sealing_is_required() {
        let files = build(&[&["open", "a", "seal", "b", "c"]]);
        let report = run(&files, Some(Key::new(0, K0)), false);
        assert_eq!(
            (report.exit_code(), report.unsealed_tail, report.sealed_through),
            (0, 2, Some(2))
        );
        let report = run(&files, Some(Key::new(0, K0)), true);
        assert_eq!(report.exit_code(), 2, "{}", report.summary());
        assert!(
            report
                .summary()
                .contains("2 records are not sealed (after seq 2)")
        );
    }

    #[test]
    fn an_incomplete_last_line_is_a_note_unless_sealing_is_required() {
        let files = build(&[&["open", "seal"]]);
        let mut v = Verifier::new(None);
        v.begin_file("audit.jsonl", Role::Active);
        files[0].iter().for_each(|l| v.line(l));
        v.partial_line();
        let report = v.finish(false);
        assert_eq!(report.exit_code(), 0);
        assert!(report.summary().contains("incomplete line"));
    }

    #[test]
    fn torn_declarations_are_checked_against_their_side_file() {
        let claim = TornClaim {
            file: "audit.jsonl.torn-3".into(),
            length: 4,
            sha256: [1; 32],
        };
        let torn = |claim: TornClaim| TornAt {
            file: "audit.jsonl".into(),
            line: 3,
            seq: 3,
            claim,
        };
        let mut report = Report {
            torn: vec![torn(claim.clone())],
            ..Report::default()
        };
        report.check_torn(|_| Some((4, [1; 32])));
        assert_eq!(report.exit_code(), 0);
        report.check_torn(|_| None);
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.notes.len(), 1);
        report.check_torn(|_| Some((4, [2; 32])));
        assert_eq!(report.exit_code(), 1);
        let mut report = Report {
            torn: vec![torn(TornClaim {
                file: "../x".into(),
                ..claim
            })],
            ..Report::default()
        };
        report.check_torn(|_| None);
        assert_eq!(report.exit_code(), 1);
    }

    /// The chain's report after comparing the box's key, at `epoch` on K0's chain.
    fn with_key_at(kinds: &[&str], epoch: u64) -> Report {
        let mut report = run(&build(&[kinds]), Some(Key::new(0, K0)), false);
        let key = Key::new(0, K0).advance_to(epoch).unwrap();
        report.check_current_key("audit.key", &key, Some(&Key::new(0, K0)));
        report
    }

    #[test]
    fn a_box_key_further_on_than_the_chain_end_allows_is_truncation() {
        // Running: seals 0, 1, 2 leave the key at 3, or 4 while seal 3 is being made.
        let running = ["open", "a", "seal", "b", "seal", "c", "seal"];
        let report = with_key_at(&running, 3);
        assert_eq!(
            (report.exit_code(), report.notes.len()),
            (0, 0),
            "{}",
            report.summary()
        );
        assert!(
            report.summary().contains("box key at epoch 3"),
            "{}",
            report.summary()
        );
        let report = with_key_at(&running, 4);
        assert_eq!(report.exit_code(), 0, "{}", report.summary());
        assert!(
            report.summary().contains("two epochs past the last seal"),
            "{}",
            report.summary()
        );
        let report = with_key_at(&running, 5);
        assert_eq!(report.exit_code(), 2, "{}", report.summary());
        assert!(
            report.summary().starts_with(
                "TRUNCATED: audit.jsonl seq 6: the audit ends at seal epoch 2 but the box's key is \
                 at epoch 5, so records sealed after epoch 2 are missing;"
            ),
            "{}",
            report.summary()
        );
        // The same chain cut back to its first seal.
        assert_eq!(with_key_at(&running[..3], 3).exit_code(), 2);
    }

    #[test]
    fn after_a_clean_stop_the_key_is_exactly_one_epoch_on() {
        let stopped = ["open", "a", "seal", "b", "stop", "seal"];
        assert_eq!(with_key_at(&stopped, 2).exit_code(), 0);
        let report = with_key_at(&stopped, 3);
        assert_eq!(report.exit_code(), 2, "{}", report.summary());
        assert!(
            report
                .summary()
                .contains("ends at seal epoch 1 but the box's key is at epoch 3"),
            "{}",
            report.summary()
        );
        // A stop whose seal was not written (the key could not be evolved) is not clean.
        assert_eq!(with_key_at(&["open", "seal", "stop"], 2).exit_code(), 0);
        // Records after the stop's seal from a start that failed do not move the key.
        assert_eq!(
            with_key_at(&["open", "seal", "stop", "seal", "start"], 2).exit_code(),
            0
        );
    }

    #[test]
    fn a_restart_since_the_last_seal_bounds_the_key_by_what_it_declared() {
        // Seal 0, a crash after the key evolved for seal 1, a restart declaring 2 that crashed
        // after evolving the key again: 3.
        let restarted = ["open", "seal", "a", "start=2", "b"];
        assert_eq!(with_key_at(&restarted, 3).exit_code(), 0);
        let report = with_key_at(&restarted, 4);
        assert_eq!(report.exit_code(), 2, "{}", report.summary());
        assert!(
            report
                .summary()
                .contains("a restart with key epoch 2, but the box's key is at epoch 4"),
            "{}",
            report.summary()
        );
        // A start without a key did not touch it.
        assert_eq!(with_key_at(&["open", "seal", "start", "a"], 2).exit_code(), 0);
        assert_eq!(with_key_at(&["open", "seal", "start", "a"], 3).exit_code(), 2);
        // No seal yet: only the start's declaration bounds the key.
        assert_eq!(with_key_at(&["open", "start=0", "a"], 1).exit_code(), 0);
        let report = with_key_at(&["open", "start=0", "a"], 2);
        assert!(
            report
                .summary()
                .contains("no seal and its last start declared key epoch 0")
        );
        let report = with_key_at(&["open", "a"], 5);
        assert_eq!(report.exit_code(), 0);
        assert!(
            report.summary().contains("cannot be compared"),
            "{}",
            report.summary()
        );
    }

    #[test]
    fn a_box_key_behind_the_chain_is_a_note() {
        let report = with_key_at(&["open", "seal", "seal", "seal"], 1);
        assert_eq!(report.exit_code(), 0);
        assert!(
            report.summary().contains("older than the end of this audit"),
            "{}",
            report.summary()
        );
    }

    #[test]
    fn another_chains_key_is_named_as_such_not_as_truncation() {
        let chain = ["open", "seal"];
        let mut report = run(&build(&[&chain]), Some(Key::new(0, K0)), false);
        let stranger = Key::new(0, [6; 32]).advance_to(9).unwrap();
        report.check_current_key("audit.key", &stranger, Some(&Key::new(0, K0)));
        assert_eq!(report.exit_code(), 1, "{}", report.summary());
        assert!(
            report
                .summary()
                .starts_with("TAMPERED: audit.key: this key (epoch 9) does not derive")
        );
        assert!(report.findings.iter().all(|f| f.kind != Kind::Truncated));
        // So is K0's key with its epoch number edited down.
        let mut edited = run(&build(&[&chain]), Some(Key::new(0, K0)), false);
        let later = Key::new(0, K0).advance_to(9).unwrap();
        edited.check_current_key("audit.key", &Key::new(2, *later.bytes()), Some(&Key::new(0, K0)));
        assert_eq!(edited.exit_code(), 1, "{}", edited.summary());
        // Without the initial key the epoch is taken at its word.
        let mut unchecked = run(&build(&[&chain]), None, false);
        unchecked.check_current_key("audit.key", &stranger, None);
        assert_eq!(unchecked.exit_code(), 2, "{}", unchecked.summary());
    }

    #[test]
    fn a_tampered_chain_or_a_gap_bounds_nothing() {
        let mut files = build(&[&["open", "seal", "a", "seal"]]);
        files[0][2][20] ^= 1;
        let mut report = run(&files, None, false);
        report.check_current_key("audit.key", &Key::new(40, [0; 32]), None);
        assert_eq!(report.findings.len(), 1, "{}", report.summary());
        // After a gap the chain's end is read afresh from the records after it.
        let files = build(&[
            &["open", "seal", "seal", "close"],
            &["open", "a", "close"],
            &["open", "b"],
        ]);
        let mut v = Verifier::new(None);
        let time = "20260321T100405Z".to_owned();
        v.begin_file("f0", Role::Rotated { time, first_seq: 0 });
        files[0].iter().for_each(|l| v.line(l));
        v.begin_file("audit.jsonl", Role::Active);
        files[2].iter().for_each(|l| v.line(l));
        let mut report = v.finish(false);
        assert_eq!(report.key_end, KeyEnd::default());
        report.check_current_key("audit.key", &Key::new(9, [0; 32]), None);
        assert!(
            report.summary().contains("cannot be compared"),
            "{}",
            report.summary()
        );
    }
}
