//! A provider's registered service root URL, and the host-name check shared with `fqdn`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A provider's registered service root URL, such as
/// `https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0`.
///
/// `url` is kept exactly as configured (minus one trailing `/`) because SPEC §4 check 12
/// compares the consumer's target against it textually: an IP in place of the name, or an
/// added `:443`, must not match. That is also why `port` remembers whether it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured, without a trailing `/`.
    pub url: String,
    /// Lowercased DNS name or IP literal; IPv6 without brackets.
    pub host: String,
    /// Only `Some` when the URL spells the port out.
    pub port: Option<u16>,
    /// `/Prescription-Exemptions/1.0.0`; no trailing `/`; `""` for a bare host.
    pub path: String,
}

impl Endpoint {
    /// Parses and checks a configured endpoint; the error is a message for `ConfigError`.
    pub(crate) fn parse(s: &str) -> Result<Endpoint, String> {
        let Some(rest) = s.strip_prefix("https://") else {
            if s.get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
            {
                return Err(format!(
                    "{s:?} uses plain http; providers are reached over mutual TLS, write https://"
                ));
            }
            return Err(format!(
                "expected an absolute URL starting with \"https://\", found {s:?}"
            ));
        };
        // A query or fragment would make "the target starts with the endpoint" ambiguous.
        if rest.contains('?') {
            return Err(format!(
                "{s:?} has a query (?...); an endpoint is a service root URL"
            ));
        }
        if rest.contains('#') {
            return Err(format!(
                "{s:?} has a fragment (#...); an endpoint is a service root URL"
            ));
        }
        let (host, port, path) = split_authority(s, rest)?;
        let path = path.strip_suffix('/').unwrap_or(path);
        check_path(path).map_err(|why| format!("{s:?}: {why}"))?;
        Ok(Endpoint {
            url: s.strip_suffix('/').unwrap_or(s).to_string(),
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The TCP port to connect to: the explicit one, or 443.
    pub fn connect_port(&self) -> u16 {
        self.port.unwrap_or(443)
    }

    /// `host[:port]` as it must appear in a `Host` header, IPv6 literals in brackets.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }
}

/// A plain-HTTP URL: where a CRL is published, or the forward proxy that fetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// As configured.
    pub url: String,
    /// Lowercased DNS name or IP literal; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// `/live/1c/crlc4519.crl`; `""` for a bare host.
    pub path: String,
}

impl HttpUrl {
    /// Only `http://`: a CRL carries its issuer's signature, which is what is trusted, and
    /// NHS CRL distribution points are plain HTTP (RFC 5280 section 4.2.1.13 expects that).
    pub(crate) fn parse(s: &str) -> Result<HttpUrl, String> {
        let Some(rest) = s
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &s[7..])
        else {
            return Err(format!(
                "expected a URL starting with \"http://\", found {s:?}; CRLs are signed by their issuer, so they are fetched over plain HTTP"
            ));
        };
        if rest.contains(['?', '#']) {
            return Err(format!(
                "{s:?} has a query or fragment; write the CRL's plain path"
            ));
        }
        let (host, port, path) = split_authority(s, rest)?;
        check_path(path).or_else(|why| match path {
            "/" => Ok(()),
            _ => Err(format!("{s:?}: {why}")),
        })?;
        Ok(HttpUrl {
            url: s.to_string(),
            host,
            port: port.unwrap_or(80),
            path: path.to_string(),
        })
    }

    /// `host[:port]` as the `Host` header and a proxy's request-target want it; the default
    /// port 80 is left out.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            80 => host,
            port => format!("{host}:{port}"),
        }
    }

    /// The origin-form request-target: the path, `/` when there is none.
    pub fn origin_target(&self) -> &str {
        if self.path.is_empty() { "/" } else { &self.path }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Whether `s` looks like a DNS host name: dot-separated labels of letters, digits and `-`.
///
/// Deliberately plausible rather than exhaustive: it exists to catch typos (spaces, schemes,
/// ports, trailing dots) in names that are later compared with certificate CNs.
pub(crate) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `host[:port]` and the path of `rest` (the URL `s` after its scheme), without user
/// information.
fn split_authority<'a>(s: &str, rest: &'a str) -> Result<(String, Option<u16>, &'a str), String> {
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(format!("{s:?} carries user information (user@); remove it"));
    }
    let (host, port) = split_host_port(authority).map_err(|why| format!("{s:?}: {why}"))?;
    Ok((host, port, path))
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (literal, after) = bracketed
            .split_once(']')
            .ok_or("the IPv6 literal has no closing ']'")?;
        literal
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{literal:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("unexpected text after ']'")?),
        };
        (literal, port)
    } else {
        if authority.matches(':').count() > 1 {
            return Err("an IPv6 address must be written in brackets, e.g. https://[::1]/".into());
        }
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("the URL has no host".to_string());
        }
        if host.parse::<Ipv4Addr>().is_err() && !is_dns_name(host) {
            return Err(format!("{host:?} is not a valid host name"));
        }
        (host, port)
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    // `u16::from_str` would also take "+443"; a URL port is digits only.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the port {port:?} is not a number"));
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("the port {port} is out of range (1-65535)")),
    }
}

