//! `derive` and `diff` on small exports written the ways real ones vary.

use super::*;

const SEARCH: &str = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1";
const META: &str = "urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1";

fn export(text: &str) -> Export {
    let entries = ldif::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    derive(&entries, None)
}

/// A provider (CMA: AS + two MHS records, one per interaction) and a consumer (AS with
/// interactions, MHS without), written in mixed case, folded, with base64 and comments.
const BOTH: &str = "\
# SDS export
dn: uniqueIdentifier=200000000999,ou=services,o=nhs
objectClass: nhsAs
uniqueIdentifier: 200000000999
nhsIDCode: A12345
nhsMhsPartyKey: A12345-0000001
nhsAsSvcIA: urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1
nhsAsSvcIA: urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1

dn: uniqueIdentifier=aa01,ou=services,o=nhs
objectclass: NHSMHS
NHSMHSPARTYKEY: A12345-0000001
nhsMhsFQDN: GP.example.nhs.uk
nhsMHSEndPoint: https://gp.example.nhs.uk/A12345/STU3/1/
 structured
nhsMhsCPAId: S918999494043
nhsMhsSvcIA: urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1

dn: uniqueIdentifier=aa02,ou=services,o=nhs
objectClass: nhsMhs
nhsmhspartykey: A12345-0000001
nhsMhsFQDN: gp.example.nhs.uk
nhsMHSEndPoint:: aHR0cHM6Ly9ncC5leGFtcGxlLm5ocy51ay9BMTIzNDUvU1RVMy8xL2dwY29ubmVjdA==
nhsMhsCPAId: S918999494042
nhsMhsSvcIA: urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1

dn: uniqueIdentifier=200000000001,ou=services,o=nhs
objectClass: top
objectClass: nhsAs
uniqueIdentifier: 200000000001
nhsIDCode: FA001
nhsMHSPartyKey: FA001-0000001
nhsAsSvcIA: urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1

dn: uniqueIdentifier=bb01,ou=services,o=nhs
objectClass: nhsMhs
nhsMhsPartyKey: FA001-0000001
nhsMhsFQDN: dispenser-a.example.nhs.uk

dn: cn=someone,ou=people,o=nhs
objectClass: person
cn: someone
";

#[test]
fn an_as_record_with_interactions_is_a_consumer_named_by_its_mhs_fqdn() {
    let e = export(BOTH);
    assert_eq!(e.skipped, vec![]);
    assert_eq!(e.records, 5);
    assert_eq!(e.consumers.len(), 2, "{:?}", e.consumers);
    let pharmacy = e.consumers.iter().find(|c| c.asid == "200000000001").unwrap();
    assert_eq!(pharmacy.fqdn, "dispenser-a.example.nhs.uk");
    assert_eq!(pharmacy.interactions, [SEARCH]);
    assert_eq!(pharmacy.ods.as_deref(), Some("FA001"));
    assert_eq!(pharmacy.party_key, "FA001-0000001");
    // A provider that also consumes (GP Connect 3.3) is a consumer too, lowercased.
    let gp = e.consumers.iter().find(|c| c.asid == "200000000999").unwrap();
    assert_eq!(gp.fqdn, "gp.example.nhs.uk");
}

#[test]
fn a_provider_has_one_endpoint_per_mhs_record_with_its_cpa_id() {
    let e = export(BOTH);
    assert_eq!(e.providers.len(), 1);
    let p = &e.providers[0];
    assert_eq!(p.asid, "200000000999");
    assert_eq!(p.line, 2);
    let endpoints: Vec<(&str, Option<&str>, &[String])> = p
        .endpoints
        .iter()
        .map(|e| (e.url.url.as_str(), e.cpaid.as_deref(), e.interactions.as_slice()))
        .collect();
    assert_eq!(
        endpoints,
        [
            (
                "https://gp.example.nhs.uk/A12345/STU3/1/structured",
                Some("S918999494043"),
                &[SEARCH.to_string()][..]
            ),
            (
                "https://gp.example.nhs.uk/A12345/STU3/1/gpconnect",
                Some("S918999494042"),
                &[META.to_string()][..]
            ),
        ]
    );
    assert_eq!(e.asids(), ["200000000999", "200000000001"]);
}

fn reasons(e: &Export) -> Vec<(usize, String)> {
    e.skipped.iter().map(|s| (s.line, s.reason.to_string())).collect()
}

