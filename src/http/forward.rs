//! Rewriting heads as they cross the proxy: what the provider sees of a request and what the
//! consumer sees of a response. End-to-end fields pass unchanged and in order; hop-by-hop
//! fields stay behind (SPEC section 4).

use std::io::Write;
use std::net::SocketAddr;

use super::head::{is_hop_by_hop, trim_ows};
use super::request::RequestHead;
use super::response::ResponseHead;
use super::target::Target;

/// The request head as the provider receives it: origin-form target, `Host` set to the
/// provider, an RFC 7239 `Forwarded` element for the consumer appended when `forwarded_for` is
/// given, and then the last one: a consumer `Forwarded` field that does not parse is dropped.
pub fn write_request(
    out: &mut Vec<u8>,
    head: &RequestHead,
    target: &Target,
    forwarded_for: Option<SocketAddr>,
) {
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.path_and_query.as_bytes());
    // Writing to a Vec cannot fail.
    let _ = write!(out, " HTTP/1.1\r\nHost: {}\r\n", target.authority());
    for (name, value) in head.fields() {
        // A consumer `Forwarded` that is not RFC 7239 would run into the element we append.
        let unparsed_forwarded = || {
            forwarded_for.is_some() && name.eq_ignore_ascii_case(b"forwarded") && !is_forwarded_list(value)
        };
        if !name.eq_ignore_ascii_case(b"host")
            && !is_hop_by_hop(name, head.connection_tokens())
            && !unparsed_forwarded()
        {
            write_field(out, name, value);
        }
    }
    if let Some(addr) = forwarded_for {
        // Quoted because an address with a port contains ':' (RFC 7239 section 6).
        // Writing to a Vec cannot fail.
        let _ = match addr {
            SocketAddr::V4(a) => write!(out, "Forwarded: for=\"{a}\";proto=https\r\n"),
            SocketAddr::V6(a) => write!(
                out,
                "Forwarded: for=\"[{}]:{}\";proto=https\r\n",
                a.ip(),
                a.port()
            ),
        };
    }
    out.extend_from_slice(b"\r\n");
}

/// How the proxy tells the consumer about its connection after this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 default: nothing to say.
    Default,
    /// An HTTP/1.0 consumer that asked for keep-alive.
    KeepAlive,
    Close,
}

