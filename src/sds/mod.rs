//! The Spine Directory Service export (issue 18): consumers and providers derived from the
//! `nhsAs` and `nhsMhs` records of an LDIF file that `ldapsearch` wrote, and what changes
//! between two exports. Pure: `ldif` reads bytes, `derive` reads entries, `diff` reads two
//! derivations; the configuration loader and `ssp sds` do the file I/O.
//!
//! The records (nhsconnect/gpconnect, "Registering GP Connect systems in SDS"):
//! - an AS record (`objectClass: nhsAs`) per accredited system: `uniqueIdentifier` is its ASID,
//!   `nhsIDCode` its organisation, `nhsMhsPartyKey` its message handling system, `nhsAsSvcIA`
//!   the interactions it may send;
//! - MHS records (`objectClass: nhsMhs`) with the same party key: `nhsMhsFQDN` (the name in the
//!   system's certificate), and for a provider one record per interaction set it serves
//!   (`nhsMhsSvcIA`) with its service root `nhsMhsEndPoint` and `nhsMhsCPAId`. A consumer's
//!   MHS record carries no interactions.
//!
//! So an AS record with interactions is a consumer (its FQDN from its MHS records), and one
//! whose MHS records carry interactions and an endpoint is a provider; a system can be both.

pub mod cli;
pub mod ldif;

use std::collections::HashMap;
use std::fmt;

use crate::config::{self, Endpoint, ProviderEndpoint};
use ldif::Entry;

/// A consumer as the export registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SdsConsumer {
    pub asid: String,
    /// `nhsIDCode`, when given.
    pub ods: Option<String>,
    pub party_key: String,
    /// Lowercased.
    pub fqdn: String,
    pub interactions: Vec<String>,
    /// Line of its AS record.
    pub line: usize,
}

/// A provider as the export registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SdsProvider {
    pub asid: String,
    pub ods: Option<String>,
    pub party_key: String,
    /// One per MHS record; each interaction on one only.
    pub endpoints: Vec<ProviderEndpoint>,
    pub line: usize,
}

impl SdsProvider {
    pub fn interactions(&self) -> impl Iterator<Item = &String> {
        self.endpoints.iter().flat_map(|e| e.interactions.iter())
    }
}

/// An entry (or a part of one) left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub dn: String,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A required attribute is absent.
    Missing(&'static str),
    /// An attribute's value cannot be used: (attribute, value, why).
    Invalid(&'static str, String, String),
    /// No MHS record has the AS record's party key.
    UnknownPartyKey(String),
    /// No AS record has the MHS record's party key.
    NoAccreditedSystem(String),
    /// Another AS record has this ASID, at that line.
    DuplicateAsid(usize),
    /// An interaction served by two MHS records with different endpoints: (interaction, the
    /// other record's line). Neither serves it: row 12 needs one endpoint per interaction.
    TwoEndpoints(String, usize),
    /// The party key's MHS records give no `nhsMhsFQDN`, or several different ones.
    Fqdn(Vec<String>),
    /// Neither interactions to send nor endpoints to serve (after the `[sds] interactions`
    /// filter).
    Nothing,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing(attribute) => write!(f, "missing attribute {attribute}"),
            Reason::Invalid(attribute, value, why) => write!(f, "{attribute} {value:?}: {why}"),
            Reason::UnknownPartyKey(key) => write!(f, "unknown party key {key:?}: no nhsMhs record has it"),
            Reason::NoAccreditedSystem(key) => {
                write!(f, "party key {key:?}: no nhsAs record has it")
            }
            Reason::DuplicateAsid(first) => {
                write!(
                    f,
                    "duplicate ASID: the nhsAs record at line {first} has it already"
                )
            }
            Reason::TwoEndpoints(urn, other) => write!(
                f,
                "two endpoints for one interaction: {urn} is also served by the nhsMhs record at line {other}; neither serves it"
            ),
            Reason::Fqdn(names) if names.is_empty() => {
                f.write_str("as a consumer: no nhsMhs record of its party key gives nhsMhsFQDN")
            }
            Reason::Fqdn(names) => write!(
                f,
                "as a consumer: its party key's nhsMhs records give different nhsMhsFQDN values ({})",
                names.join(", ")
            ),
            Reason::Nothing => f.write_str("no interactions (nhsAsSvcIA) to send and no endpoints to serve"),
        }
    }
}

/// What an export yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Export {
    pub consumers: Vec<SdsConsumer>,
    pub providers: Vec<SdsProvider>,
    pub skipped: Vec<Skipped>,
    /// nhsAs and nhsMhs records read; entries of other classes are not counted.
    pub records: usize,
}

