//! One audit record: its fields, its exact bytes and its hash. Pure: the writer passes `seq`,
//! the timestamp and the chain head in.
//!
//! The hash construction, which `verify` relies on without ever re-serialising:
//!
//! - the record without its hash is one JSON object whose last field is `prev`:
//!   `{"seq":N,"ts":"…","type":"…",…,"prev":"<64 hex>"}`
//! - `h` = SHA-256 of exactly those bytes;
//! - the line written is the same bytes with the final `}` replaced by `,"h":"<64 hex>"}`,
//!   then `\n`. So a verifier strips the last 72 bytes of a line, appends `}` and hashes.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::event::{ConfigFacts, Event, RequestFacts};
use super::hex;
use super::json::{self, Val};
use crate::x509::format_utc;

/// The longest line written, newline included. Long strings are cut to fit.
pub const MAX_LINE: usize = 4096;
/// The `prev` of the first record ever.
pub const GENESIS: [u8; 32] = [0; 32];
/// `,"h":"` + 64 hex digits + `"}`.
const H_SUFFIX: usize = 72;

/// Everything that becomes a record: the proxy's events and the writer's own bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// Boxed: a request's facts are ten times the size of any other entry.
    Event(Box<Event>),
    Start {
        version: String,
        config_hash: [u8; 32],
        boot_id: [u8; 16],
        pid: u32,
        sync: &'static str,
        /// The epoch of the next seal, or `None` when keys are disabled.
        key_epoch: Option<u64>,
    },
    Stop {
        reason: String,
    },
    /// The first record of every file; `previous` names the file it continues.
    Open {
        previous: Option<String>,
    },
    /// The last record of a file before it is renamed.
    Close {
        reason: &'static str,
    },
    Seal {
        epoch: u64,
        mac: [u8; 32],
    },
    /// Bytes found after the last valid record at start-up, moved to `file`.
    Torn {
        file: String,
        length: u64,
        sha256: [u8; 32],
    },
}

impl Entry {
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::Event(event) => match **event {
                Event::Tls { .. } => "tls",
                Event::Deny { .. } => "deny",
                Event::Req { .. } => "req",
                Event::Res { .. } => "res",
                Event::Alarm { .. } => "alarm",
                Event::Config(_) => "config",
            },
            Entry::Start { .. } => "start",
            Entry::Stop { .. } => "stop",
            Entry::Open { .. } => "open",
            Entry::Close { .. } => "close",
            Entry::Seal { .. } => "seal",
            Entry::Torn { .. } => "torn",
        }
    }

    fn fields(&self) -> Vec<(&'static str, Val<'_>)> {
        match self {
            Entry::Event(event) => event_fields(event),
            Entry::Start {
                version,
                config_hash,
                boot_id,
                pid,
                sync,
                key_epoch,
            } => vec![
                ("version", Val::str(version)),
                ("config_hash", Val::owned(hex::encode(config_hash))),
                ("boot_id", Val::owned(hex::encode(boot_id))),
                ("pid", Val::U64(u64::from(*pid))),
                ("sync", Val::str(sync)),
                ("sealing", Val::Bool(key_epoch.is_some())),
                ("key_epoch", Val::opt_u64(*key_epoch)),
            ],
            Entry::Stop { reason } => vec![("reason", Val::str(reason))],
            Entry::Open { previous } => vec![("previous", Val::opt(previous))],
            Entry::Close { reason } => vec![("reason", Val::str(reason))],
            Entry::Seal { epoch, mac } => {
                vec![("epoch", Val::U64(*epoch)), ("mac", Val::owned(hex::encode(mac)))]
            }
            Entry::Torn { file, length, sha256 } => vec![
                ("file", Val::str(file)),
                ("length", Val::U64(*length)),
                ("sha256", Val::owned(hex::encode(sha256))),
            ],
        }
    }
}