/// The response head as the consumer receives it. With `dechunk`, the body will be sent
/// without chunk framing (to an HTTP/1.0 consumer), so `Transfer-Encoding` is dropped.
/// `added` are fields of the proxy's own with whole-number values (e.g. `X-Rate-Limit-*`).
pub fn write_response(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    persistence: Persistence,
    dechunk: bool,
    added: &[(&str, u64)],
) {
    // The head rarely grows by more than the proxy's own fields: one reservation.
    out.reserve(head.len() + 160);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {} ", head.status);
    out.extend_from_slice(head.reason());
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.fields() {
        let dropped = is_hop_by_hop(name, head.connection_tokens())
            || (dechunk && name.eq_ignore_ascii_case(b"transfer-encoding"));
        if !dropped {
            write_field(out, name, value);
        }
    }
    for (name, value) in added {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    match persistence {
        Persistence::Default => {}
        Persistence::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a field value is an RFC 7239 `Forwarded` list (section 4): elements separated by
/// commas (OWS around them, empty ones allowed as RFC 9110 section 5.6.1 says), each of
/// `;`-separated `token=value` pairs (empty ones allowed), a value a token or a quoted string.
/// A provider joins the field lines into one list, so a consumer's line that does not end
/// outside a quoted string (`for="6.6.6.6`) would swallow the element the proxy appends after
/// it, and any other syntax error may make a provider drop the whole list, ours included.
pub fn is_forwarded_list(value: &[u8]) -> bool {
    let v = trim_ows(value);
    let mut pairs = 0;
    let mut i = 0;
    loop {
        // At the start of a pair, which may be empty.
        let name = v[i..].iter().take_while(|&&b| is_tchar(b)).count();
        if name > 0 {
            i += name;
            if v.get(i) != Some(&b'=') {
                return false;
            }
            i += 1;
            let Some(len) = value_len(&v[i..]) else {
                return false;
            };
            i += len;
            pairs += 1;
        }
        match v.get(i) {
            None => return pairs > 0,
            Some(b';') => i += 1,
            Some(b' ' | b'\t' | b',') => {
                // Between elements: OWS, at least one comma, OWS; commas only, in any number.
                let gap = v[i..]
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t' | b','))
                    .count();
                if !v[i..i + gap].contains(&b',') {
                    return false;
                }
                i += gap;
            }
            Some(_) => return false,
        }
    }
}

/// The length of the token or quoted string at the start of `v`, if there is one.
fn value_len(v: &[u8]) -> Option<usize> {
    if v.first() != Some(&b'"') {
        let len = v.iter().take_while(|&&b| is_tchar(b)).count();
        return (len > 0).then_some(len);
    }
    let mut i = 1;
    loop {
        match *v.get(i)? {
            b'"' => return Some(i + 1),
            // quoted-pair: the escaped byte may not be a control (obs-text is allowed).
            b'\\' => match *v.get(i + 1)? {
                b'\t' | b' '..=b'~' | 0x80.. => i += 2,
                _ => return None,
            },
            // qdtext.
            b'\t' | b' '..=b'~' | 0x80.. => i += 1,
            _ => return None,
        }
    }
}

/// RFC 9110 section 5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{request, response, target};

    #[test]
    fn request_keeps_end_to_end_fields_and_drops_hop_by_hop() {
        let raw = "POST /https://Prov:9443/P/1/search?q=1 HTTP/1.1\r\nHost: proxy\r\nSsp-From: 1\r\n\
                   Connection: close, X-Hop\r\nX-Hop: a\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
                   Proxy-Authorization: x\r\nUpgrade: h2c\r\nAuthorization: Bearer t\r\n\
                   Content-Length: 3\r\n\r\n";
        let head = request::parse(raw.as_bytes(), 8192).unwrap().unwrap();
        let t = target::parse(head.target()).unwrap();
        let mut out = Vec::new();
        write_request(&mut out, &head, &t, Some("192.0.2.1:4711".parse().unwrap()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /P/1/search?q=1 HTTP/1.1\r\nHost: prov:9443\r\nSsp-From: 1\r\n\
             Authorization: Bearer t\r\nContent-Length: 3\r\n\
             Forwarded: for=\"192.0.2.1:4711\";proto=https\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_for_ipv6_is_bracketed() {
        let head = request::parse(b"GET /https://h/p HTTP/1.1\r\nHost: x\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        let t = target::parse(head.target()).unwrap();
        let mut out = Vec::new();
        write_request(&mut out, &head, &t, Some("[2001:db8::1]:80".parse().unwrap()));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Forwarded: for=\"[2001:db8::1]:80\";proto=https\r\n")
        );
    }

    #[test]
    fn forwarded_rule_table() {
        let cases: [(&str, bool); 30] = [
            ("for=192.0.2.60", true),
            ("for=\"_gazonk\"", true),
            ("For=\"[2001:db8:cafe::17]:4711\"", true),
            ("for=192.0.2.60;proto=http;by=203.0.113.43", true),
            ("for=192.0.2.43, for=198.51.100.17", true),
            ("for=192.0.2.43 ,\tfor=198.51.100.17", true),
            ("for=a,,for=b", true),
            ("for=a,", true),
            (", for=a", true),
            ("for=a;", true),
            (";for=a", true),
            ("for=a;;by=b", true),
            ("for=\"a\\\"b\"", true),
            ("for=\"a\\\\\"", true),
            ("for=\"\"", true),
            ("for=\"\u{e9}\"", true),
            ("x-ext=!#$%&'*+-.^_`|~0", true),
            ("", false),
            (",", false),
            (";", false),
            ("for=\"6.6.6.6", false),
            ("for=\"a\\\"", false),
            ("for=\"a\\", false),
            ("for", false),
            ("for=", false),
            ("=a", false),
            ("for=a b", false),
            ("for=a;proto", false),
            ("for=a\"b\"", false),
            ("for=\"a\"b", false),
        ];
        for (value, want) in cases {
            assert_eq!(is_forwarded_list(value.as_bytes()), want, "{value:?}");
        }
        assert!(!is_forwarded_list(b"for=\"a\x7f\""));
        assert!(!is_forwarded_list(b"for=a=b"));
    }

    /// Issue 24 item 13: the provider joins every `Forwarded` line into one list; a consumer
    /// line with an unclosed quote would swallow ours. It is dropped, a valid one kept.
    #[test]
    fn consumer_forwarded_that_does_not_parse_is_dropped() {
        let raw = "GET /https://h/p HTTP/1.1\r\nHost: x\r\nForwarded: for=\"6.6.6.6\r\n\
                   forwarded: for=192.0.2.1\r\nFORWARDED: for=a;proto\r\n\r\n";
        let head = request::parse(raw.as_bytes(), 8192).unwrap().unwrap();
        let t = target::parse(head.target()).unwrap();
        let mut out = Vec::new();
        write_request(&mut out, &head, &t, Some("192.0.2.9:4711".parse().unwrap()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p HTTP/1.1\r\nHost: h\r\nforwarded: for=192.0.2.1\r\n\
             Forwarded: for=\"192.0.2.9:4711\";proto=https\r\n\r\n"
        );
        // Without an element of ours there is nothing to swallow: the field goes on as sent.
        let mut out = Vec::new();
        write_request(&mut out, &head, &t, None);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Forwarded: for=\"6.6.6.6\r\n")
        );
    }

    #[test]
    fn response_drops_hop_by_hop_and_states_persistence() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: keep-alive, X-Hop\r\n\
                   X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = response::parse(raw.as_bytes(), 8192, "GET").unwrap().unwrap();
        let mut out = Vec::new();
        write_response(
            &mut out,
            &head,
            Persistence::Close,
            true,
            &[("X-Rate-Limit-Remaining", 3), ("X-Rate-Limit-Reset", 60)],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nX-Rate-Limit-Remaining: 3\r\n\
             X-Rate-Limit-Reset: 60\r\nConnection: close\r\n\r\n"
        );
    }
}
