//! The one place that renders the proxy's own answers: a FHIR `OperationOutcome` in the shape
//! the Spine SSP publishes (GP Connect guide, "Spine Secure Proxy (SSP) errors"), JSON by
//! default and XML when the consumer's `Accept` prefers it (SPEC section 4).

use std::fmt;

/// FHIR `issue.code` values the proxy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueCode {
    Invalid,
    Timeout,
    TooCostly,
    NotSupported,
    Forbidden,
    Throttled,
    Transient,
}

impl IssueCode {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Timeout => "timeout",
            IssueCode::TooCostly => "too-costly",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Forbidden => "forbidden",
            IssueCode::Throttled => "throttled",
            IssueCode::Transient => "transient",
        }
    }
}

/// The `id` of one answer's `OperationOutcome`: a UUID (version 4) made fresh for each, and
/// written in the audit record of the request it answered, so that a consumer quoting it to
/// support finds the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeId([u8; 16]);

impl OutcomeId {
    /// For tests and examples that need an id but not a fresh one.
    pub const ZERO: OutcomeId = OutcomeId([0; 16]);

    /// From 16 random bytes (the caller's randomness: this module does no I/O).
    pub fn from_random(mut bytes: [u8; 16]) -> OutcomeId {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        OutcomeId(bytes)
    }
}

impl fmt::Display for OutcomeId {
    /// Lowercase `8-4-4-4-12` hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An answer the proxy makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub id: OutcomeId,
    pub status: u16,
    pub code: IssueCode,
    pub token: String,
    /// Close the consumer's connection after this answer.
    pub close: bool,
    /// Extra fields such as `Allow` or `Retry-After`.
    pub fields: Vec<(&'static str, String)>,
}

/// What the answer needs to know of the request it answers, if a head was read at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub trace_id: Option<&'a [u8]>,
    pub xml: bool,
    /// A HEAD request gets the fields but no body.
    pub head_request: bool,
    /// `Strict-Transport-Security` (`[server] hsts`).
    pub hsts: Option<&'a str>,
}

/// The coding system of the Spine SSP's answers, whose `code` is the HTTP status and whose
/// `display` is the token.
const SYSTEM: &str = "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0";

