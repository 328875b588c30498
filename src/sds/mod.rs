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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Every ASID it registers (consumers and providers), sorted, once each.
    pub fn asids(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self
            .consumers
            .iter()
            .map(|c| &c.asid)
            .chain(self.providers.iter().map(|p| &p.asid))
            .collect();
        all.into_iter().cloned().collect()
    }
}

/// One MHS record, checked.
struct Mhs<'a> {
    entry: &'a Entry,
    fqdn: Option<String>,
    /// With at least one interaction: a provider's endpoint.
    endpoint: Option<ProviderEndpoint>,
}

/// Consumers and providers from the `nhsAs` and `nhsMhs` entries; others are ignored. With
/// `only`, interactions not in it are dropped (the ones this box serves).
pub fn derive(entries: &[Entry], only: Option<&[String]>) -> Export {
    let mut export = Export::default();
    let keep = |urn: &str| only.is_none_or(|only| only.iter().any(|o| o == urn));
    let skip = |skipped: &mut Vec<Skipped>, entry: &Entry, reason| {
        skipped.push(Skipped {
            line: entry.line,
            dn: entry.dn.clone(),
            reason,
        })
    };
    // MHS records by party key.
    let mut mhs: HashMap<&str, Vec<Mhs<'_>>> = HashMap::new();
    for entry in entries.iter().filter(|e| e.is("nhsMhs")) {
        export.records += 1;
        match mhs_record(entry, &keep) {
            Ok((key, record)) => mhs.entry(key).or_default().push(record),
            Err(reason) => skip(&mut export.skipped, entry, reason),
        }
    }
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    let mut used_keys: BTreeSet<&str> = BTreeSet::new();
    for entry in entries.iter().filter(|e| e.is("nhsAs")) {
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
                skip(&mut export.skipped, entry, reason);
                continue;
            }
        };
        if let Some(&first) = first_line.get(asid.as_str()) {
            skip(&mut export.skipped, entry, Reason::DuplicateAsid(first));
            continue;
        }
        first_line.insert(entry.first("uniqueidentifier").unwrap_or_default(), entry.line);
        let Some(records) = mhs.get(key) else {
            skip(
                &mut export.skipped,
                entry,
                Reason::UnknownPartyKey(key.to_string()),
            );
            continue;
        };
        used_keys.insert(key);
        let ods = entry.first("nhsidcode").map(str::to_string);
        let mut interactions = Vec::new();
        for urn in entry.all("nhsassvcia").filter(|u| keep(u)) {
            match config::check_interaction(urn.to_string()) {
                Ok(urn) if !interactions.contains(&urn) => interactions.push(urn),
                Ok(_) => {}
                Err(why) => skip(&mut export.skipped, entry, invalid("nhsAsSvcIA", urn, why)),
            }
        }
        let endpoints = endpoints(records, &mut export.skipped);
        let mut role = false;
        if !interactions.is_empty() {
            let names: BTreeSet<&String> = records.iter().filter_map(|r| r.fqdn.as_ref()).collect();
            match names.into_iter().collect::<Vec<_>>()[..] {
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
                ref names => skip(
                    &mut export.skipped,
                    entry,
                    Reason::Fqdn(names.iter().map(|n| n.to_string()).collect()),
                ),
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
        if !role && export.skipped.last().is_none_or(|s| s.line != entry.line) {
            skip(&mut export.skipped, entry, Reason::Nothing);
        }
    }
    for (key, records) in &mhs {
        if !used_keys.contains(key) {
            for r in records {
                skip(
                    &mut export.skipped,
                    r.entry,
                    Reason::NoAccreditedSystem(key.to_string()),
                );
            }
        }
    }
    export.skipped.sort_by_key(|s| s.line);
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
fn mhs_record<'a>(entry: &'a Entry, keep: &dyn Fn(&str) -> bool) -> Result<(&'a str, Mhs<'a>), Reason> {
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
    Ok((
        key,
        Mhs {
            entry,
            fqdn,
            endpoint,
        },
    ))
}

