//! `ssp sds show` and `ssp sds diff`: the file I/O and printing around `derive` and `diff`.
//! Exit codes: 0 done (diff: no change), 1 diff: changes, 2 a file that does not load.

use std::path::Path;

use super::{Export, derive, diff as changes, ldif, shrink};
use crate::config::{self, Config};

/// Reads and derives the export at `path`; problems are printed as `FILE:LINE: message`.
pub fn read(path: &Path, only: Option<&[String]>) -> Result<Export, Vec<String>> {
    let bytes = crate::regular_file::read(path)
        .map_err(|e| vec![format!("{}: cannot read the SDS export: {e}", path.display())])?;
    let entries = ldif::parse(&bytes).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}:{}: {}", path.display(), e.line, e.message))
            .collect::<Vec<_>>()
    })?;
    Ok(derive(&entries, only))
}

fn print_problems(problems: &[String]) -> u8 {
    for p in problems {
        eprintln!("{p}");
    }
    2
}

/// `ssp sds show --config FILE`: the consumers and providers in force with this configuration
/// and its export, and the export's entries skipped, with the reason.
pub fn show(file: &Path) -> u8 {
    let cfg: Config = match config::load(file) {
        Ok(cfg) => cfg,
        Err(errors) => return print_problems(&errors.0.iter().map(ToString::to_string).collect::<Vec<_>>()),
    };
    let Some(sds) = &cfg.sds else {
        eprintln!(
            "{}: no [sds] section: consumers and providers are all local",
            file.display()
        );
        return 2;
    };
    let export = match read(&sds.ldif, sds.interactions.as_deref()) {
        Ok(export) => export,
        Err(problems) => return print_problems(&problems),
    };
    println!(
        "{}: {} nhsAs/nhsMhs records: {} consumers, {} providers, {} skipped",
        sds.ldif.display(),
        export.records,
        export.consumers.len(),
        export.providers.len(),
        export.skipped.len()
    );
    let asids = super::index(export.consumers.iter().map(|c| &c.asid));
    let providers = super::index(export.providers.iter().map(|p| &p.asid));
    let in_export = |asid: &String| {
        if super::find(&asids, asid)
            .or(super::find(&providers, asid))
            .is_some()
        {
            "sds"
        } else {
            "local"
        }
    };
    for c in &cfg.consumers {
        let agreements = match c.providers.is_empty() {
            true => "none: it can call nothing".to_string(),
            false => c.providers.join(", "),
        };
        println!("consumer {} ({}) {}", c.asid, in_export(&c.asid), c.fqdn);
        println!("  interactions: {}", c.interactions.join(", "));
        println!("  may call: {agreements}");
    }
    for p in &cfg.providers {
        println!("provider {} ({})", p.asid, in_export(&p.asid));
        for e in &p.endpoints {
            let cpaid = e
                .cpaid
                .as_ref()
                .map_or(String::new(), |id| format!(" CPA id {id}"));
            println!("  endpoint {}{cpaid}: {}", e.url.url, e.interactions.join(", "));
        }
    }
    for s in &export.skipped {
        println!("skipped {}:{} {}: {}", sds.ldif.display(), s.line, s.dn, s.reason);
    }
    0
}

/// `ssp sds diff OLD NEW`: what changes between two exports, one line each, then how many
/// known ASIDs the new one drops.
pub fn diff(old: &Path, new: &Path) -> u8 {
    let (before, after) = match (read(old, None), read(new, None)) {
        (Ok(before), Ok(after)) => (before, after),
        (before, after) => {
            let mut problems = before.err().unwrap_or_default();
            problems.extend(after.err().unwrap_or_default());
            return print_problems(&problems);
        }
    };
    let lines = changes(&before, &after);
    for line in &lines {
        println!("{line}");
    }
    let (known, now) = (before.asids(), after.asids());
    let (removed, share) = shrink(&known, &now);
    println!(
        "{} changes; ASIDs: {} before, {} after, {removed} removed ({:.1} % of the known)",
        lines.len(),
        known.len(),
        now.len(),
        share * 100.0
    );
    u8::from(!lines.is_empty())
}
