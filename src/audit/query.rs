//! What `ssp audit find` selects and what `ssp audit stats` counts, without I/O: both are fed
//! the records the verifier accepted, in chain order.
//!
//! One request is one `deny` record (standing for `refusals` refusals, 1 when absent), or one
//! `req` record with the `res` that names it by `req_seq` (which carries its status). A `req`
//! whose `res` never came (a crash, or still in flight) has no status.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::json::{self, Val};

/// The fields of a record that requests are selected and counted by, borrowed from its line.
/// Strings are as the record holds them, JSON escapes kept (see [`escaped`]): the values that
/// are compared (ASIDs, UUIDs, URNs, digits) have none.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    pub kind: &'a str,
    pub ts: &'a str,
    pub trace_id: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub interaction: Option<&'a str>,
    pub target: Option<&'a str>,
    pub status: Option<u16>,
    pub refusals: Option<u64>,
    pub req_seq: Option<u64>,
}

impl Fields<'_> {
    /// Reads a verified record line; `None` only for what the writer never writes.
    pub fn of(line: &[u8]) -> Option<Fields<'_>> {
        let mut f = Fields::default();
        for (name, raw) in json::members(std::str::from_utf8(line).ok()?)? {
            let text = json::unquoted(raw);
            match name {
                "type" => f.kind = text?,
                "ts" => f.ts = text?,
                "trace_id" => f.trace_id = text,
                "from" => f.from = text,
                "to" => f.to = text,
                "interaction" => f.interaction = text,
                "target" => f.target = text,
                "status" => f.status = raw.parse().ok(),
                "refusals" => f.refusals = raw.parse().ok(),
                "req_seq" => f.req_seq = raw.parse().ok(),
                _ => {}
            }
        }
        Some(f)
    }
}

/// A value as a record holds it: JSON-escaped as the writer escapes it, without the quotes.
fn escaped(value: &str) -> String {
    let mut out = String::new();
    json::write_str(&mut out, value);
    out[1..out.len() - 1].to_owned()
}

/// `find`'s filters. Every one given must hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    pub trace_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub interaction: Option<String>,
    /// The data subject: an identifier (an NHS number) the request's target names.
    pub subject: Option<String>,
    pub status: Option<u16>,
    /// Inclusive bounds on `ts`, at the precision given (see [`time_bound`]).
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Filter {
    /// Sets the filter an option names (`--from` and so on); `Ok(false)` if it names none.
    pub fn set(&mut self, option: &str, value: &str) -> Result<bool, String> {
        let slot = match option {
            "--trace-id" => &mut self.trace_id,
            "--from" => &mut self.from,
            "--to" => &mut self.to,
            "--interaction" => &mut self.interaction,
            "--subject" => {
                self.subject = Some(value.to_owned());
                return Ok(true);
            }
            "--since" => {
                self.since = Some(time_bound(value)?);
                return Ok(true);
            }
            "--until" => {
                self.until = Some(time_bound(value)?);
                return Ok(true);
            }
            "--status" => {
                let status = value
                    .parse()
                    .map_err(|_| format!("--status {value}: not an HTTP status"))?;
                self.status = Some(status);
                return Ok(true);
            }
            _ => return Ok(false),
        };
        *slot = Some(escaped(value));
        Ok(true)
    }

    /// Whether a `req` or `deny` record's own facts match (everything but the status, which a
    /// `req` does not carry).
    fn request(&self, f: &Fields) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| want.as_ref().is_none_or(|w| have == Some(w));
        let ts = f.ts;
        eq(&self.trace_id, f.trace_id)
            && eq(&self.from, f.from)
            && eq(&self.to, f.to)
            && eq(&self.interaction, f.interaction)
            && self
                .subject
                .as_ref()
                .is_none_or(|s| f.target.is_some_and(|t| names(t, s)))
            && self.since.as_ref().is_none_or(|s| ts >= s.as_str())
            && self
                .until
                .as_ref()
                .is_none_or(|u| ts.get(..u.len()).unwrap_or(ts) <= u.as_str())
    }

    fn status(&self, status: Option<u16>) -> bool {
        self.status.is_none_or(|s| status == Some(s))
    }
}

