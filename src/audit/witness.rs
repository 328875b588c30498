//! The witness check (`ssp audit verify DIR --witness W`), without I/O. A chain cut back to an
//! earlier seal verifies on its own; the seals a log shipper already carried off the box do
//! not go away with it. Every seal in the witness must be in the folder, at the same seq with
//! the same hash.
//!
//! As journald's `--verify` and CloudTrail's `validate-logs` do, what is missing and what is
//! different are told apart: a witness seal the folder lacks is records removed (CloudTrail's
//! "not found"; here `CUT`, exit 4), a witness seal whose seq holds another record here is
//! records changed (CloudTrail's "hash value doesn't match"; here `FORKED`, exit 5: the folder
//! was rolled back and written again, or the chain forked). Seals the witness lacks are not a
//! finding: the shipper may have dropped or not yet sent them, and only what it holds can be
//! compared (as journald reports the entries after its last tag as "not sealed", not failed).

use std::collections::BTreeMap;

use super::files::ACTIVE;
use super::record::Parsed;
use super::seal::Key;
use super::verify::{Finding, Kind, Report};

/// A seal as the witness holds it: enough to find it in the folder and check its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shipped {
    h: [u8; 32],
    epoch: u64,
    mac: [u8; 32],
    prev: [u8; 32],
    ts: String,
    /// Met in the folder (marked rather than removed: less code in a binary at its budget).
    met: bool,
}

#[derive(Debug, Default)]
pub struct Witness {
    /// The witness's path, to name it in findings.
    name: String,
    /// The seals held, by seq.
    seals: BTreeMap<u64, Shipped>,
    /// Seals held, and how many of them were met unchanged.
    total: u64,
    found: u64,
    /// The seq of the last seal both hold unchanged: where folder and witness last agree.
    agreed: Option<u64>,
    /// Lines of the witness that are not audit records (a shipper's own lines, cut lines).
    pub skipped: u64,
    findings: Vec<Finding>,
}

impl Witness {
    pub fn new(name: &str) -> Witness {
        Witness {
            name: name.to_owned(),
            ..Witness::default()
        }
    }

    /// A record read from the witness: seals are kept, everything else is only the shipper
    /// carrying the rest of the audit.
    pub fn record(&mut self, p: &Parsed) {
        let Some((epoch, mac)) = p.seal else { return };
        let shipped = Shipped {
            h: p.h,
            epoch,
            mac,
            prev: p.prev,
            ts: p.ts.clone(),
            met: false,
        };
        match self.seals.get(&p.seq) {
            None => {
                self.total += 1;
                self.seals.insert(p.seq, shipped);
            }
            // The same seal shipped twice (a shipper retrying): one seal.
            Some(held) if held.h == shipped.h => {}
            Some(_) => self.findings.push(Finding {
                kind: Kind::Forked,
                file: self.name.clone(),
                line: None,
                seq: Some(p.seq),
                message: format!(
                    "the witness holds two different seals at seq {}: the box wrote two chains \
                     (its audit folder was rolled back and written again, or copied and run twice)",
                    p.seq
                ),
            }),
        }
    }

