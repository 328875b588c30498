//! Rows 9–12: the static allowlist of `[[consumer]]` and `[[provider]]`, compiled at load into
//! hash tables and sorted lists of numbers, so each request costs three lookups (sender,
//! receiver, interaction) and a few binary searches, never a scan.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::headers::SspHeaders;
use super::refusal::Refusal;
use crate::config::{self, Consumer, Endpoint, Provider};
use crate::http::target::Target;

/// FxHash's step (rotate, xor, multiply) over 8-byte words. The keys are ASIDs and interaction
/// URNs fixed by the configuration: a request can only probe the tables, never grow them, so a
/// keyed (DoS-resistant) hash buys nothing, and hashing a word at a time rather than a byte
/// at a time matters for 100-byte interaction URNs.
#[derive(Default)]
struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.add(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Keyed by bytes: a request's headers are looked up as they came, never turned into text.
type Map<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<WordHasher>>;

#[derive(Debug, Default)]
pub struct Allowlist {
    consumers: Map<ConsumerRule>,
    providers: Map<ProviderRule>,
    /// Every configured interaction URN, numbered: a request's ~100-byte URN is hashed and
    /// compared once, and each party's interactions are a short sorted list of numbers.
    interactions: Map<usize>,
}

/// Interaction numbers or provider positions, sorted, for `binary_search`.
type Ids = Box<[usize]>;

#[derive(Debug)]
struct ConsumerRule {
    /// Position in the configuration; rate limits are kept by it.
    index: usize,
    fqdn: String,
    interactions: Ids,
    /// Positions of the providers it may call (agreements name configured providers only).
    providers: Ids,
}

#[derive(Debug)]
struct ProviderRule {
    /// Position in the configuration; the in-flight caps are kept by it.
    index: usize,
    /// Each of its interactions, by number, with the endpoint that serves it (row 12).
    interactions: Box<[(usize, EndpointRule)]>,
}

impl ProviderRule {
    /// The endpoint serving interaction number `interaction`, if the provider has it.
    fn served_by(&self, interaction: usize) -> Option<&EndpointRule> {
        let at = self
            .interactions
            .binary_search_by_key(&interaction, |(id, _)| *id)
            .ok()?;
        Some(&self.interactions[at].1)
    }
}

#[derive(Debug, Clone)]
struct EndpointRule {
    /// Position in `config::all_endpoints` order: the proxy's route to it.
    route: usize,
    endpoint: Endpoint,
    cpaid: Option<String>,
}

impl Allowlist {
    pub fn new(consumers: &[Consumer], providers: &[Provider]) -> Self {
        let mut interactions = Map::default();
        let mut number = |urns: &[String]| -> Ids {
            let mut ids: Vec<usize> = urns
                .iter()
                .map(|urn| {
                    let next = interactions.len();
                    *interactions.entry(urn.as_bytes().into()).or_insert(next)
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into()
        };
        let mut served: Vec<Vec<(usize, EndpointRule)>> = vec![Vec::new(); providers.len()];
        for (route, (index, e)) in config::all_endpoints(providers).enumerate() {
            let rule = EndpointRule {
                route,
                endpoint: e.url.clone(),
                cpaid: e.cpaid.clone(),
            };
            for id in number(&e.interactions).iter() {
                served[index].push((*id, rule.clone()));
            }
        }
        let providers: Map<ProviderRule> = providers
            .iter()
            .zip(served)
            .enumerate()
            .map(|(index, (p, mut interactions))| {
                interactions.sort_unstable_by_key(|(id, _)| *id);
                let rule = ProviderRule {
                    index,
                    interactions: interactions.into(),
                };
                (p.asid.as_bytes().into(), rule)
            })
            .collect();
        let consumers = consumers
            .iter()
            .enumerate()
            .map(|(index, c)| {
                // An agreement naming no configured provider could never pass row 10 first.
                let mut agreed: Vec<usize> = c
                    .providers
                    .iter()
                    .filter_map(|asid| providers.get(asid.as_bytes()).map(|p| p.index))
                    .collect();
                agreed.sort_unstable();
                agreed.dedup();
                let rule = ConsumerRule {
                    index,
                    fqdn: c.fqdn.to_ascii_lowercase(),
                    interactions: number(&c.interactions),
                    providers: agreed.into(),
                };
                (c.asid.as_bytes().into(), rule)
            })
            .collect();
        Allowlist {
            consumers,
            providers,
            interactions,
        }
    }

    /// Runs rows 9 to 12 in order; on success, who is calling whom.
    pub fn check(
        &self,
        certificate_cn: Option<&str>,
        ssp: &SspHeaders,
        target: &Target,
    ) -> Result<Route, Refusal> {
        // An interaction nobody has is refused at row 9, as the sender cannot have it.
        let interaction = self.interactions.get(ssp.interaction).copied();
        let has = |ids: &Ids| interaction.is_some_and(|i| ids.binary_search(&i).is_ok());
        let sender = self.consumers.get(ssp.from.as_bytes()).filter(|c| {
            // DNS names compare case-insensitively; `fqdn` is lowercase, and so are most CNs.
            certificate_cn.is_some_and(|cn| cn == c.fqdn || cn.eq_ignore_ascii_case(&c.fqdn))
                && has(&c.interactions)
        });
        let Some(sender) = sender else {
            return Err(Refusal::SenderCheckFailed {
                from: ssp.from.to_string(),
            });
        };
        let (receiver, endpoint) = self
            .providers
            .get(ssp.to.as_bytes())
            .and_then(|p| Some((p, p.served_by(interaction?)?)))
            .ok_or_else(|| Refusal::ReceiverCheckFailed {
                to: ssp.to.to_string(),
            })?;
        if sender.providers.binary_search(&receiver.index).is_err() {
            return Err(Refusal::NoAgreement {
                from: ssp.from.to_string(),
                to: ssp.to.to_string(),
            });
        }
        if !endpoint_matches(&endpoint.endpoint, target) {
            return Err(Refusal::EndpointMismatch {
                endpoint: endpoint.endpoint.url.clone(),
                cpaid: endpoint.cpaid.clone(),
                target: target.to_string(),
            });
        }
        Ok(Route {
            consumer: sender.index,
            provider: receiver.index,
            endpoint: endpoint.route,
        })
    }
}

/// An allowed pair, by position in the configuration, and the provider endpoint that serves
/// the interaction (position in `config::all_endpoints` order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub consumer: usize,
    pub provider: usize,
    pub endpoint: usize,
}

/// Row 12, exactly as SPEC section 1 says: same host as registered (an IP for a name is a
/// mismatch), same port as written (an added `:443` is a mismatch), and the path under the
/// registered root at a segment boundary (`/1.0.0search` is not under `/1.0.0`).
pub fn endpoint_matches(endpoint: &Endpoint, target: &Target) -> bool {
    let host_matches = if endpoint.host.contains(':') {
        target.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) == Some(endpoint.host.as_str())
    } else {
        target.host == endpoint.host
    };
    let path = target.path();
    let under_root = path
        .strip_prefix(endpoint.path.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    host_matches && target.port == endpoint.port && under_root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderEndpoint;
    use crate::http::target;
    use crate::policy::headers::Asid;

    const SEARCH: &str = "urn:search";

    fn endpoint(host: &str, port: Option<u16>, path: &str) -> Endpoint {
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Endpoint {
            url: format!("https://{authority}{path}"),
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    fn allowlist() -> Allowlist {
        let consumer = |asid: &str, fqdn: &str, providers: &[&str]| Consumer {
            asid: asid.into(),
            fqdn: fqdn.into(),
            interactions: vec![SEARCH.into()],
            providers: providers.iter().map(|p| p.to_string()).collect(),
            rate: None,
            burst: None,
            line: 1,
        };
        let provider = |asid: &str, host: &str| Provider {
            asid: asid.into(),
            endpoints: vec![ProviderEndpoint {
                url: endpoint(host, None, "/Prescription-Exemptions/1.0.0"),
                cpaid: None,
                interactions: vec![SEARCH.into()],
            }],
            interactions: vec![SEARCH.into()],
            connect: Vec::new(),
            max_in_flight: None,
            line: 1,
        };
        Allowlist::new(
            &[
                consumer("1", "a.example.nhs.uk", &["9"]),
                consumer("2", "b.example.nhs.uk", &[]),
            ],
            &[
                provider("9", "pecs.example.nhs.uk"),
                provider("8", "other.example.nhs.uk"),
            ],
        )
    }

    fn ssp<'a>(from: &'a str, to: &'a str, interaction: &'a str) -> SspHeaders<'a> {
        SspHeaders {
            trace_id: b"t",
            from: Asid::new(from.as_bytes()).unwrap(),
            to: Asid::new(to.as_bytes()).unwrap(),
            interaction: interaction.as_bytes(),
        }
    }

    fn target(url: &str) -> Target<'static> {
        target::parse(&format!("/{url}")).unwrap().into_owned()
    }

    const GOOD: &str = "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search";

    #[test]
    fn allowed_request_routes_to_its_provider() {
        assert_eq!(
            allowlist().check(Some("A.Example.NHS.uk"), &ssp("1", "9", SEARCH), &target(GOOD)),
            Ok(Route {
                consumer: 0,
                provider: 0,
                endpoint: 0
            })
        );
    }

    #[test]
    fn rows_9_to_12_refuse_in_order() {
        let a = allowlist();
        let t = target(GOOD);
        let sender = |from: &str| Refusal::SenderCheckFailed { from: from.into() };
        assert_eq!(
            a.check(Some("a.example.nhs.uk"), &ssp("7", "9", SEARCH), &t),
            Err(sender("7"))
        );
        assert_eq!(
            a.check(Some("b.example.nhs.uk"), &ssp("1", "9", SEARCH), &t),
            Err(sender("1"))
        );
        assert_eq!(a.check(None, &ssp("1", "9", SEARCH), &t), Err(sender("1")));
        assert_eq!(
            a.check(Some("a.example.nhs.uk"), &ssp("1", "9", "urn:other"), &t),
            Err(sender("1"))
        );
        assert_eq!(
            a.check(Some("a.example.nhs.uk"), &ssp("1", "5", SEARCH), &t),
            Err(Refusal::ReceiverCheckFailed { to: "5".into() })
        );
        assert_eq!(
            a.check(Some("a.example.nhs.uk"), &ssp("1", "8", SEARCH), &t),
            Err(Refusal::NoAgreement {
                from: "1".into(),
                to: "8".into()
            })
        );
        assert_eq!(
            a.check(Some("b.example.nhs.uk"), &ssp("2", "9", SEARCH), &t),
            Err(Refusal::NoAgreement {
                from: "2".into(),
                to: "9".into()
            })
        );
    }

    /// Row 12 against the endpoint registered for the interaction asked for; routes are
    /// numbered across providers in configuration order.
    #[test]
    fn each_interaction_is_checked_against_its_own_endpoint() {
        let consumer = Consumer {
            asid: "1".into(),
            fqdn: "a.example.nhs.uk".into(),
            interactions: vec!["urn:a".into(), "urn:b".into()],
            providers: vec!["8".into(), "9".into()],
            rate: None,
            burst: None,
            line: 1,
        };
        let at = |path: &str, cpaid: Option<&str>, urn: &str| ProviderEndpoint {
            url: endpoint("gp.example.nhs.uk", None, path),
            cpaid: cpaid.map(Into::into),
            interactions: vec![urn.into()],
        };
        let provider = |asid: &str, endpoints: Vec<ProviderEndpoint>| Provider {
            asid: asid.into(),
            interactions: endpoints.iter().flat_map(|e| e.interactions.clone()).collect(),
            endpoints,
            connect: Vec::new(),
            max_in_flight: None,
            line: 1,
        };
        let a = Allowlist::new(
            &[consumer],
            &[
                provider("8", vec![at("/eight", None, "urn:a")]),
                provider(
                    "9",
                    vec![
                        at("/nine/a", Some("S1"), "urn:a"),
                        at("/nine/b", Some("S2"), "urn:b"),
                    ],
                ),
            ],
        );
        let cn = Some("a.example.nhs.uk");
        let route = |provider, endpoint| {
            Ok(Route {
                consumer: 0,
                provider,
                endpoint,
            })
        };
        let to = |path: &str| target(&format!("https://gp.example.nhs.uk{path}/x"));
        assert_eq!(a.check(cn, &ssp("1", "8", "urn:a"), &to("/eight")), route(0, 0));
        assert_eq!(a.check(cn, &ssp("1", "9", "urn:a"), &to("/nine/a")), route(1, 1));
        assert_eq!(a.check(cn, &ssp("1", "9", "urn:b"), &to("/nine/b")), route(1, 2));
        assert_eq!(
            a.check(cn, &ssp("1", "9", "urn:b"), &to("/nine/a")),
            Err(Refusal::EndpointMismatch {
                endpoint: "https://gp.example.nhs.uk/nine/b".into(),
                cpaid: Some("S2".into()),
                target: "https://gp.example.nhs.uk/nine/a/x".into(),
            })
        );
        assert_eq!(
            a.check(cn, &ssp("1", "8", "urn:b"), &to("/eight")),
            Err(Refusal::ReceiverCheckFailed { to: "8".into() }),
            "a provider without the interaction fails row 10"
        );
    }

    #[test]
    fn interactions_are_each_partys_own() {
        let consumer = |asid: &str, interactions: &[&str]| Consumer {
            asid: asid.into(),
            fqdn: "a.example.nhs.uk".into(),
            interactions: interactions.iter().map(|i| i.to_string()).collect(),
            providers: vec!["9".into(), "8".into(), "unknown".into()],
            rate: None,
            burst: None,
            line: 1,
        };
        let provider = |asid: &str, interactions: &[&str]| Provider {
            asid: asid.into(),
            endpoints: vec![ProviderEndpoint {
                url: endpoint("pecs.example.nhs.uk", None, "/Prescription-Exemptions/1.0.0"),
                cpaid: None,
                interactions: interactions.iter().map(|i| i.to_string()).collect(),
            }],
            interactions: interactions.iter().map(|i| i.to_string()).collect(),
            connect: Vec::new(),
            max_in_flight: None,
            line: 1,
        };
        let a = Allowlist::new(
            &[
                consumer("1", &[SEARCH, "urn:read", "urn:\u{e9}", SEARCH]),
                consumer("2", &["urn:write"]),
            ],
            &[
                provider("9", &["urn:write", "urn:\u{e9}", SEARCH]),
                provider("8", &["urn:read"]),
            ],
        );
        let t = target(GOOD);
        let check =
            |from, to, interaction| a.check(Some("a.example.nhs.uk"), &ssp(from, to, interaction), &t);
        assert_eq!(check("1", "9", SEARCH).map(|r| r.provider), Ok(0));
        assert_eq!(check("1", "9", "urn:\u{e9}").map(|r| r.provider), Ok(0));
        assert_eq!(check("1", "8", "urn:read").map(|r| r.provider), Ok(1));
        // The receiver has it, the sender does not: row 9. The other way round: row 10.
        assert_eq!(
            check("1", "9", "urn:write"),
            Err(Refusal::SenderCheckFailed { from: "1".into() })
        );
        assert_eq!(
            check("1", "8", SEARCH),
            Err(Refusal::ReceiverCheckFailed { to: "8".into() })
        );
        // Configured for nobody, or a prefix of one that is: row 9.
        for unknown in ["urn:\u{e8}", "urn:searc", "URN:SEARCH", ""] {
            assert_eq!(
                check("1", "9", unknown),
                Err(Refusal::SenderCheckFailed { from: "1".into() }),
                "{unknown}"
            );
        }
        assert_eq!(
            check("2", "8", "urn:write"),
            Err(Refusal::ReceiverCheckFailed { to: "8".into() })
        );
        assert_eq!(check("2", "9", "urn:write").map(|r| r.consumer), Ok(1));
    }

    #[test]
    fn endpoint_must_match_exactly() {
        let e = endpoint("pecs.example.nhs.uk", None, "/Prescription-Exemptions/1.0.0");
        let ok = [
            GOOD,
            "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0",
            "https://PECS.example.nhs.uk/Prescription-Exemptions/1.0.0?x=1",
            "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/",
        ];
        for url in ok {
            assert!(endpoint_matches(&e, &target(url)), "{url}");
        }
        let mismatches = [
            "https://pecs.example.nhs.uk:443/Prescription-Exemptions/1.0.0/search",
            "https://10.0.0.7/Prescription-Exemptions/1.0.0/search",
            "https://pecs.example.nhs.uk.evil/Prescription-Exemptions/1.0.0/search",
            "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0search",
            "https://pecs.example.nhs.uk/Prescription-Exemptions/2.0.0/search",
            "https://pecs.example.nhs.uk/prescription-exemptions/1.0.0/search",
            "https://pecs.example.nhs.uk/",
        ];
        for url in mismatches {
            assert!(!endpoint_matches(&e, &target(url)), "{url}");
        }
        let with_port = endpoint("localhost", Some(9443), "/P");
        assert!(endpoint_matches(
            &with_port,
            &target("https://localhost:9443/P/x")
        ));
        assert!(!endpoint_matches(&with_port, &target("https://localhost/P/x")));
        let v6 = endpoint("::1", Some(9443), "");
        assert!(endpoint_matches(&v6, &target("https://[::1]:9443/anything")));
    }

    #[test]
    fn endpoint_mismatch_token_names_both_urls() {
        let t = target("https://pecs.example.nhs.uk:443/Prescription-Exemptions/1.0.0/search");
        let r = allowlist()
            .check(Some("a.example.nhs.uk"), &ssp("1", "9", SEARCH), &t)
            .unwrap_err();
        assert_eq!(
            r.token(),
            "ENDPOINT_https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0_VARIES_FROM_TARGETURL_\
             https://pecs.example.nhs.uk:443/Prescription-Exemptions/1.0.0/search"
        );
    }
}