impl Export {
    /// Every ASID it registers (consumers, then providers), once each, in export order.
    pub fn asids(&self) -> Vec<String> {
        let mut seen = HashMap::new();
        let all = self.consumers.iter().map(|c| &c.asid);
        all.chain(self.providers.iter().map(|p| &p.asid))
            .filter(|asid| put(&mut seen, asid, 0).is_none())
            .cloned()
            .collect()
    }
}

// The one table here is `HashMap<String, usize>`, which the configuration loader has already,
// used through `put` and `find` only: no ordered map, no sort, no second hash table type, each
// of which costs the static binary kilobytes of code (its budget is 3 MiB).

/// Inserts `key` with `value` unless it is there; the value it had, if it was.
#[inline(never)]
pub(crate) fn put(map: &mut HashMap<String, usize>, key: &str, value: usize) -> Option<usize> {
    match map.get(key) {
        Some(&had) => Some(had),
        None => {
            map.insert(key.to_string(), value);
            None
        }
    }
}

/// The value of `key`.
#[inline(never)]
pub(crate) fn find(map: &HashMap<String, usize>, key: &str) -> Option<usize> {
    map.get(key).copied()
}

/// One MHS record, checked.
struct Mhs {
    /// Its position among the entries, and its line.
    at: usize,
    line: usize,
    fqdn: Option<String>,
    /// With at least one interaction: a provider's endpoint.
    endpoint: Option<ProviderEndpoint>,
}