/// A provider's endpoints from its MHS records: an interaction two records serve with different
/// endpoints is served by neither (and reported once); the same endpoint twice is one.
fn endpoints(records: &[Mhs<'_>], skipped: &mut Vec<Skipped>) -> Vec<ProviderEndpoint> {
    let serving: Vec<(&Mhs<'_>, &ProviderEndpoint)> = records
        .iter()
        .filter_map(|r| r.endpoint.as_ref().map(|e| (r, e)))
        .collect();
    // Interaction -> the first record serving it.
    let mut first: HashMap<&str, (&Mhs<'_>, &ProviderEndpoint)> = HashMap::new();
    let mut conflicted: BTreeSet<&str> = BTreeSet::new();
    for &(r, e) in &serving {
        for urn in &e.interactions {
            match first.get(urn.as_str()) {
                None => {
                    first.insert(urn, (r, e));
                }
                Some((other, o)) if (&o.url, &o.cpaid) != (&e.url, &e.cpaid) => {
                    if conflicted.insert(urn) && !skipped.iter().any(|s| s.line == r.entry.line) {
                        skipped.push(Skipped {
                            line: r.entry.line,
                            dn: r.entry.dn.clone(),
                            reason: Reason::TwoEndpoints(urn.clone(), other.entry.line),
                        });
                    }
                }
                Some(_) => {}
            }
        }
    }
    let mut out: Vec<ProviderEndpoint> = Vec::new();
    for (r, e) in serving {
        let mine: Vec<String> = e
            .interactions
            .iter()
            .filter(|urn| !conflicted.contains(urn.as_str()))
            .filter(|urn| first.get(urn.as_str()).is_some_and(|(f, _)| std::ptr::eq(*f, r)))
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        match out.iter_mut().find(|o| (&o.url, &o.cpaid) == (&e.url, &e.cpaid)) {
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

/// The share of `old`'s ASIDs (sorted) that `new` (sorted) no longer has, and how many.
pub fn shrink(old: &[String], new: &[String]) -> (usize, f64) {
    if old.is_empty() {
        return (0, 0.0);
    }
    let removed = old.iter().filter(|a| new.binary_search(a).is_err()).count();
    (removed, removed as f64 / old.len() as f64)
}

/// Whether an export registering `new` (sorted ASIDs) may replace one registering `known`:
/// not when it drops more than `max_shrink` of them (issue 18: an LDAP outage or a truncated
/// export must not shrink the allowlist by itself).
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

/// What an operator reads before a reload: one line per change, `+` added, `-` removed, `~`
/// changed, by ASID.
pub fn diff(old: &Export, new: &Export) -> Vec<String> {
    let mut lines = Vec::new();
    let consumers = |e: &Export| -> BTreeMap<String, SdsConsumer> {
        e.consumers.iter().map(|c| (c.asid.clone(), c.clone())).collect()
    };
    let (before, after) = (consumers(old), consumers(new));
    for (asid, c) in &before {
        match after.get(asid) {
            None => lines.push(format!("- consumer {asid} ({})", c.fqdn)),
            Some(n) => {
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
        }
    }
    for (asid, c) in after.iter().filter(|(a, _)| !before.contains_key(*a)) {
        lines.push(format!(
            "+ consumer {asid} ({}): {} interaction(s)",
            c.fqdn,
            c.interactions.len()
        ));
    }
    // Provider ASID -> interaction -> (url, cpaid).
    type Served = BTreeMap<String, BTreeMap<String, (String, Option<String>)>>;
    let served = |e: &Export| -> Served {
        e.providers
            .iter()
            .map(|p| {
                let map = p
                    .endpoints
                    .iter()
                    .flat_map(|e| {
                        e.interactions
                            .iter()
                            .map(move |u| (u.clone(), (e.url.url.clone(), e.cpaid.clone())))
                    })
                    .collect();
                (p.asid.clone(), map)
            })
            .collect()
    };
    let (before, after) = (served(old), served(new));
    let at = |(url, cpaid): &(String, Option<String>)| match cpaid {
        Some(id) => format!("{url} (CPA id {id})"),
        None => url.clone(),
    };
    for (asid, was) in &before {
        let Some(now) = after.get(asid) else {
            lines.push(format!("- provider {asid}: {} interaction(s)", was.len()));
            continue;
        };
        for (urn, where_) in was {
            match now.get(urn) {
                None => lines.push(format!(
                    "~ provider {asid}: - interaction {urn} at {}",
                    at(where_)
                )),
                Some(moved) if moved != where_ => lines.push(format!(
                    "~ provider {asid}: interaction {urn}: {} -> {}",
                    at(where_),
                    at(moved)
                )),
                Some(_) => {}
            }
        }
        for (urn, where_) in now.iter().filter(|(u, _)| !was.contains_key(*u)) {
            lines.push(format!(
                "~ provider {asid}: + interaction {urn} at {}",
                at(where_)
            ));
        }
    }
    for (asid, now) in after.iter().filter(|(a, _)| !before.contains_key(*a)) {
        lines.push(format!("+ provider {asid}: {} interaction(s)", now.len()));
    }
    lines
}

#[cfg(test)]
mod tests;