fn event_fields(event: &Event) -> Vec<(&'static str, Val<'_>)> {
    match event {
        Event::Tls {
            peer,
            reason,
            certificate,
        } => {
            let c = certificate.as_deref();
            vec![
                ("peer", Val::owned(peer.to_string())),
                ("reason", Val::str(reason)),
                ("subject", Val::opt_str(c.map(|c| &*c.subject))),
                ("issuer", Val::opt_str(c.map(|c| &*c.issuer))),
                ("serial", Val::opt_str(c.map(|c| &*c.serial_hex))),
                (
                    "not_after",
                    c.map_or(Val::Null, |c| Val::owned(format_utc(c.not_after))),
                ),
                ("fingerprint", Val::opt_str(c.map(|c| &*c.fingerprint))),
            ]
        }
        Event::Deny {
            request,
            status,
            token,
            refusals,
            outcome_id,
        } => {
            let mut fields = request_fields(request);
            fields.push(("status", Val::U64(u64::from(*status))));
            fields.push(("token", Val::str(token)));
            fields.push(("outcome_id", Val::owned(outcome_id.to_string())));
            // Only a count of more than one is written: a record is one refusal unless it
            // says otherwise.
            if *refusals > 1 {
                fields.push(("refusals", Val::U64(*refusals)));
            }
            fields
        }
        Event::Req { request } => request_fields(request),
        Event::Res {
            request,
            req_seq,
            status,
            token,
            outcome_id,
            bytes_in,
            bytes_out,
            duration_ms,
            upstream_ms,
        } => vec![
            ("trace_id", Val::str(request.text.trace_id().unwrap_or_default())),
            ("req_seq", Val::opt_u64(*req_seq)),
            ("status", Val::U64(u64::from(*status))),
            ("token", Val::opt(token)),
            (
                "outcome_id",
                outcome_id.map_or(Val::Null, |id| Val::owned(id.to_string())),
            ),
            ("bytes_in", Val::U64(*bytes_in)),
            ("bytes_out", Val::U64(*bytes_out)),
            ("duration_ms", Val::F64(*duration_ms)),
            ("upstream_ms", Val::opt_f64(*upstream_ms)),
        ],
        Event::Alarm { message } => vec![("message", Val::str(message))],
        Event::Config(c) => config_fields(c),
    }
}

fn config_fields(c: &ConfigFacts) -> Vec<(&'static str, Val<'_>)> {
    let files = c.files.iter().map(|(path, sha256)| {
        Val::Obj(vec![
            ("path", Val::str(path)),
            ("sha256", Val::owned(hex::encode(sha256))),
        ])
    });
    let crls = c.crls.iter().map(|crl| {
        Val::Obj(vec![
            ("path", Val::str(&crl.path)),
            ("issuer", Val::str(&crl.issuer)),
            ("this_update", Val::owned(format_utc(crl.this_update))),
            (
                "next_update",
                crl.next_update.map_or(Val::Null, |t| Val::owned(format_utc(t))),
            ),
        ])
    });
    vec![
        ("cause", Val::str(c.cause)),
        ("path", Val::str(&c.path)),
        ("sha256", Val::owned(hex::encode(&c.sha256))),
        ("consumers", Val::U64(c.consumers as u64)),
        ("providers", Val::U64(c.providers as u64)),
        ("files", Val::List(files.collect())),
        ("crls", Val::List(crls.collect())),
    ]
}

fn request_fields(r: &RequestFacts) -> Vec<(&'static str, Val<'_>)> {
    let jwt = r.claims.as_ref().map_or(Val::Null, |c| {
        Val::Obj(vec![
            ("iss", Val::opt(&c.iss)),
            ("sub", Val::opt(&c.sub)),
            ("requesting_organization", Val::opt(&c.requesting_organization)),
            ("requesting_practitioner", Val::opt(&c.requesting_practitioner)),
            ("reason_for_request", Val::opt(&c.reason_for_request)),
            ("aud", Val::opt(&c.aud)),
            ("exp", Val::opt(&c.exp)),
            ("iat", Val::opt(&c.iat)),
            ("requested_scope", Val::opt(&c.requested_scope)),
            ("requesting_device", Val::opt(&c.requesting_device)),
            ("requested_record", Val::opt(&c.requested_record)),
        ])
    });
    let text = r.text.get();
    vec![
        ("trace_id", Val::opt_str(text.trace_id)),
        ("from", Val::opt_str(text.from)),
        ("to", Val::opt_str(text.to)),
        ("interaction", Val::opt_str(text.interaction)),
        ("method", Val::str(text.method)),
        ("target", Val::str(text.target)),
        ("peer", Val::owned(r.peer.to_string())),
        ("subject", Val::str(&r.subject)),
        ("issuer", Val::str(&r.issuer)),
        ("serial", Val::str(&r.serial)),
        ("fingerprint", Val::str(&r.fingerprint)),
        ("jwt", jwt),
    ]
}