/// Accepts RFC 3986 path characters only, and no empty segments: the target form joins the
/// endpoint and the FHIR request with exactly one `/`, so `//` in a root URL is a mistake.
fn check_path(path: &str) -> Result<(), String> {
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err("the path has an empty segment (//)".to_string());
        }
        let bytes = segment.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let escape = bytes.get(i + 1..i + 3);
                if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                    return Err("the path has a '%' not followed by two hex digits".to_string());
                }
                i += 3;
                continue;
            }
            if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)) {
                return Err(format!(
                    "the path has the character {:?}, which must be percent-encoded",
                    char::from(b)
                ));
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_plain_http_only() {
        let ok = [
            (
                "http://crl.nhs.uk/live/1c/crlc4519.crl",
                "crl.nhs.uk",
                80,
                "/live/1c/crlc4519.crl",
            ),
            ("HTTP://127.0.0.1:8080/x.crl", "127.0.0.1", 8080, "/x.crl"),
            ("http://[::1]:81/a", "::1", 81, "/a"),
            ("http://proxy.example:3128", "proxy.example", 3128, ""),
            ("http://proxy.example:3128/", "proxy.example", 3128, "/"),
        ];
        for (text, host, port, path) in ok {
            let url = HttpUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (url.host.as_str(), url.port, url.path.as_str()),
                (host, port, path),
                "{text}"
            );
        }
        let refused = [
            ("https://crl.nhs.uk/x.crl", "CRLs are signed"),
            ("ftp://crl.nhs.uk/x.crl", "http://"),
            ("ldap://crl.nhs.uk/x", "http://"),
            ("crl.nhs.uk/x.crl", "http://"),
            ("http://crl.nhs.uk/x.crl?a=1", "query"),
            ("http://user@crl.nhs.uk/x.crl", "user information"),
            ("http:///x.crl", "no host"),
            ("http://crl.nhs.uk:0/x.crl", "out of range"),
            ("http://crl nhs/x", "host name"),
            ("http://crl.nhs.uk/a b", "percent-encoded"),
        ];
        for (text, why) in refused {
            let error = HttpUrl::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(HttpUrl::parse("http://[::1]/").unwrap().authority(), "[::1]");
        assert_eq!(
            HttpUrl::parse("http://[::1]:8080/").unwrap().authority(),
            "[::1]:8080"
        );
        assert_eq!(
            HttpUrl::parse("http://a.example:80/").unwrap().authority(),
            "a.example"
        );
    }

    fn endpoint(url: &str, host: &str, port: Option<u16>, path: &str) -> Endpoint {
        let (url, host, path) = (url.to_string(), host.to_string(), path.to_string());
        Endpoint {
            url,
            host,
            port,
            path,
        }
    }

    #[test]
    fn endpoint_parsing_splits_host_port_and_path() {
        // (as configured, as parsed, its Host header authority)
        let table = [
            (
                "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0",
                endpoint(
                    "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0",
                    "pecs.example.nhs.uk",
                    None,
                    "/Prescription-Exemptions/1.0.0",
                ),
                "pecs.example.nhs.uk",
            ),
            (
                "https://PECS.Example.nhs.uk/R4/",
                endpoint(
                    "https://PECS.Example.nhs.uk/R4",
                    "pecs.example.nhs.uk",
                    None,
                    "/R4",
                ),
                "pecs.example.nhs.uk",
            ),
            (
                "https://host:8443/fhir",
                endpoint("https://host:8443/fhir", "host", Some(8443), "/fhir"),
                "host:8443",
            ),
            (
                "https://host:443",
                endpoint("https://host:443", "host", Some(443), ""),
                "host:443",
            ),
            (
                "https://host/",
                endpoint("https://host", "host", None, ""),
                "host",
            ),
            (
                "https://10.0.0.7/a",
                endpoint("https://10.0.0.7/a", "10.0.0.7", None, "/a"),
                "10.0.0.7",
            ),
            (
                "https://[::1]/a",
                endpoint("https://[::1]/a", "::1", None, "/a"),
                "[::1]",
            ),
            (
                "https://[FE80::1]:9443",
                endpoint("https://[FE80::1]:9443", "fe80::1", Some(9443), ""),
                "[fe80::1]:9443",
            ),
            (
                "https://h/a%2Fb/v1.0~x",
                endpoint("https://h/a%2Fb/v1.0~x", "h", None, "/a%2Fb/v1.0~x"),
                "h",
            ),
        ];
        for (input, expected, authority) in table {
            let parsed = Endpoint::parse(input).unwrap_or_else(|why| panic!("{input}: {why}"));
            assert_eq!(parsed, expected, "{input}");
            assert_eq!(parsed.authority(), authority, "{input}");
        }
    }

    #[test]
    fn connect_port_is_the_explicit_port_or_443() {
        assert_eq!(endpoint("https://h", "h", None, "").connect_port(), 443);
        assert_eq!(
            endpoint("https://h:8443", "h", Some(8443), "").connect_port(),
            8443
        );
    }

    #[test]
    fn endpoint_parsing_refuses_what_is_not_a_service_root() {
        // (input, a fragment the message must contain)
        let table = [
            ("http://pecs.example.nhs.uk/x", "plain http"),
            ("HTTP://pecs.example.nhs.uk/x", "plain http"),
            ("pecs.example.nhs.uk/x", "https://"),
            ("ftp://h/x", "https://"),
            ("https://h/x?a=1", "query"),
            ("https://h/x#top", "fragment"),
            ("https://user:pw@h/x", "user information"),
            ("https:///x", "no host"),
            ("https://", "no host"),
            ("https://:443/x", "no host"),
            ("https://h:/x", "port"),
            ("https://h:0/x", "out of range"),
            ("https://h:65536/x", "out of range"),
            ("https://h:+443/x", "not a number"),
            ("https://::1/x", "brackets"),
            ("https://[::1/x", "closing"),
            ("https://[zz]/x", "IPv6"),
            ("https://[::1]x/", "after ']'"),
            ("https://bad_host/x", "host name"),
            ("https://h./x", "host name"),
            ("https://h/a//b", "empty segment"),
            ("https://h/a b", "percent-encoded"),
            ("https://h/a%zz", "hex"),
        ];
        for (input, fragment) in table {
            match Endpoint::parse(input) {
                Ok(e) => panic!("{input} should be refused, got {e:?}"),
                Err(message) => assert!(message.contains(fragment), "{input}: {message}"),
            }
        }
    }

    #[test]
    fn dns_names_are_plausible_host_names() {
        for good in ["a", "dispenser-a.example.nhs.uk", "x1.Y2", "123"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            ".a",
            "-a.b",
            "a-.b",
            "a_b",
            "a b",
            "é.uk",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