pub fn render(answer: &Answer, ctx: Context<'_>, out: &mut Vec<u8>) {
    let body = if ctx.xml {
        xml_body(answer)
    } else {
        json_body(answer)
    };
    let content_type = if ctx.xml {
        "application/fhir+xml"
    } else {
        "application/fhir+json"
    };
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            answer.status,
            reason_phrase(answer.status),
            body.len()
        )
        .as_bytes(),
    );
    if let Some(trace) = ctx.trace_id {
        // The value came from a header httparse accepted: it holds no CR or LF.
        out.extend_from_slice(b"Ssp-TraceID: ");
        out.extend_from_slice(trace);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(hsts) = ctx.hsts {
        out.extend_from_slice(b"Strict-Transport-Security: ");
        out.extend_from_slice(hsts.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &answer.fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if answer.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !ctx.head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

/// Fields in the order of the Spine SSP's published examples.
fn json_body(a: &Answer) -> String {
    let token = json_escape(&a.token);
    format!(
        "{{\"resourceType\":\"OperationOutcome\",\"id\":\"{}\",\"issue\":[{{\"code\":\"{}\",\
         \"severity\":\"error\",\"details\":{{\"coding\":[{{\"code\":\"{}\",\"display\":\"{token}\",\
         \"system\":\"{SYSTEM}\"}}]}},\"diagnostics\":\"{token}\"}}]}}",
        a.id,
        a.code.as_str(),
        a.status
    )
}

/// The same in FHIR XML, whose elements keep the resource definition's order.
fn xml_body(a: &Answer) -> String {
    let token = xml_escape(&a.token);
    format!(
        "<OperationOutcome xmlns=\"http://hl7.org/fhir\"><id value=\"{}\"/><issue><severity value=\"error\"/>\
         <code value=\"{}\"/><details><coding><system value=\"{SYSTEM}\"/><code value=\"{}\"/>\
         <display value=\"{token}\"/></coding></details><diagnostics value=\"{token}\"/></issue></OperationOutcome>",
        a.id,
        a.code.as_str(),
        a.status
    )
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Whether `Accept` ranks FHIR XML above JSON (q-values honoured; JSON wins ties).
pub fn prefers_xml(accept: Option<&[u8]>) -> bool {
    let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
        return false;
    };
    let (mut xml, mut json) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let q = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|v| v.parse::<f32>().ok())
            .unwrap_or(1.0);
        let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(media));
        if is(&[
            "application/fhir+xml",
            "application/xml+fhir",
            "application/xml",
            "text/xml",
        ]) {
            xml = xml.max(q);
        } else if is(&[
            "application/fhir+json",
            "application/json+fhir",
            "application/json",
            "*/*",
        ]) {
            json = json.max(q);
        }
    }
    xml > json
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            id: OutcomeId::from_random([0xab; 16]),
            status: 403,
            code: IssueCode::Forbidden,
            token: "ASID_CHECK_FAILED_MESSAGESENDER_1".into(),
            close: false,
            fields: vec![],
        }
    }

    #[test]
    fn json_answer_is_an_operation_outcome_with_the_token() {
        let mut out = Vec::new();
        render(
            &answer(),
            Context {
                trace_id: Some(b"abc"),
                ..Default::default()
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("Content-Type: application/fhir+json\r\n"));
        assert!(text.contains("Ssp-TraceID: abc\r\n"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert_eq!(
            body,
            "{\"resourceType\":\"OperationOutcome\",\"id\":\"abababab-abab-4bab-abab-abababababab\",\
             \"issue\":[{\"code\":\"forbidden\",\"severity\":\"error\",\"details\":{\"coding\":[{\
             \"code\":\"403\",\"display\":\"ASID_CHECK_FAILED_MESSAGESENDER_1\",\
             \"system\":\"http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0\"}]},\
             \"diagnostics\":\"ASID_CHECK_FAILED_MESSAGESENDER_1\"}]}"
        );
    }

    /// The published example "Sender ASID is not authorised for this interaction", its `id`
    /// aside, is what the proxy answers.
    #[test]
    fn json_answer_has_the_structure_of_the_published_spine_example() {
        let published = r#"{
            "resourceType": "OperationOutcome",
            "id": "10960df2-29d1-4e71-823c-c0bb9d723012",
            "issue": [{
                "code": "forbidden",
                "severity": "error",
                "details": {"coding": [{
                    "code": "403",
                    "display": "ASID_CHECK_FAILED_MESSAGESENDER_1",
                    "system": "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0"
                }]},
                "diagnostics": "ASID_CHECK_FAILED_MESSAGESENDER_1"
            }]
        }"#;
        let mut out = Vec::new();
        render(&answer(), Context::default(), &mut out);
        let text = String::from_utf8(out).unwrap();
        let ours: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        let mut theirs: serde_json::Value = serde_json::from_str(published).unwrap();
        theirs["id"] = ours["id"].clone();
        // Same fields and values (the key order, which serde_json's map does not keep, is
        // pinned byte for byte by the test above).
        assert_eq!(ours, theirs);
    }

    #[test]
    fn outcome_ids_are_version_4_uuids() {
        let id = OutcomeId::from_random([0xff; 16]).to_string();
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = OutcomeId::from_random([0; 16]).to_string();
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn xml_answer_escapes_the_token() {
        let mut a = answer();
        a.token = "ENDPOINT_x_VARIES_FROM_TARGETURL_https://h/p?a=1&b=<2>".into();
        a.close = true;
        let mut out = Vec::new();
        render(
            &a,
            Context {
                xml: true,
                ..Default::default()
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Type: application/fhir+xml\r\n"));
        assert!(text.contains(
            "<id value=\"abababab-abab-4bab-abab-abababababab\"/><issue><severity value=\"error\"/>\
             <code value=\"forbidden\"/><details><coding><system value=\"http://fhir.nhs.net/ValueSet/\
             gpconnect-schedule-response-code-1-0\"/><code value=\"403\"/><display value=\"ENDPOINT_x"
        ));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("a=1&amp;b=&lt;2&gt;"));
        assert!(!text.contains("<2>"));
    }

    #[test]
    fn json_token_with_quotes_stays_valid_json() {
        let mut a = answer();
        a.token = "x\"y\\z".into();
        let mut out = Vec::new();
        render(&a, Context::default(), &mut out);
        let text = String::from_utf8(out).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["issue"][0]["diagnostics"], "x\"y\\z");
    }

    #[test]
    fn head_request_gets_no_body() {
        let mut out = Vec::new();
        render(
            &answer(),
            Context {
                head_request: true,
                ..Default::default()
            },
            &mut out,
        );
        assert!(String::from_utf8(out).unwrap().ends_with("\r\n\r\n"));
    }

    #[test]
    fn accept_preference_honours_q_values() {
        assert!(!prefers_xml(None));
        assert!(prefers_xml(Some(b"application/fhir+xml")));
        assert!(!prefers_xml(Some(b"application/fhir+json, application/fhir+xml")));
        assert!(prefers_xml(Some(
            b"application/fhir+json;q=0.5, application/fhir+xml"
        )));
        assert!(!prefers_xml(Some(b"*/*")));
        assert!(!prefers_xml(Some(b"text/html")));
        assert!(prefers_xml(Some(b"Application/FHIR+XML; q=0.9, text/html")));
    }
}
