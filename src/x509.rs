//! The little of X.509 DER that rustls-webpki does not expose: distinguished names as text
//! (for identity and audit), a certificate's validity and a CRL's dates (for freshness).
//! Pure, bounded, never panics.

/// One DER element: its tag and its contents.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and what follows.
fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((
        Tlv {
            tag,
            value: &rest[..len],
        },
        &rest[len..],
    ))
}

/// Reads an element that must carry `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (tlv, rest) = read(input)?;
    (tlv.tag == tag).then_some((tlv.value, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const CRL_EXTENSIONS: u8 = 0xa0;
/// A certificate's `[0] EXPLICIT Version` (the same tag as a CRL's extensions).
const EXPLICIT_VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// A distinguished name's attributes in certificate order, with short names where known.
pub type Name = Vec<(String, String)>;

/// Parses the contents of a `Name` SEQUENCE (as `webpki::Cert::subject()` returns it).
pub fn parse_name(mut contents: &[u8]) -> Option<Name> {
    let mut attrs = Vec::new();
    while !contents.is_empty() {
        let (mut set, rest) = expect(contents, SET)?;
        contents = rest;
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(pair, OID)?;
            let (value, _) = read(value)?;
            attrs.push((attribute_name(oid), string_value(value.tag, value.value)?));
        }
    }
    Some(attrs)
}

/// RFC 4514 text: most specific attribute first, e.g. `CN=a.example, OU=Devices, O=nhs`.
pub fn format_name(name: &Name) -> String {
    name.iter()
        .rev()
        .map(|(k, v)| format!("{k}={}", escape_dn_value(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let leading = i == 0 && (c == ' ' || c == '#');
        if leading || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        other => dotted_oid(other),
    }
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in oid.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (value / 40).min(2);
                parts.push(first);
                parts.push(value - first * 40);
            } else {
                parts.push(value);
            }
            value = 0;
        } else if i == oid.len() - 1 {
            return "?".into();
        }
    }
    parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn string_value(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString
        0x0c | 0x13 | 0x16 | 0x12 => String::from_utf8(bytes.to_vec()).ok(),
        // TeletexString: in practice Latin-1
        0x14 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1e if bytes.len().is_multiple_of(2) => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// A certificate's notBefore and notAfter (seconds since the epoch), from its DER
/// (RFC 5280 section 4.1: tbsCertificate's version, serial, signature, issuer, validity).
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    if let Some((version, rest)) = read(tbs)
        && version.tag == EXPLICIT_VERSION
    {
        tbs = rest;
    }
    let (_serial, rest) = expect(tbs, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (not_before, rest) = read(validity)?;
    let (not_after, _) = read(rest)?;
    Some((
        parse_time(not_before.tag, not_before.value)?,
        parse_time(not_after.tag, not_after.value)?,
    ))
}

/// What `ssp` needs to know about a CRL beyond what rustls-webpki checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// Contents of the issuer `Name` SEQUENCE, comparable with `webpki::Cert::issuer()`.
    pub issuer: Vec<u8>,
    /// Seconds since the Unix epoch.
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// The cRLNumber extension's INTEGER contents (big-endian), when present.
    pub number: Option<Vec<u8>>,
    /// Entries in revokedCertificates.
    pub revoked: usize,
}

/// Reads issuer, thisUpdate, nextUpdate, the entry count and the CRL number from a DER
/// `CertificateList` (RFC 5280 section 5.1).
pub fn crl_info(der: &[u8]) -> Option<CrlInfo> {
    let (list, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(list, SEQUENCE)?;
    if let Some((version, rest)) = read(tbs)
        && version.tag == INTEGER
    {
        tbs = rest;
    }
    let (_signature, rest) = expect(tbs, SEQUENCE)?;
    let (issuer, rest) = expect(rest, SEQUENCE)?;
    let (this_update, mut rest) = read(rest)?;
    let this_update = parse_time(this_update.tag, this_update.value)?;
    let mut next_update = None;
    if let Some((t, after)) = read(rest)
        && (t.tag == UTC_TIME || t.tag == GENERALIZED_TIME)
    {
        next_update = Some(parse_time(t.tag, t.value)?);
        rest = after;
    }
    let mut revoked = 0;
    if let Some((entries, after)) = expect(rest, SEQUENCE) {
        revoked = count(entries)?;
        rest = after;
    }
    let number = match expect(rest, CRL_EXTENSIONS) {
        Some((extensions, _)) => crl_number(extensions)?,
        None => None,
    };
    Some(CrlInfo {
        issuer: issuer.to_vec(),
        this_update,
        next_update,
        number,
        revoked,
    })
}

/// How many elements a SEQUENCE's contents hold.
fn count(mut contents: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !contents.is_empty() {
        contents = read(contents)?.1;
        n += 1;
    }
    Some(n)
}

/// The cRLNumber (2.5.29.20) among a CRL's `[0] EXPLICIT Extensions`.
fn crl_number(explicit: &[u8]) -> Option<Option<Vec<u8>>> {
    let (mut extensions, _) = expect(explicit, SEQUENCE)?;
    while !extensions.is_empty() {
        let (extension, rest) = expect(extensions, SEQUENCE)?;
        extensions = rest;
        let (oid, mut value) = expect(extension, OID)?;
        if oid != [0x55, 0x1d, 0x14] {
            continue;
        }
        if let Some((critical, rest)) = read(value)
            && critical.tag == 0x01
        {
            value = rest;
        }
        let (octets, _) = expect(value, OCTET_STRING)?;
        let (number, _) = expect(octets, INTEGER)?;
        return Some(Some(number.to_vec()));
    }
    Some(None)
}

/// Compares two DER INTEGER contents as non-negative numbers (CRL numbers are, RFC 5280
/// section 5.2.3): leading zero bytes do not count.
pub fn compare_unsigned(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let strip = |x: &[u8]| -> Vec<u8> { x.iter().copied().skip_while(|&b| b == 0).collect() };
    let (a, b) = (strip(a), strip(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

/// The three parts of a signed X.509 structure (certificate or CRL): the to-be-signed part
/// as encoded (tag and length included, as it was signed), the signature algorithm's
/// AlgorithmIdentifier contents, and the signature bits.
pub struct Signed<'a> {
    pub tbs: &'a [u8],
    pub algorithm: &'a [u8],
    pub signature: &'a [u8],
}

pub fn signed_parts(der: &[u8]) -> Option<Signed<'_>> {
    let (outer, rest) = expect(der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (_, after_tbs) = expect(outer, SEQUENCE)?;
    let tbs = &outer[..outer.len() - after_tbs.len()];
    let (algorithm, rest) = expect(after_tbs, SEQUENCE)?;
    let (bits, rest) = expect(rest, BIT_STRING)?;
    let (&unused, signature) = bits.split_first()?;
    (unused == 0 && rest.is_empty()).then_some(Signed {
        tbs,
        algorithm,
        signature,
    })
}

/// A SubjectPublicKeyInfo's contents (as `TrustAnchor::subject_public_key_info` holds them)
/// split into its AlgorithmIdentifier contents and the key bits.
pub fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (algorithm, rest) = expect(spki, SEQUENCE)?;
    let (bits, _) = expect(rest, BIT_STRING)?;
    let (&unused, key) = bits.split_first()?;
    (unused == 0).then_some((algorithm, key))
}

/// UTCTime (`YYMMDDHHMMSSZ`, RFC 5280 years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2026-11-25T16:23:04Z`).
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes one attribute as SET { SEQUENCE { OID, PrintableString } }.
    fn rdn(oid: &[u8], value: &str) -> Vec<u8> {
        let mut pair = vec![OID, oid.len() as u8];
        pair.extend_from_slice(oid);
        pair.extend_from_slice(&[0x13, value.len() as u8]);
        pair.extend_from_slice(value.as_bytes());
        let mut seq = vec![SEQUENCE, pair.len() as u8];
        seq.extend(pair);
        let mut set = vec![SET, seq.len() as u8];
        set.extend(seq);
        set
    }

    #[test]
    fn names_parse_and_format_most_specific_first() {
        let mut name = rdn(&[0x55, 4, 10], "nhs");
        name.extend(rdn(&[0x55, 4, 11], "Devices"));
        name.extend(rdn(&[0x55, 4, 3], "a.example.nhs.uk"));
        let parsed = parse_name(&name).unwrap();
        assert_eq!(parsed[2], ("CN".to_string(), "a.example.nhs.uk".to_string()));
        assert_eq!(format_name(&parsed), "CN=a.example.nhs.uk, OU=Devices, O=nhs");
    }

    #[test]
    fn dn_special_characters_are_escaped() {
        let name = vec![("CN".to_string(), "a,b+c".to_string())];
        assert_eq!(format_name(&name), "CN=a\\,b\\+c");
    }

    #[test]
    fn unknown_oids_are_dotted() {
        assert_eq!(
            attribute_name(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }

    #[test]
    fn truncated_der_is_rejected_not_panicked_on() {
        let name = rdn(&[0x55, 4, 3], "abc");
        for cut in 0..name.len() {
            assert!(
                parse_name(&name[..cut]).is_none_or(|n| n.is_empty()),
                "cut at {cut}"
            );
        }
        assert!(crl_info(&[0x30, 0x82, 0xff]).is_none());
        assert!(crl_info(&[]).is_none());
        let crl = include_bytes!("../fixtures/pki/level1c.crl");
        for cut in 0..crl.len() {
            assert!(crl_info(&crl[..cut]).is_none(), "cut at {cut}");
            assert!(signed_parts(&crl[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn certificate_validity_is_read() {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let pem = include_bytes!("../fixtures/pki/consumer-expired.pem");
        let cert = CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap();
        // The fixture generator's dates: 2020-01-01 to 2021-01-01, midnight UTC.
        assert_eq!(
            validity(&cert),
            Some((
                days_from_civil(2020, 1, 1) * 86_400,
                days_from_civil(2021, 1, 1) * 86_400
            ))
        );
        for cut in 0..cert.len() {
            assert!(validity(&cert[..cut]).is_none(), "cut at {cut}");
        }
        assert!(validity(include_bytes!("../fixtures/pki/level1c.crl")).is_none());
    }

    #[test]
    fn crl_number_and_entries_are_read() {
        let info = crl_info(include_bytes!("../fixtures/pki/level1c.crl")).unwrap();
        assert_eq!((info.number, info.revoked), (Some(vec![1]), 1));
        let info = crl_info(include_bytes!("../fixtures/pki/root.crl")).unwrap();
        assert_eq!((info.number, info.revoked), (Some(vec![1]), 0));
    }

    #[test]
    fn crl_numbers_compare_as_unsigned_integers() {
        use std::cmp::Ordering::*;
        let table: [(&[u8], &[u8], std::cmp::Ordering); 6] = [
            (&[1], &[2], Less),
            (&[0, 0x80], &[0x7f], Greater),
            (&[0x01, 0x00], &[0xff], Greater),
            (&[0, 5], &[5], Equal),
            (&[], &[0], Equal),
            (&[2], &[1], Greater),
        ];
        for (a, b, expected) in table {
            assert_eq!(compare_unsigned(a, b), expected, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn times_convert_to_epoch_seconds() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20261125162304Z"),
            Some(1_795_623_784)
        );
        assert_eq!(parse_time(UTC_TIME, b"701301000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"7001010000Z"), None);
        assert_eq!(format_utc(1_795_623_784), "2026-11-25T16:23:04Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    }
}
