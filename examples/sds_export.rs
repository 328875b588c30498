//! Writes a synthetic SDS export (LDIF, as `ldapsearch -LLL` writes it) to stdout, for
//! measuring how long `ssp` takes to load one and how much memory it holds (issue 18):
//!
//!     cargo run --release --example sds_export -- 10000 > /tmp/sds.ldif
//!
//! N consumers (an AS record with one interaction and an MHS record with its FQDN) and N
//! providers (an AS record and an MHS record with an endpoint, a CPA id and the interaction):
//! 2N AS and 2N MHS records. Long lines are folded at 76 columns as ldapsearch folds them.

use std::io::{BufWriter, Write};

const INTERACTION: &str =
    "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions";

fn line(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    let mut rest = text;
    let mut first = true;
    while !rest.is_empty() {
        let width = if first { 76 } else { 75 };
        let cut = rest.len().min(width);
        if !first {
            out.write_all(b" ")?;
        }
        out.write_all(&rest.as_bytes()[..cut])?;
        out.write_all(b"\n")?;
        rest = &rest[cut..];
        first = false;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in 0..n {
        for (kind, asid) in [("c", 200_000_000_000 + i), ("p", 300_000_000_000 + i)] {
            let key = format!("{kind}{i:06}-0000001");
            let ods = format!("{}{i:05}", kind.to_uppercase());
            line(
                &mut out,
                &format!("dn: uniqueIdentifier={asid},ou=services,o=nhs"),
            )?;
            line(&mut out, "objectClass: nhsAs")?;
            line(&mut out, &format!("uniqueIdentifier: {asid}"))?;
            line(&mut out, &format!("nhsIDCode: {ods}"))?;
            line(&mut out, &format!("nhsMHSPartyKey: {key}"))?;
            line(&mut out, &format!("nhsAsSvcIA: {INTERACTION}"))?;
            writeln!(out)?;
            line(
                &mut out,
                &format!("dn: uniqueIdentifier=mhs-{key},ou=services,o=nhs"),
            )?;
            line(&mut out, "objectClass: nhsMhs")?;
            line(&mut out, &format!("nhsMHSPartyKey: {key}"))?;
            line(&mut out, &format!("nhsIDCode: {ods}"))?;
            let fqdn = format!("{kind}{i}.example.nhs.uk");
            line(&mut out, &format!("nhsMhsFQDN: {fqdn}"))?;
            if kind == "p" {
                line(
                    &mut out,
                    &format!("nhsMHSEndPoint: https://{fqdn}/{ods}/STU3/1/gpconnect"),
                )?;
                line(&mut out, &format!("nhsMhsCPAId: S{asid}"))?;
                line(&mut out, &format!("nhsMhsSvcIA: {INTERACTION}"))?;
            }
            writeln!(out)?;
        }
    }
    out.flush()
}