#[test]
fn entries_missing_an_attribute_are_skipped_with_the_reason() {
    let e = export(
        "dn: cn=1\nobjectClass: nhsAs\nnhsMhsPartyKey: K\nnhsAsSvcIA: urn:x\n\n\
         dn: cn=2\nobjectClass: nhsAs\nuniqueIdentifier: 2\nnhsAsSvcIA: urn:x\n\n\
         dn: cn=3\nobjectClass: nhsMhs\nnhsMhsFQDN: a.example\n\n\
         dn: cn=4\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMhsSvcIA: urn:x\n",
    );
    assert_eq!(
        reasons(&e),
        [
            (1, "missing attribute uniqueIdentifier".to_string()),
            (6, "missing attribute nhsMhsPartyKey".to_string()),
            (11, "missing attribute nhsMhsPartyKey".to_string()),
            (15, "missing attribute nhsMHSEndPoint".to_string()),
        ]
    );
    assert!(e.consumers.is_empty() && e.providers.is_empty());
}

#[test]
fn an_unknown_party_key_and_an_mhs_record_nobody_uses_are_skipped() {
    let e = export(
        "dn: cn=1\nobjectClass: nhsAs\nuniqueIdentifier: 1\nnhsMhsPartyKey: NOPE\nnhsAsSvcIA: urn:x\n\n\
         dn: cn=2\nobjectClass: nhsMhs\nnhsMhsPartyKey: ORPHAN\nnhsMhsFQDN: a.example\n",
    );
    assert_eq!(
        reasons(&e),
        [
            (
                1,
                "unknown party key \"NOPE\": no nhsMhs record has it".to_string()
            ),
            (7, "party key \"ORPHAN\": no nhsAs record has it".to_string()),
        ]
    );
}

#[test]
fn two_endpoints_for_one_interaction_serve_it_from_neither() {
    let e = export(
        "dn: cn=as\nobjectClass: nhsAs\nuniqueIdentifier: 9\nnhsMhsPartyKey: K\n\n\
         dn: cn=m1\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMHSEndPoint: https://a.example/x\nnhsMhsSvcIA: urn:both\nnhsMhsSvcIA: urn:one\n\n\
         dn: cn=m2\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMHSEndPoint: https://b.example/y\nnhsMhsSvcIA: urn:both\n\n\
         dn: cn=m3\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMHSEndPoint: https://a.example/x/\nnhsMhsSvcIA: urn:one\nnhsMhsSvcIA: urn:three\n",
    );
    assert_eq!(
        reasons(&e),
        [(
            13,
            "two endpoints for one interaction: urn:both is also served by the nhsMhs record at line 6; neither serves it"
                .to_string()
        )]
    );
    let p = &e.providers[0];
    // m3 names m1's endpoint (a trailing `/` is the same root): one endpoint.
    assert_eq!(p.endpoints.len(), 1, "{:?}", p.endpoints);
    assert_eq!(p.endpoints[0].interactions, ["urn:one", "urn:three"]);
}

#[test]
fn duplicate_asids_bad_values_and_idle_systems_are_skipped() {
    let e = export(
        "dn: cn=m\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMhsFQDN: a.example\n\n\
         dn: cn=a\nobjectClass: nhsAs\nuniqueIdentifier: 5\nnhsMhsPartyKey: K\nnhsAsSvcIA: urn:x\n\n\
         dn: cn=b\nobjectClass: nhsAs\nuniqueIdentifier: 5\nnhsMhsPartyKey: K\nnhsAsSvcIA: urn:x\n\n\
         dn: cn=c\nobjectClass: nhsAs\nuniqueIdentifier: 12ab\nnhsMhsPartyKey: K\n\n\
         dn: cn=d\nobjectClass: nhsAs\nuniqueIdentifier: 6\nnhsMhsPartyKey: K\n\n\
         dn: cn=e\nobjectClass: nhsMhs\nnhsMhsPartyKey: L\nnhsMhsFQDN: not a name\n",
    );
    let r = reasons(&e);
    assert_eq!(
        r[0],
        (
            12,
            "duplicate ASID: the nhsAs record at line 6 has it already".into()
        )
    );
    assert_eq!(r[1].0, 18);
    assert!(
        r[1].1.starts_with("uniqueIdentifier \"12ab\": an ASID is"),
        "{}",
        r[1].1
    );
    assert_eq!(r[2], (23, Reason::Nothing.to_string()));
    assert_eq!(r[3].0, 28);
    assert!(r[3].1.starts_with("nhsMhsFQDN \"not a name\""), "{}", r[3].1);
    assert_eq!(e.consumers.len(), 1);
}