/// Where the chain stands: the `seq` the next record gets and the hash it links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub next_seq: u64,
    pub prev: [u8; 32],
}

impl Head {
    pub const GENESIS: Head = Head {
        next_seq: 0,
        prev: GENESIS,
    };
}

/// A serialised record: the bytes to write (newline included) and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    pub h: [u8; 32],
}

/// Serialises `entry` as record `seq` linked to `prev`, cutting long strings to keep the line
/// within [`MAX_LINE`] and naming every cut field in `truncated`.
pub fn line(seq: u64, ts: &str, entry: &Entry, prev: &[u8; 32]) -> Line {
    let mut out = String::with_capacity(512);
    let h = append_line(&mut out, seq, ts, entry, prev);
    Line {
        bytes: out.into_bytes(),
        h,
    }
}

/// As [`line`], appending the bytes to `out` (a writer's batch); returns the hash.
pub fn append_line(out: &mut String, seq: u64, ts: &str, entry: &Entry, prev: &[u8; 32]) -> [u8; 32] {
    let kind = entry.kind();
    let mut fields = entry.fields();
    let mut truncated: Vec<Val> = Vec::new();
    let start = out.len();
    loop {
        // Writing to a String cannot fail.
        let _ = write!(out, "{{\"seq\":{seq},\"ts\":");
        json::write_str(out, ts);
        out.push_str(",\"type\":");
        json::write_str(out, kind);
        json::write_fields(out, &fields);
        if !truncated.is_empty() {
            json::write_fields(out, &[("truncated", Val::List(truncated.clone()))]);
        }
        out.push_str(",\"prev\":\"");
        hex::push(out, prev);
        out.push('"');
        let total = out.len() - start + H_SUFFIX + 1;
        if total > MAX_LINE
            && let Some(name) = json::shrink(&mut fields, total - MAX_LINE)
        {
            let name = Val::owned(name);
            if !truncated.contains(&name) {
                truncated.push(name);
            }
            out.truncate(start);
            continue;
        }
        return finish(out, start);
    }
}

/// Hashes the record begun at `start` + `}` and appends the hash field, the closing brace and
/// the newline.
fn finish(out: &mut String, start: usize) -> [u8; 32] {
    let h = hash_record(&out.as_bytes()[start..]);
    out.push_str(",\"h\":\"");
    hex::push(out, &h);
    out.push_str("\"}\n");
    h
}

/// SHA-256 of `body_without_brace` followed by `}`: the record as written, without `h`.
fn hash_record(body_without_brace: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(body_without_brace)
        .chain_update(b"}")
        .finalize()
        .into()
}

/// The bytes of a checked line (see [`parse`]) that its hash covers before the hex digits of
/// its `prev`: `h` is SHA-256 of these, those 64 digits and `"}`. An extract stands for a record
/// it leaves out by SHA-256's state after them (`extract.rs`).
pub fn before_prev(line: &[u8]) -> &[u8] {
    // `"` + 64 hex digits, then the `,"h":…}` suffix.
    &line[..line.len().saturating_sub(H_SUFFIX + 65)]
}

/// What the verifier and the start-up scan need from a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub seq: u64,
    pub ts: String,
    pub kind: String,
    pub prev: [u8; 32],
    pub h: [u8; 32],
    /// `seal` only.
    pub seal: Option<(u64, [u8; 32])>,
    /// `start` only: the epoch of the next seal, if keys are enabled.
    pub key_epoch: Option<u64>,
    /// `torn` only.
    pub torn: Option<TornClaim>,
}