/// A time bound as given (`2026-03-21`, `2026-03-21T10`, `2026-03-21T10:04:05Z`), checked
/// against the shape of a record's `ts` and kept as the prefix of it that it names: records
/// are compared at that precision, so `--until 2026-03-21` includes the whole day.
pub fn time_bound(value: &str) -> Result<String, String> {
    const SHAPE: &[u8] = b"0000-00-00T00:00:00.000";
    let bound = value.strip_suffix('Z').unwrap_or(value);
    let fits = bound.len() >= 10
        && bound.len() <= SHAPE.len()
        && bound
            .bytes()
            .zip(SHAPE)
            .all(|(b, s)| if *s == b'0' { b.is_ascii_digit() } else { b == *s });
    if fits {
        Ok(bound.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a UTC time like 2026-03-21, 2026-03-21T10:04 or 2026-03-21T10:04:05Z"
        ))
    }
}

/// Whether the target names `id` as a whole word (not inside a longer number), percent-encoded
/// or not: FHIR searches carry the patient's identifier in the query
/// (`?patient=9000000009`, `identifier=https://fhir.nhs.uk/Id/nhs-number%7C9000000009`).
pub fn names(target: &str, id: &str) -> bool {
    let decoded = percent_decoded(target);
    let (hay, needle) = (decoded.as_slice(), id.as_bytes());
    if needle.is_empty() || needle.len() > hay.len() {
        return false;
    }
    let word = |i: usize| hay.get(i).is_some_and(u8::is_ascii_alphanumeric);
    (0..=hay.len() - needle.len())
        .any(|i| &hay[i..i + needle.len()] == needle && !(i > 0 && word(i - 1)) && !word(i + needle.len()))
}