#[test]
fn a_consumer_whose_mhs_records_disagree_on_the_fqdn_is_skipped() {
    let e = export(
        "dn: cn=a\nobjectClass: nhsAs\nuniqueIdentifier: 5\nnhsMhsPartyKey: K\nnhsAsSvcIA: urn:x\n\n\
         dn: cn=m\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMhsFQDN: a.example\n\n\
         dn: cn=n\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMhsFQDN: b.example\n",
    );
    assert_eq!(
        reasons(&e),
        [(
            1,
            "as a consumer: its party key's nhsMhs records give different nhsMhsFQDN values (a.example, b.example)"
                .to_string()
        )]
    );
    assert!(e.consumers.is_empty());
}

#[test]
fn a_shared_party_key_gives_each_consumer_asid_its_fqdn() {
    // GP Connect 2.3: one MHS for several consumer organisations, each with its own ASID.
    let e = export(
        "dn: cn=m\nobjectClass: nhsMhs\nnhsMhsPartyKey: K\nnhsMhsFQDN: hub.example\n\n\
         dn: cn=a\nobjectClass: nhsAs\nuniqueIdentifier: 1\nnhsMhsPartyKey: K\nnhsAsSvcIA: urn:x\n\n\
         dn: cn=b\nobjectClass: nhsAs\nuniqueIdentifier: 2\nnhsMhsPartyKey: K\nnhsAsSvcIA: urn:y\n",
    );
    assert_eq!(e.skipped, vec![]);
    let got: Vec<(&str, &str)> = e
        .consumers
        .iter()
        .map(|c| (c.asid.as_str(), c.fqdn.as_str()))
        .collect();
    assert_eq!(got, [("1", "hub.example"), ("2", "hub.example")]);
}

#[test]
fn the_interactions_filter_keeps_only_what_this_box_serves() {
    let entries = ldif::parse(BOTH.as_bytes()).unwrap();
    let e = derive(&entries, Some(&[SEARCH.to_string()]));
    assert_eq!(e.providers[0].endpoints.len(), 1);
    assert_eq!(e.providers[0].endpoints[0].interactions, [SEARCH]);
    let e = derive(&entries, Some(&["urn:other".to_string()]));
    assert!(e.consumers.is_empty() && e.providers.is_empty());
    assert!(
        e.skipped.iter().all(|s| s.reason == Reason::Nothing),
        "{:?}",
        e.skipped
    );
}

#[test]
fn shrink_is_the_share_of_known_asids_removed() {
    let v = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    assert_eq!(
        shrink(&v(&["1", "2", "3", "4"]), &v(&["1", "2", "3", "4", "5"])),
        (0, 0.0)
    );
    assert_eq!(shrink(&v(&["1", "2", "3", "4"]), &v(&["2", "3", "4"])), (1, 0.25));
    assert_eq!(shrink(&v(&["1", "2"]), &v(&[])), (2, 1.0));
    assert_eq!(shrink(&v(&[]), &v(&["1"])), (0, 0.0));
}

#[test]
fn diff_names_asids_interactions_and_endpoints_added_removed_and_changed() {
    let old = export(BOTH);
    let changed = BOTH
        .replace("A12345/STU3/1/\n structured", "A12345/STU3/2/structured")
        .replace(
            "nhsMHSPartyKey: FA001-0000001\nnhsAsSvcIA: urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1",
            "nhsMHSPartyKey: FA001-0000001\nnhsAsSvcIA: urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1",
        )
        + "\ndn: cn=new\nobjectClass: nhsAs\nuniqueIdentifier: 200000000002\nnhsMhsPartyKey: FA001-0000001\nnhsAsSvcIA: urn:x\n";
    let new = export(&changed);
    assert_eq!(
        diff(&old, &new),
        [
            format!("~ consumer 200000000001: - interaction {SEARCH}"),
            format!("~ consumer 200000000001: + interaction {META}"),
            "+ consumer 200000000002 (dispenser-a.example.nhs.uk): 1 interaction(s)".to_string(),
            format!(
                "~ provider 200000000999: interaction {SEARCH}: https://gp.example.nhs.uk/A12345/STU3/1/structured (CPA id S918999494043) -> https://gp.example.nhs.uk/A12345/STU3/2/structured (CPA id S918999494043)"
            ),
        ]
    );
    assert_eq!(diff(&new, &new), Vec::<String>::new());
    let gone = diff(&new, &Export::default());
    assert!(
        gone.contains(&"- provider 200000000999: 2 interaction(s)".to_string()),
        "{gone:?}"
    );
    assert!(
        gone.contains(&"- consumer 200000000002 (dispenser-a.example.nhs.uk)".to_string()),
        "{gone:?}"
    );
}