/// A `torn` record's declaration of the bytes it moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornClaim {
    pub file: String,
    pub length: u64,
    pub sha256: [u8; 32],
}

#[derive(serde::Deserialize)]
struct Raw {
    seq: u64,
    ts: String,
    #[serde(rename = "type")]
    kind: String,
    prev: String,
    epoch: Option<u64>,
    mac: Option<String>,
    key_epoch: Option<u64>,
    file: Option<String>,
    length: Option<u64>,
    sha256: Option<String>,
}

const KINDS: [&str; 12] = [
    "start", "stop", "open", "close", "seal", "torn", "tls", "deny", "req", "res", "alarm", "config",
];

/// Checks one line (without its newline): the hash first, so that any changed byte is named
/// as such, then the fields the chain needs. Unknown record types are refused.
pub fn parse(line: &[u8]) -> Result<Parsed, String> {
    let n = line.len();
    if n < H_SUFFIX + 2 || &line[n - H_SUFFIX..n - 66] != b",\"h\":\"" || &line[n - 2..] != b"\"}" {
        return Err("not an audit record (no trailing \"h\")".into());
    }
    let h = hex::decode32(&line[n - 66..n - 2]).ok_or("\"h\" is not 64 lowercase hex digits")?;
    let body = &line[..n - H_SUFFIX];
    if hash_record(body) != h {
        return Err("hash mismatch: the record's bytes were changed".into());
    }
    let mut object = Vec::with_capacity(body.len() + 1);
    object.extend_from_slice(body);
    object.push(b'}');
    let raw: Raw = serde_json::from_slice(&object).map_err(|e| format!("not a valid record: {e}"))?;
    if !KINDS.contains(&raw.kind.as_str()) {
        return Err(format!("unknown record type {:?}", raw.kind));
    }
    let prev = hex::decode32(raw.prev.as_bytes()).ok_or("\"prev\" is not 64 lowercase hex digits")?;
    let seal = match raw.kind.as_str() {
        "seal" => {
            let mac = raw.mac.as_deref().and_then(|m| hex::decode32(m.as_bytes()));
            Some((
                raw.epoch.ok_or("seal without \"epoch\"")?,
                mac.ok_or("seal without a valid \"mac\"")?,
            ))
        }
        _ => None,
    };
    let torn = match raw.kind.as_str() {
        "torn" => {
            let sha256 = raw.sha256.as_deref().and_then(|s| hex::decode32(s.as_bytes()));
            Some(TornClaim {
                file: raw.file.ok_or("torn record without \"file\"")?,
                length: raw.length.ok_or("torn record without \"length\"")?,
                sha256: sha256.ok_or("torn record without a valid \"sha256\"")?,
            })
        }
        _ => None,
    };
    Ok(Parsed {
        seq: raw.seq,
        ts: raw.ts,
        kind: raw.kind,
        prev,
        h,
        seal,
        key_epoch: raw.key_epoch,
        torn,
    })
}