/// Decodes `%XX` escapes; anything else, a stray `%` included, is kept as it is.
fn percent_decoded(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escape {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// `find`: which records to print. A `deny` or `req` matches on its own facts; a `res` matches
/// when its `req` did. With `--status`, a `req` is shown by its `res` (the record that carries
/// the status, and names the `req` by `req_seq`), so that every record is decided as it is
/// read, which the proof needs.
#[derive(Debug, Default)]
pub struct Finder {
    pub filter: Filter,
    /// `req` records that matched, until their `res`.
    open: HashSet<u64>,
}

impl Finder {
    pub fn new(filter: Filter) -> Finder {
        Finder {
            filter,
            open: HashSet::new(),
        }
    }

    pub fn matches(&mut self, seq: u64, f: &Fields) -> bool {
        match f.kind {
            "deny" => self.filter.request(f) && self.filter.status(f.status),
            "req" if self.filter.request(f) => {
                self.open.insert(seq);
                self.filter.status.is_none()
            }
            "res" => f.req_seq.is_some_and(|r| self.open.remove(&r)) && self.filter.status(f.status),
            _ => false,
        }
    }
}

/// What `stats` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Day,
    From,
    To,
    Interaction,
    Status,
}

impl Dim {
    const ALL: [(Dim, &'static str); 5] = [
        (Dim::Day, "day"),
        (Dim::From, "from"),
        (Dim::To, "to"),
        (Dim::Interaction, "interaction"),
        (Dim::Status, "status"),
    ];

    fn name(self) -> &'static str {
        Dim::ALL.iter().find(|(d, _)| *d == self).map_or("", |(_, n)| n)
    }

    /// `day,from,to,interaction,status`, any of them, in the order the columns are wanted.
    pub fn list(spec: &str) -> Result<Vec<Dim>, String> {
        spec.split(',')
            .map(|name| {
                Dim::ALL
                    .iter()
                    .find(|(_, n)| *n == name)
                    .map(|(d, _)| *d)
                    .ok_or_else(|| {
                        format!("--by {spec}: {name:?} is not one of day, from, to, interaction, status")
                    })
            })
            .collect()
    }
}

/// One group: its value in each dimension (`None` where the record has none).
type Group = Vec<Option<String>>;

/// `stats`: requests counted per group. Counts wait in `pending` until a seal after them
/// verifies, so a rewritten stretch that the next seal exposes is never counted.
#[derive(Debug)]
pub struct Stats {
    by: Vec<Dim>,
    /// `req` records until their `res`, with their group (status not yet known).
    open: HashMap<u64, Group>,
    pending: BTreeMap<Group, u64>,
    counted: BTreeMap<Group, u64>,
}

impl Stats {
    pub fn new(by: Vec<Dim>) -> Stats {
        Stats {
            by,
            open: HashMap::new(),
            pending: BTreeMap::new(),
            counted: BTreeMap::new(),
        }
    }

    fn group(&self, f: &Fields, status: Option<u16>) -> Group {
        let own = |v: Option<&str>| v.map(str::to_owned);
        self.by
            .iter()
            .map(|dim| match dim {
                Dim::Day => own(f.ts.get(..10)),
                Dim::From => own(f.from),
                Dim::To => own(f.to),
                Dim::Interaction => own(f.interaction),
                Dim::Status => status.map(|s| s.to_string()),
            })
            .collect()
    }

    /// A record that verified; `seal`: it is a seal (whose MAC verified, given the key).
    pub fn record(&mut self, seq: u64, f: &Fields, seal: bool) {
        match f.kind {
            "deny" => {
                let group = self.group(f, f.status);
                *self.pending.entry(group).or_default() += f.refusals.unwrap_or(1);
            }
            "req" => {
                let group = self.group(f, None);
                self.open.insert(seq, group);
            }
            "res" => {
                if let Some(mut group) = f.req_seq.and_then(|r| self.open.remove(&r)) {
                    if let Some(i) = self.by.iter().position(|d| *d == Dim::Status) {
                        group[i] = f.status.map(|s| s.to_string());
                    }
                    *self.pending.entry(group).or_default() += 1;
                }
            }
            _ => {}
        }
        if seal {
            for (group, n) in std::mem::take(&mut self.pending) {
                *self.counted.entry(group).or_default() += n;
            }
        }
    }

    /// The end of the records. `unsealed`: whether to count the records after the last seal
    /// too (the chain verified; they are only not sealed yet). `req` records still without a
    /// `res` are counted without a status. Returns the requests counted.
    pub fn finish(&mut self, unsealed: bool) -> u64 {
        for (_, group) in std::mem::take(&mut self.open) {
            *self.pending.entry(group).or_default() += 1;
        }
        if unsealed {
            for (group, n) in std::mem::take(&mut self.pending) {
                *self.counted.entry(group).or_default() += n;
            }
        }
        self.counted.values().sum()
    }

    /// CSV (RFC 4180): a header of the dimensions and `requests`, one row per group.
    pub fn csv(&self) -> String {
        let mut out: Vec<&str> = self.by.iter().map(|d| d.name()).collect();
        out.push("requests");
        let mut text = out.join(",");
        text.push('\n');
        for (group, n) in &self.counted {
            for value in group {
                text.push_str(&csv_field(value.as_deref().unwrap_or("")));
                text.push(',');
            }
            text.push_str(&n.to_string());
            text.push('\n');
        }
        text
    }

    /// JSON: `{..., "rows": [{"day": ..., "requests": n}, ...]}`, `head` the fields before.
    pub fn json(&self, head: Vec<(&'static str, Val)>) -> String {
        let rows = self
            .counted
            .iter()
            .map(|(group, n)| {
                let mut row: Vec<(&'static str, Val)> = self
                    .by
                    .iter()
                    .zip(group)
                    .map(|(dim, value)| {
                        let val = match (dim, value) {
                            (Dim::Status, Some(s)) => s.parse().map_or(Val::Null, Val::U64),
                            // Already escaped as the record holds it.
                            (_, Some(v)) => Val::Raw(format!("\"{v}\"")),
                            (_, None) => Val::Null,
                        };
                        (dim.name(), val)
                    })
                    .collect();
                row.push(("requests", Val::U64(*n)));
                Val::Obj(row)
            })
            .collect();
        let mut fields = head;
        fields.push(("rows", Val::List(rows)));
        let mut out = String::new();
        json::write_obj(&mut out, &fields);
        out.push('\n');
        out
    }
}

/// One CSV field: quoted when it holds a comma, quote or line break. A refused request's
/// fields are what the consumer sent, so one that a spreadsheet would run as a formula (`=`,
/// `+`, `-`, `@`) is written as text, with a leading `'` (OWASP's advice for CSV injection).
fn csv_field(value: &str) -> Cow<'_, str> {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if !formula && !value.contains([',', '"', '\n', '\r']) {
        return Cow::Borrowed(value);
    }
    let quote = if formula { "'" } else { "" };
    Cow::Owned(format!("\"{quote}{}\"", value.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: &'static str, from: &'static str, status: Option<u16>) -> Fields<'static> {
        Fields {
            kind,
            ts: "2026-03-21T10:04:05.123Z",
            trace_id: Some("t-1"),
            from: Some(from),
            to: Some("200000000999"),
            interaction: Some("urn:x"),
            target: Some("/https://p.example/R/search?patient=9000000009"),
            status,
            ..Fields::default()
        }
    }

    fn res(req_seq: u64, status: u16) -> Fields<'static> {
        Fields {
            kind: "res",
            ts: "2026-03-21T10:04:05.200Z",
            status: Some(status),
            req_seq: Some(req_seq),
            ..Fields::default()
        }
    }

    #[test]
    fn records_are_read_from_their_own_line() {
        let line = br#"{"seq":3,"ts":"2026-03-21T10:04:05.123Z","type":"deny","trace_id":"a\"b","from":null,"jwt":{"sub":"x","from":"y"},"status":429,"token":"T","refusals":7,"prev":"00","h":"11"}"#;
        let f = Fields::of(line).unwrap();
        // Strings as the record holds them: escaped.
        assert_eq!(
            (f.kind, f.trace_id, f.from, f.status, f.refusals),
            ("deny", Some(r#"a\"b"#), None, Some(429), Some(7))
        );
        // So a filter is compared in the same form.
        let mut filter = Filter::default();
        filter.set("--trace-id", "a\"b").unwrap();
        assert!(filter.request(&f));
        assert!(Fields::of(b"{\"type\":\"deny\"").is_none());
    }

    #[test]
    fn the_subject_is_a_whole_identifier_in_the_target_encoded_or_not() {
        let t = "/https://p.example/R/search?patient=9000000009&x=1";
        assert!(names(t, "9000000009"));
        assert!(!names(t, "900000000"));
        assert!(!names("/https://p/R?patient=90000000091", "9000000009"));
        let encoded = "/https://p/R?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9000000009";
        assert!(names(encoded, "9000000009"));
        assert!(names("/https%3A%2F%2Fp%2FR%3Fpatient%3D9000000009", "9000000009"));
        assert!(!names("%zz%", "9000000009"));
        assert!(!names(t, ""));
    }

    #[test]
    fn time_bounds_are_prefixes_of_a_records_time() {
        assert_eq!(time_bound("2026-03-21").as_deref(), Ok("2026-03-21"));
        assert_eq!(
            time_bound("2026-03-21T10:04:05Z").as_deref(),
            Ok("2026-03-21T10:04:05")
        );
        for bad in [
            "2026-3-21",
            "2026",
            "21/03/2026",
            "2026-03-21 10:00",
            "2026-03-21T10:04:05.1234",
        ] {
            assert!(time_bound(bad).is_err(), "{bad}");
        }
        let mut filter = Filter::default();
        filter.set("--until", "2026-03-21").unwrap();
        assert!(
            filter.request(&fields("req", "1", None)),
            "the whole day is included"
        );
        filter.set("--until", "2026-03-21T10:04:04").unwrap();
        assert!(!filter.request(&fields("req", "1", None)));
        filter.set("--until", "2026-03-21T10:04:05Z").unwrap();
        filter.set("--since", "2026-03-21T10:04:05").unwrap();
        assert!(filter.request(&fields("req", "1", None)));
        filter.set("--since", "2026-03-21T10:04:06").unwrap();
        assert!(!filter.request(&fields("req", "1", None)));
    }

    #[test]
    fn a_res_matches_with_its_req_and_status_picks_the_res() {
        let mut filter = Filter::default();
        assert_eq!(filter.set("--from", "A"), Ok(true));
        assert_eq!(filter.set("--key-file", "k"), Ok(false));
        assert!(filter.set("--status", "two hundred").is_err());
        let mut find = Finder::new(filter.clone());
        assert!(find.matches(1, &fields("req", "A", None)));
        assert!(!find.matches(2, &fields("req", "B", None)));
        assert!(find.matches(3, &res(1, 200)));
        assert!(!find.matches(4, &res(2, 200)));
        assert!(!find.matches(5, &res(1, 200)), "one res per req");
        assert!(find.matches(6, &fields("deny", "A", Some(403))));
        assert!(!find.matches(7, &fields("tls", "A", None)));

        filter.set("--status", "404").unwrap();
        let mut find = Finder::new(filter);
        assert!(!find.matches(1, &fields("req", "A", None)));
        assert!(!find.matches(2, &fields("req", "A", None)));
        assert!(find.matches(3, &res(1, 404)));
        assert!(!find.matches(4, &res(2, 200)));
        assert!(!find.matches(5, &fields("deny", "A", Some(403))));
        assert!(find.matches(6, &fields("deny", "A", Some(404))));
    }

    #[test]
    fn stats_count_refusals_and_requests_by_their_res_status() {
        let mut stats = Stats::new(Dim::list("from,status").unwrap());
        let mut many = fields("deny", "A", Some(429));
        many.refusals = Some(40);
        stats.record(1, &many, false);
        stats.record(2, &fields("deny", "A", Some(429)), false);
        stats.record(3, &fields("req", "A", None), false);
        stats.record(4, &fields("req", "B", None), false);
        stats.record(5, &res(3, 200), false);
        stats.record(6, &Fields::default(), true);
        stats.record(7, &fields("req", "B", None), false);
        assert_eq!(stats.finish(true), 44);
        assert_eq!(stats.csv(), "from,status,requests\nA,200,1\nA,429,41\nB,,2\n");
        let json = stats.json(vec![("records", Val::U64(7))]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["records"], 7);
        assert_eq!(
            value["rows"][1],
            serde_json::json!({"from": "A", "status": 429, "requests": 41})
        );
        assert_eq!(value["rows"][2]["status"], serde_json::Value::Null);
        assert!(Dim::list("day,patient").is_err());
    }

    #[test]
    fn only_records_a_seal_covers_are_counted_unless_the_tail_is_wanted() {
        let mut stats = Stats::new(Dim::list("day").unwrap());
        stats.record(1, &fields("deny", "A", Some(403)), false);
        stats.record(2, &Fields::default(), true);
        stats.record(3, &fields("deny", "A", Some(403)), false);
        assert_eq!(stats.finish(false), 1);
        assert_eq!(stats.csv(), "day,requests\n2026-03-21,1\n");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_kept_as_text() {
        assert_eq!(csv_field("urn:x"), "urn:x");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1"), "\"'-1\"");
    }
}