/// Consumers and providers from the `nhsAs` and `nhsMhs` entries; others are ignored. With
/// `only`, interactions not in it are dropped (the ones this box serves).
pub fn derive(entries: &[Entry], only: Option<&[String]>) -> Export {
    let mut export = Export::default();
    let keep = |urn: &str| only.is_none_or(|only| only.iter().any(|o| o == urn));
    // Reasons by entry position: they come out in file order without a sort.
    let mut reasons: Vec<Vec<Reason>> = entries.iter().map(|_| Vec::new()).collect();
    // MHS records grouped by party key: the key's group number, and the groups.
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<Mhs>> = Vec::new();
    for (at, entry) in entries.iter().enumerate().filter(|(_, e)| e.is("nhsMhs")) {
        export.records += 1;
        match mhs_record(at, entry, &keep) {
            Ok((key, record)) => {
                let group = put(&mut group_of, key, groups.len()).unwrap_or_else(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[group].push(record);
            }
            Err(reason) => reasons[at].push(reason),
        }
    }
    let mut used = vec![false; groups.len()];
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (at, entry) in entries.iter().enumerate().filter(|(_, e)| e.is("nhsAs")) {
        export.records += 1;
        let checked = (|| {
            let asid = required(entry, "uniqueIdentifier")?;
            let asid =
                config::check_asid(asid.to_string()).map_err(|why| invalid("uniqueIdentifier", asid, why))?;
            let key = required(entry, "nhsMhsPartyKey")?;
            Ok((asid, key))
        })();
        let (asid, key) = match checked {
            Ok(found) => found,
            Err(reason) => {
                reasons[at].push(reason);
                continue;
            }
        };
        if let Some(first) = put(&mut first_line, &asid, entry.line) {
            reasons[at].push(Reason::DuplicateAsid(first));
            continue;
        }
        let Some(group) = find(&group_of, key) else {
            reasons[at].push(Reason::UnknownPartyKey(key.to_string()));
            continue;
        };
        used[group] = true;
        let records = &groups[group];
        let ods = entry.first("nhsidcode").map(str::to_string);
        let mut interactions = Vec::new();
        for urn in entry.all("nhsassvcia").filter(|u| keep(u)) {
            match config::check_interaction(urn.to_string()) {
                Ok(urn) if !interactions.contains(&urn) => interactions.push(urn),
                Ok(_) => {}
                Err(why) => reasons[at].push(invalid("nhsAsSvcIA", urn, why)),
            }
        }
        let endpoints = endpoints(records, &mut reasons);
        let mut role = false;
        if !interactions.is_empty() {
            let mut names: Vec<&String> = Vec::new();
            for name in records.iter().filter_map(|r| r.fqdn.as_ref()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            match names[..] {
                [fqdn] => {
                    role = true;
                    export.consumers.push(SdsConsumer {
                        asid: asid.clone(),
                        ods: ods.clone(),
                        party_key: key.to_string(),
                        fqdn: fqdn.clone(),
                        interactions,
                        line: entry.line,
                    });
                }
                ref names => reasons[at].push(Reason::Fqdn(names.iter().map(|n| n.to_string()).collect())),
            }
        }
        if !endpoints.is_empty() {
            role = true;
            export.providers.push(SdsProvider {
                asid,
                ods,
                party_key: key.to_string(),
                endpoints,
                line: entry.line,
            });
        }
        if !role && reasons[at].is_empty() {
            reasons[at].push(Reason::Nothing);
        }
    }
    for (key, &group) in &group_of {
        if !used[group] {
            for r in &groups[group] {
                reasons[r.at].push(Reason::NoAccreditedSystem(key.clone()));
            }
        }
    }
    for (entry, reasons) in entries.iter().zip(reasons) {
        for reason in reasons {
            export.skipped.push(Skipped {
                line: entry.line,
                dn: entry.dn.clone(),
                reason,
            });
        }
    }
    export
}

fn required<'a>(entry: &'a Entry, attribute: &'static str) -> Result<&'a str, Reason> {
    entry
        .first(&attribute.to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .ok_or(Reason::Missing(attribute))
}

fn invalid(attribute: &'static str, value: &str, why: String) -> Reason {
    Reason::Invalid(attribute, value.to_string(), why)
}

/// An MHS record's party key, FQDN, and endpoint when it serves interactions.
fn mhs_record<'a>(
    at: usize,
    entry: &'a Entry,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(&'a str, Mhs), Reason> {
    let key = required(entry, "nhsMhsPartyKey")?;
    let fqdn = match entry.first("nhsmhsfqdn") {
        Some(name) => {
            Some(config::check_fqdn(name.to_string()).map_err(|why| invalid("nhsMhsFQDN", name, why))?)
        }
        None => None,
    };
    let mut interactions = Vec::new();
    for urn in entry.all("nhsmhssvcia").filter(|u| keep(u)) {
        let urn =
            config::check_interaction(urn.to_string()).map_err(|why| invalid("nhsMhsSvcIA", urn, why))?;
        if !interactions.contains(&urn) {
            interactions.push(urn);
        }
    }
    let endpoint = match interactions.is_empty() {
        true => None,
        false => {
            let url = required(entry, "nhsMHSEndPoint")?;
            let url = Endpoint::parse(url).map_err(|why| invalid("nhsMHSEndPoint", url, why))?;
            let cpaid = match entry.first("nhsmhscpaid") {
                Some(id) => {
                    Some(config::check_cpaid(id.to_string()).map_err(|why| invalid("nhsMhsCPAId", id, why))?)
                }
                None => None,
            };
            Some(ProviderEndpoint {
                url,
                cpaid,
                interactions,
            })
        }
    };
    let line = entry.line;
    Ok((
        key,
        Mhs {
            at,
            line,
            fqdn,
            endpoint,
        },
    ))
}

fn same_endpoint(a: &ProviderEndpoint, b: &ProviderEndpoint) -> bool {
    a.url == b.url && a.cpaid == b.cpaid
}

/// A provider's endpoints from its MHS records (a party key has a few): an interaction two
/// records serve with different endpoints is served by neither (and reported once); the same
/// endpoint twice is one.
fn endpoints(records: &[Mhs], reasons: &mut [Vec<Reason>]) -> Vec<ProviderEndpoint> {
    // (interaction, the position in `records` of the first record serving it).
    let mut first: Vec<(&str, usize)> = Vec::new();
    let mut conflicted: Vec<&str> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Some(e) = &r.endpoint else { continue };
        for urn in &e.interactions {
            match first.iter().find(|(u, _)| u == urn) {
                None => first.push((urn, i)),
                Some(&(_, other)) => {
                    let served_by = records[other].endpoint.as_ref();
                    if served_by.is_some_and(|o| !same_endpoint(o, e)) && !conflicted.contains(&urn.as_str())
                    {
                        conflicted.push(urn);
                        let here = &mut reasons[r.at];
                        if !here.iter().any(|x| matches!(x, Reason::TwoEndpoints(..))) {
                            here.push(Reason::TwoEndpoints(urn.clone(), records[other].line));
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<ProviderEndpoint> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Some(e) = &r.endpoint else { continue };
        let mine: Vec<String> = e
            .interactions
            .iter()
            .filter(|urn| !conflicted.contains(&urn.as_str()))
            .filter(|urn| first.iter().any(|(u, at)| u == urn && *at == i))
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        match out.iter_mut().find(|o| same_endpoint(o, e)) {
            Some(same) => same.interactions.extend(mine),
            None => out.push(ProviderEndpoint {
                url: e.url.clone(),
                cpaid: e.cpaid.clone(),
                interactions: mine,
            }),
        }
    }
    out
}

/// How many of `old`'s ASIDs `new` no longer has, and their share of `old`.
pub fn shrink(old: &[String], new: &[String]) -> (usize, f64) {
    if old.is_empty() {
        return (0, 0.0);
    }
    let new = index(new.iter());
    let removed = old.iter().filter(|a| find(&new, a).is_none()).count();
    (removed, removed as f64 / old.len() as f64)
}

/// Whether an export registering `new` may replace one registering `known`: not when it drops
/// more than `max_shrink` of them (issue 18: an LDAP outage or a truncated export must not
/// shrink the allowlist by itself).
pub fn check_shrink(known: &[String], new: &[String], max_shrink: f64) -> Result<(), String> {
    let (removed, share) = shrink(known, new);
    if share <= max_shrink {
        return Ok(());
    }
    Err(format!(
        "the SDS export drops {removed} of the {} known ASIDs ({:.1} %), more than [sds] max_shrink = {max_shrink} allows; \
         see `ssp sds diff OLD NEW`, and raise max_shrink for one reload if the change is real",
        known.len(),
        share * 100.0
    ))
}

/// Position of each ASID in `asids` (the first, for one given twice).
pub(crate) fn index<'a>(asids: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    let mut at = HashMap::new();
    for (i, asid) in asids.enumerate() {
        put(&mut at, asid, i);
    }
    at
}

/// Where a provider serves each interaction: (interaction, url, CPA id).
fn served(p: &SdsProvider) -> Vec<(&String, &String, &Option<String>)> {
    p.endpoints
        .iter()
        .flat_map(|e| e.interactions.iter().map(move |u| (u, &e.url.url, &e.cpaid)))
        .collect()
}

fn at(url: &str, cpaid: &Option<String>) -> String {
    match cpaid {
        Some(id) => format!("{url} (CPA id {id})"),
        None => url.to_string(),
    }
}

/// What an operator reads before a reload: one line per change, `+` added, `-` removed, `~`
/// changed, by ASID, in the old export's order and then the new one's.
pub fn diff(old: &Export, new: &Export) -> Vec<String> {
    let mut lines = Vec::new();
    let (before, after) = (
        index(old.consumers.iter().map(|c| &c.asid)),
        index(new.consumers.iter().map(|c| &c.asid)),
    );
    for c in &old.consumers {
        let asid = &c.asid;
        let Some(n) = find(&after, asid) else {
            lines.push(format!("- consumer {asid} ({})", c.fqdn));
            continue;
        };
        let n = &new.consumers[n];
        if n.fqdn != c.fqdn {
            lines.push(format!("~ consumer {asid}: fqdn {} -> {}", c.fqdn, n.fqdn));
        }
        for urn in c.interactions.iter().filter(|u| !n.interactions.contains(u)) {
            lines.push(format!("~ consumer {asid}: - interaction {urn}"));
        }
        for urn in n.interactions.iter().filter(|u| !c.interactions.contains(u)) {
            lines.push(format!("~ consumer {asid}: + interaction {urn}"));
        }
    }
    for c in new.consumers.iter().filter(|c| find(&before, &c.asid).is_none()) {
        lines.push(format!(
            "+ consumer {} ({}): {} interaction(s)",
            c.asid,
            c.fqdn,
            c.interactions.len()
        ));
    }
    let (before, after) = (
        index(old.providers.iter().map(|p| &p.asid)),
        index(new.providers.iter().map(|p| &p.asid)),
    );
    for p in &old.providers {
        let asid = &p.asid;
        let was = served(p);
        let Some(n) = find(&after, asid) else {
            lines.push(format!("- provider {asid}: {} interaction(s)", was.len()));
            continue;
        };
        let now = served(&new.providers[n]);
        for &(urn, url, cpaid) in &was {
            match now.iter().find(|(u, ..)| *u == urn) {
                None => lines.push(format!(
                    "~ provider {asid}: - interaction {urn} at {}",
                    at(url, cpaid)
                )),
                Some(&(_, to, to_cpaid)) if (to, to_cpaid) != (url, cpaid) => lines.push(format!(
                    "~ provider {asid}: interaction {urn}: {} -> {}",
                    at(url, cpaid),
                    at(to, to_cpaid)
                )),
                Some(_) => {}
            }
        }
        for &(urn, url, cpaid) in now.iter().filter(|(u, ..)| !was.iter().any(|(w, ..)| w == u)) {
            lines.push(format!(
                "~ provider {asid}: + interaction {urn} at {}",
                at(url, cpaid)
            ));
        }
    }
    for p in new.providers.iter().filter(|p| find(&before, &p.asid).is_none()) {
        lines.push(format!(
            "+ provider {}: {} interaction(s)",
            p.asid,
            served(p).len()
        ));
    }
    lines
}

#[cfg(test)]
mod tests;