/// RFC 3339 UTC with milliseconds: `2026-03-21T10:04:05.123Z`.
pub fn format_ts(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = format_utc(i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    let whole = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{whole}.{:03}Z", since.subsec_millis())
}

/// `2026-03-21T10:04:05.123Z` → `20260321T100405Z`, the time in a rotated file's name.
pub fn compact_ts(ts: &str) -> Option<String> {
    let head = ts.get(..19)?;
    let mut out: String = head.chars().filter(|c| *c != '-' && *c != ':').collect();
    out.push('Z');
    (out.len() == 16 && out.as_bytes()[8] == b'T').then_some(out)
}

/// The UTC day of a timestamp, for daily rotation: `2026-03-21`.
pub fn day(ts: &str) -> &str {
    ts.get(..10).unwrap_or(ts)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::{RequestText, Text};
    use crate::policy::jwt::Claims;

    fn facts() -> RequestFacts {
        RequestFacts {
            text: RequestText::new(&Text {
                trace_id: Some("5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44"),
                from: Some("200000000001"),
                to: Some("200000000999"),
                interaction: Some("urn:x"),
                method: "GET",
                target: "/https://p.example/R/search?x=1",
            }),
            peer: "10.0.0.1:5000".parse().unwrap(),
            subject: "CN=a, OU=Devices, O=nhs".into(),
            issuer: "CN=NHS Level 1C".into(),
            serial: "0a1b".into(),
            fingerprint: "ab".repeat(32).into(),
            claims: Some(Claims {
                iss: Some("x".into()),
                aud: Some("https://p.example/R/search".into()),
                exp: Some("1469436987".into()),
                iat: Some("1469436687".into()),
                requested_scope: Some("R/search".into()),
                requesting_device: Some("200000000001".into()),
                requested_record: Some("9000000009".into()),
                ..Claims::default()
            }),
        }
    }

    #[test]
    fn a_record_is_its_fields_then_prev_then_h_over_the_bytes_without_h() {
        let entry = Entry::Close { reason: "size" };
        let line = line(7, "2026-03-21T10:04:05.123Z", &entry, &[0x11; 32]);
        let text = String::from_utf8(line.bytes.clone()).unwrap();
        let without_h = format!(
            "{{\"seq\":7,\"ts\":\"2026-03-21T10:04:05.123Z\",\"type\":\"close\",\"reason\":\"size\",\"prev\":\"{}\"}}",
            "11".repeat(32)
        );
        let h: [u8; 32] = Sha256::digest(without_h.as_bytes()).into();
        assert_eq!(line.h, h);
        assert_eq!(
            text,
            format!(
                "{},\"h\":\"{}\"}}\n",
                &without_h[..without_h.len() - 1],
                hex::encode(&h)
            )
        );
        let parsed = parse(&line.bytes[..line.bytes.len() - 1]).unwrap();
        assert_eq!(
            (parsed.seq, parsed.kind.as_str(), parsed.prev, parsed.h),
            (7, "close", [0x11; 32], h)
        );
    }

    #[test]
    fn request_records_carry_every_fact_and_the_jwt_claims() {
        let line = line(
            1,
            "t",
            &Entry::Event(Box::new(Event::Deny {
                request: facts().into(),
                status: 403,
                token: "T".into(),
                refusals: 1,
                outcome_id: crate::http::answer::OutcomeId::from_random([7; 16]),
            })),
            &GENESIS,
        );
        let value: serde_json::Value = serde_json::from_slice(&line.bytes).unwrap();
        assert_eq!(value["type"], "deny");
        assert_eq!(value["trace_id"], "5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44");
        assert_eq!(value["peer"], "10.0.0.1:5000");
        assert_eq!(value["jwt"]["iss"], "x");
        assert_eq!(value["jwt"]["sub"], serde_json::Value::Null);
        // Issue 17 item 3: what the audit and provenance pages publish, beyond who asked.
        let jwt = &value["jwt"];
        assert_eq!(
            [
                &jwt["aud"],
                &jwt["exp"],
                &jwt["iat"],
                &jwt["requested_scope"],
                &jwt["requesting_device"],
                &jwt["requested_record"]
            ],
            [
                "https://p.example/R/search",
                "1469436987",
                "1469436687",
                "R/search",
                "200000000001",
                "9000000009"
            ]
        );
        assert_eq!(
            (value["status"].as_u64(), value["token"].as_str()),
            (Some(403), Some("T"))
        );
    }

    #[test]
    fn any_changed_byte_is_a_hash_mismatch() {
        let line = line(
            3,
            "t",
            &Entry::Event(Box::new(Event::Alarm {
                message: "disk".into(),
            })),
            &GENESIS,
        );
        let body = &line.bytes[..line.bytes.len() - 1];
        for i in 0..body.len() {
            let mut bad = body.to_vec();
            bad[i] ^= 0x01;
            assert!(parse(&bad).is_err(), "byte {i} changed and still parsed");
        }
    }

    #[test]
    fn long_fields_are_cut_to_fit_and_named() {
        let mut request = facts();
        let target = format!("/https://p.example/{}", "a".repeat(10_000));
        request.text = RequestText::new(&Text {
            target: &target,
            ..request.text.get()
        });
        request.claims = Some(Claims {
            sub: Some("\n".repeat(3000)),
            ..Claims::default()
        });
        let line = line(
            9,
            "t",
            &Entry::Event(Box::new(Event::Req {
                request: request.into(),
            })),
            &GENESIS,
        );
        assert!(line.bytes.len() <= MAX_LINE, "{}", line.bytes.len());
        assert_eq!(line.bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&line.bytes).unwrap();
        assert_eq!(value["truncated"], serde_json::json!(["target", "jwt.sub"]));
        assert!(
            value["target"]
                .as_str()
                .unwrap()
                .starts_with("/https://p.example/aaa")
        );
        assert!(parse(&line.bytes[..line.bytes.len() - 1]).is_ok());
    }

    #[test]
    fn seal_and_torn_fields_are_required_and_read() {
        let seal = line(
            4,
            "t",
            &Entry::Seal {
                epoch: 2,
                mac: [7; 32],
            },
            &GENESIS,
        );
        assert_eq!(
            parse(&seal.bytes[..seal.bytes.len() - 1]).unwrap().seal,
            Some((2, [7; 32]))
        );
        let torn = Entry::Torn {
            file: "audit.jsonl.torn-5".into(),
            length: 10,
            sha256: [1; 32],
        };
        let torn = line(5, "t", &torn, &GENESIS);
        let claim = parse(&torn.bytes[..torn.bytes.len() - 1]).unwrap().torn.unwrap();
        assert_eq!(
            (claim.file.as_str(), claim.length, claim.sha256),
            ("audit.jsonl.torn-5", 10, [1; 32])
        );
    }

    #[test]
    fn parse_refuses_unknown_types_and_foreign_lines() {
        let forged = format!(
            "{{\"seq\":1,\"ts\":\"t\",\"type\":\"note\",\"prev\":\"{}\"",
            "0".repeat(64)
        );
        let h = hash_record(forged.as_bytes());
        let forged = format!("{forged},\"h\":\"{}\"}}", hex::encode(&h));
        assert!(
            parse(forged.as_bytes())
                .unwrap_err()
                .contains("unknown record type")
        );
        assert!(parse(b"hello").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn a_config_record_names_every_file_with_its_hash_and_each_crl_with_its_dates() {
        let facts = ConfigFacts {
            cause: "reload",
            path: "/etc/ssp/ssp.toml".into(),
            sha256: [0xab; 32],
            files: vec![("/etc/ssp/tls/ssp.pem".into(), [1; 32])],
            consumers: 3,
            providers: 1,
            crls: vec![crate::audit::CrlFacts {
                path: "/etc/ssp/tls/level1c.crl".into(),
                issuer: "CN=NHS Level 1C".into(),
                this_update: 1_774_087_445,
                next_update: None,
            }],
        };
        let line = line(
            2,
            "t",
            &Entry::Event(Box::new(Event::Config(facts.into()))),
            &GENESIS,
        );
        let value: serde_json::Value = serde_json::from_slice(&line.bytes).unwrap();
        assert_eq!(value["type"], "config");
        assert_eq!(value["sha256"], "ab".repeat(32));
        assert_eq!(
            (value["consumers"].as_u64(), value["providers"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(value["files"][0]["sha256"], "01".repeat(32));
        assert_eq!(value["crls"][0]["this_update"], "2026-03-21T10:04:05Z");
        // The verifier knows the type.
        assert!(parse(&line.bytes[..line.bytes.len() - 1]).is_ok());
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_774_087_445_123);
        let ts = format_ts(t);
        assert_eq!(ts, "2026-03-21T10:04:05.123Z");
        assert_eq!(compact_ts(&ts).as_deref(), Some("20260321T100405Z"));
        assert_eq!(day(&ts), "2026-03-21");
        assert_eq!(compact_ts("short"), None);
    }
}