    /// Checks every witness seal's MAC against the initial key, so that only the box's own seals
    /// are taken as evidence: a witness from another box, or edited, is refused rather than
    /// read as a fork. `Err` names the first seal that does not verify.
    pub fn check_macs(&self, k0: &Key) -> Result<(), String> {
        let mut cursor = k0.clone();
        // By seq, one chain's epochs only go up; a fork reuses epochs, so start again from K0.
        for (seq, s) in &self.seals {
            if s.epoch < cursor.epoch() {
                cursor = k0.clone();
            }
            let key = cursor.advance_to(s.epoch);
            match key {
                Some(key) if key.mac(*seq, &s.prev, &s.ts) == s.mac => cursor = key,
                _ => {
                    return Err(format!(
                        "its seal at seq {seq} does not verify with the initial key: it is another \
                         box's or another chain's, or it was changed, so it cannot witness this folder"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A record of the folder that verified, in chain order.
    pub fn see(&mut self, file: &str, line: u64, seq: u64, h: &[u8; 32]) {
        let Some(shipped) = self.seals.get_mut(&seq) else {
            return;
        };
        shipped.met = true;
        if shipped.h == *h {
            self.found += 1;
            self.agreed = Some(seq);
            return;
        }
        let since = self.agreed.map_or_else(
            || "before the first seal both hold".to_owned(),
            |a| format!("after seal seq {a}, the last both hold"),
        );
        self.findings.push(Finding {
            kind: Kind::Forked,
            file: file.to_owned(),
            line: Some(line),
            seq: Some(seq),
            message: format!(
                "the witness's seal at seq {seq} is not this record: the folder was rolled back and \
                 written again, or its chain forked, {since}"
            ),
        });
    }

    /// Adds what the witness shows to the folder's report: the seals it holds that the folder
    /// lacks.
    pub fn finish(mut self, report: &mut Report) {
        report.witness = Some((self.total, self.found));
        report.findings.append(&mut self.findings);
        if self.skipped > 0 {
            report.notes.push(format!(
                "{} witness lines are not audit records and were skipped",
                self.skipped
            ));
        }
        if report.findings.iter().any(|f| f.kind == Kind::Tampered) {
            // Nothing after a tampering was read, so nothing there can be said to be missing.
            report
                .notes
                .push("the witness was compared only with the records before the tampering".into());
            return;
        }
        let (Some(first), Some(last)) = (report.first_seq, report.last_seq) else {
            return;
        };
        let missing: Vec<u64> = self
            .seals
            .iter()
            .filter(|(_, s)| !s.met)
            .map(|(seq, _)| *seq)
            .collect();
        let older = missing.iter().filter(|&&seq| seq < first).count();
        if older > 0 {
            report.notes.push(format!(
                "{older} witness seals are older than this folder's first record (seq {first}) \
                 and were not compared"
            ));
        }
        let within: Vec<&u64> = missing
            .iter()
            .filter(|&&seq| (first..=last).contains(&seq))
            .collect();
        if let Some(&&seq) = within.first() {
            report.findings.push(Finding {
                kind: Kind::Cut,
                file: self.name.clone(),
                line: None,
                seq: Some(seq),
                message: format!(
                    "the witness holds {} seals this folder lacks within its span, the first at \
                     seq {seq}: sealed records were removed",
                    within.len()
                ),
            });
        }
        let later = missing.iter().filter(|&&seq| seq > last).count();
        if let Some(newest) = missing.last().filter(|&&seq| seq > last) {
            report.findings.push(Finding {
                kind: Kind::Cut,
                file: ACTIVE.into(),
                line: None,
                seq: Some(last),
                message: format!(
                    "this folder ends at seq {last} but the witness holds {later} later seals, the \
                     last at seq {newest}: records were cut from the end"
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{self, Entry, GENESIS};

    const K0: [u8; 32] = [5; 32];
    const TS: &str = "2026-03-21T10:04:05.123Z";

    /// A chain of `n` records, every third a seal made with `k0`'s epochs; records from seq
    /// `fork_at` on say something else than another chain with the same `k0` would.
    fn chain(n: u64, k0: [u8; 32], fork_at: u64) -> Vec<Parsed> {
        let mut prev = GENESIS;
        let mut key = Key::new(0, k0);
        (0..n)
            .map(|seq| {
                let entry = if seq % 3 == 2 {
                    let e = Entry::Seal {
                        epoch: key.epoch(),
                        mac: key.mac(seq, &prev, TS),
                    };
                    key = key.next();
                    e
                } else {
                    let reason = if seq < fork_at { "x" } else { "y" };
                    Entry::Stop {
                        reason: reason.into(),
                    }
                };
                let line = record::line(seq, TS, &entry, &prev);
                prev = line.h;
                record::parse(&line.bytes[..line.bytes.len() - 1]).unwrap()
            })
            .collect()
    }

    fn witness(shipped: &[Parsed]) -> Witness {
        let mut witness = Witness::new("w");
        shipped.iter().for_each(|p| witness.record(p));
        witness
    }

    /// The folder's report after seeing `folder` against a witness of `shipped`.
    fn compare(folder: &[Parsed], shipped: &[Parsed]) -> Report {
        let mut witness = witness(shipped);
        let mut report = Report {
            first_seq: folder.first().map(|p| p.seq),
            last_seq: folder.last().map(|p| p.seq),
            ..Report::default()
        };
        for p in folder {
            witness.see(ACTIVE, p.seq + 1, p.seq, &p.h);
        }
        witness.finish(&mut report);
        report
    }

    #[test]
    fn a_witness_with_gaps_duplicates_and_any_order_passes() {
        let all = chain(30, K0, 99);
        let mut shipped: Vec<Parsed> = all.iter().step_by(2).cloned().collect();
        shipped.extend(all[10..15].iter().cloned());
        shipped.reverse();
        let report = compare(&all, &shipped);
        assert_eq!(report.exit_code(), 0, "{}", report.summary());
        // Seals are at seq 2, 5, 8, ...: the witness has 2, 8, 14, 20, 26 and 11.
        assert_eq!(report.witness, Some((6, 6)), "{}", report.summary());
        assert!(report.summary().contains("6 of the witness's 6 seals found here"));
    }

    #[test]
    fn a_folder_that_ends_before_the_witness_is_cut() {
        let all = chain(30, K0, 99);
        let report = compare(&all[..21], &all);
        assert_eq!(report.exit_code(), 4, "{}", report.summary());
        assert!(
            report.summary().starts_with(
                "CUT: audit.jsonl seq 20: this folder ends at seq 20 but the witness holds 3 \
                 later seals, the last at seq 29: records were cut from the end"
            ),
            "{}",
            report.summary()
        );
        // Cut to exactly the witness's last seal: nothing the witness holds is missing.
        assert_eq!(compare(&all[..21], &all[..21]).exit_code(), 0);
    }

    #[test]
    fn seals_missing_inside_the_folder_are_a_cut_and_older_ones_a_note() {
        let all = chain(30, K0, 99);
        let mut holed = all.clone();
        holed.drain(10..16);
        let report = compare(&holed, &all);
        assert_eq!(report.exit_code(), 4, "{}", report.summary());
        assert!(
            report.summary().starts_with(
                "CUT: w seq 11: the witness holds 2 seals this folder lacks within its span, the \
                 first at seq 11: sealed records were removed"
            ),
            "{}",
            report.summary()
        );
        let report = compare(&all[12..], &all);
        assert_eq!(report.exit_code(), 0, "{}", report.summary());
        assert!(
            report.summary().contains("4 witness seals are older"),
            "{}",
            report.summary()
        );
    }

    #[test]
    fn a_seal_with_another_hash_is_a_fork() {
        let all = chain(30, K0, 99);
        let forked = chain(30, K0, 10);
        let report = compare(&forked, &all);
        assert_eq!(report.exit_code(), 5, "{}", report.summary());
        assert!(
            report.summary().starts_with(
                "FORKED: audit.jsonl line 12 seq 11: the witness's seal at seq 11 is not this \
                 record: the folder was rolled back and written again, or its chain forked, \
                 after seal seq 8, the last both hold"
            ),
            "{}",
            report.summary()
        );
        // A fork is worse than a cut: the same folder, also ending early.
        assert_eq!(compare(&forked[..20], &all).exit_code(), 5);
        // Two different seals for one seq in the witness itself.
        let mut shipped = all.clone();
        shipped.push(forked[14].clone());
        let report = compare(&all, &shipped);
        assert_eq!(report.exit_code(), 5, "{}", report.summary());
        assert!(
            report
                .summary()
                .contains("the witness holds two different seals at seq 14")
        );
    }

    #[test]
    fn after_a_tampering_nothing_is_called_missing() {
        let mut report = Report {
            first_seq: Some(0),
            last_seq: Some(9),
            findings: vec![Finding {
                kind: Kind::Tampered,
                file: ACTIVE.into(),
                line: Some(11),
                seq: Some(10),
                message: "x".into(),
            }],
            ..Report::default()
        };
        witness(&chain(30, K0, 99)).finish(&mut report);
        assert_eq!(report.exit_code(), 1);
        assert!(report.findings.iter().all(|f| f.kind != Kind::Cut));
    }

    #[test]
    fn only_the_chains_own_seals_are_taken_as_evidence() {
        let ours = witness(&chain(30, K0, 99));
        assert_eq!(ours.check_macs(&Key::new(0, K0)), Ok(()));
        let err = ours.check_macs(&Key::new(0, [9; 32])).unwrap_err();
        assert!(err.starts_with("its seal at seq 2 does not verify"), "{err}");
        // A fork's seals reuse epochs, at other seqs: by seq the epochs go 3, 4, then 3 again.
        let seal = |seq: u64, epoch: u64| {
            let key = Key::new(0, K0).advance_to(epoch).unwrap();
            let line = record::line(
                seq,
                TS,
                &Entry::Seal {
                    epoch,
                    mac: key.mac(seq, &[1; 32], TS),
                },
                &[1; 32],
            );
            record::parse(&line.bytes[..line.bytes.len() - 1]).unwrap()
        };
        let forked = witness(&[seal(11, 3), seal(14, 4), seal(16, 3)]);
        assert_eq!(forked.check_macs(&Key::new(0, K0)), Ok(()));
    }
}
