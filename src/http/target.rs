//! The request-target of a proxied request: `/https://host[:port]/path?query`, raw or with the
//! whole URL percent-encoded (`/https%3A%2F%2Fhost%2Fpath`). SPEC section 1.

use std::fmt;

/// A provider URL taken from a request-target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lowercased; an IPv6 literal keeps its brackets.
    pub host: String,
    /// Only when written in the target: `:443` is not the same as nothing (SPEC section 1).
    pub port: Option<u16>,
    /// Starts with `/`; the query, if any, included.
    pub path_and_query: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    NotProxyForm,
    NotHttps,
    BadEncoding,
    BadAuthority,
    BadPath,
}

impl Target {
    /// The path without the query.
    pub fn path(&self) -> &str {
        let end = self
            .path_and_query
            .bytes()
            .position(|b| b == b'?')
            .unwrap_or(self.path_and_query.len());
        &self.path_and_query[..end]
    }

    /// `host[:port]` as it goes in a `Host` header.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}{}", self.authority(), self.path_and_query)
    }
}

pub fn parse(raw: &str) -> Result<Target, TargetError> {
    let url = raw.strip_prefix('/').ok_or(TargetError::NotProxyForm)?;
    let decoded;
    let url = if starts_with_ignore_case(url, "https%3a%2f%2f") {
        decoded = percent_decode(url).ok_or(TargetError::BadEncoding)?;
        decoded.as_str()
    } else {
        url
    };
    if !starts_with_ignore_case(url, "https://") {
        return Err(if url.contains("://") {
            TargetError::NotHttps
        } else {
            TargetError::NotProxyForm
        });
    }
    let rest = &url["https://".len()..];
    if rest
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || b == b'\\')
    {
        return Err(TargetError::BadPath);
    }
    let authority_end = rest
        .bytes()
        .position(|b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (host, port) = parse_authority(&rest[..authority_end])?;
    let path_and_query = match &rest[authority_end..] {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let target = Target {
        host,
        port,
        path_and_query,
    };
    if has_dot_segment(target.path()) || has_hidden_separator(target.path()) {
        return Err(TargetError::BadPath);
    }
    Ok(target)
}

fn parse_authority(authority: &str) -> Result<(String, Option<u16>), TargetError> {
    if authority.is_empty() || authority.bytes().any(|b| b == b'@') {
        return Err(TargetError::BadAuthority);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or(TargetError::BadAuthority)?;
        let literal = &v6[..close];
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(TargetError::BadAuthority);
        }
        let after = &v6[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(TargetError::BadAuthority),
        };
        (&authority[..close + 2], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid_name = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !valid_name {
        return Err(TargetError::BadAuthority);
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(TargetError::BadAuthority),
            }
        }
        Some(_) => return Err(TargetError::BadAuthority),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// `.` and `..` segments (also percent-encoded) would let a provider resolve a path outside
/// the registered endpoint after our prefix check passed.
fn has_dot_segment(path: &str) -> bool {
    path.as_bytes().split(|&b| b == b'/').any(|segment| {
        let mut rest = segment;
        let mut dots = 0;
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

/// Encoded `/`, `\\` and control characters in the path: a provider that decodes them would
/// see different segments (or a path outside its root) than the prefix check did.
fn has_hidden_separator(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && match (hex_digit(w[1]), hex_digit(w[2])) {
                (Some(hi), Some(lo)) => {
                    let byte = hi << 4 | lo;
                    byte == b'/' || byte == b'\\' || byte < 0x20 || byte == 0x7f
                }
                _ => false,
            }
    })
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_form_is_split_into_host_port_and_path() {
        let t = parse("/https://PECS.example.nhs.uk/Prescription-Exemptions/1.0.0/search?a=1").unwrap();
        assert_eq!(t.host, "pecs.example.nhs.uk");
        assert_eq!(t.port, None);
        assert_eq!(t.path_and_query, "/Prescription-Exemptions/1.0.0/search?a=1");
        assert_eq!(t.path(), "/Prescription-Exemptions/1.0.0/search");
        assert_eq!(
            t.to_string(),
            "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search?a=1"
        );
    }

    #[test]
    fn percent_encoded_form_is_the_same_target() {
        let raw = parse("/https://localhost:9443/P/1.0.0/search?x=y").unwrap();
        let enc = parse("/https%3A%2F%2Flocalhost%3A9443%2FP%2F1.0.0%2Fsearch%3Fx%3Dy").unwrap();
        assert_eq!(raw, enc);
        assert_eq!(enc.port, Some(9443));
    }

    #[test]
    fn explicit_port_and_ip_literals_are_kept_as_written() {
        assert_eq!(parse("/https://h:443/p").unwrap().port, Some(443));
        assert_eq!(parse("/https://10.0.0.7/p").unwrap().host, "10.0.0.7");
        let v6 = parse("/https://[::1]:8443/p").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", Some(8443)));
        assert_eq!(parse("/https://h").unwrap().path_and_query, "/");
        assert_eq!(parse("/https://h?q").unwrap().path_and_query, "/?q");
        // Encoded separators are fine in the query: they never become path segments.
        assert_eq!(parse("/https://h/p?next=%2Fa%2Fb").unwrap().path(), "/p");
        assert_eq!(parse("/https://h/p%20q").unwrap().path(), "/p%20q");
    }

    #[test]
    fn targets_that_are_not_proxied_https_urls_are_refused() {
        let cases = [
            ("https://h/p", TargetError::NotProxyForm),
            ("*", TargetError::NotProxyForm),
            ("/Prescription-Exemptions/1.0.0", TargetError::NotProxyForm),
            ("/http://h/p", TargetError::NotHttps),
            ("/ftp://h/p", TargetError::NotHttps),
            ("/https://user@h/p", TargetError::BadAuthority),
            ("/https:///p", TargetError::BadAuthority),
            ("/https://h:0/p", TargetError::BadAuthority),
            ("/https://h:65536/p", TargetError::BadAuthority),
            ("/https://h:-1/p", TargetError::BadAuthority),
            ("/https://h_x/p", TargetError::BadAuthority),
            ("/https://[zz]/p", TargetError::BadAuthority),
            ("/https://h/p#frag", TargetError::BadPath),
            ("/https://h/a/../admin", TargetError::BadPath),
            ("/https://h/a/%2E%2e/admin", TargetError::BadPath),
            ("/https://h/./a", TargetError::BadPath),
            ("/https://h/P/1.0.0/x%2F..%2F..%2Fadmin", TargetError::BadPath),
            ("/https://h/P/1.0.0/x%2f..", TargetError::BadPath),
            ("/https://h/P/1.0.0/..%5Cadmin", TargetError::BadPath),
            ("/https://h/P/1.0.0/a%00b", TargetError::BadPath),
            ("/https%3A%2F%2Fh%2FP%2F1.0.0%2Fx%252F..", TargetError::BadPath),
            ("/https%3A%2F%2Fh%2Fa%2G", TargetError::BadEncoding),
            ("/https%3A%2F%2Fh%2F%0D%0A", TargetError::BadPath),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw), Err(want), "{raw}");
        }
    }
}
