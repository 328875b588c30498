//! Issue 18, against a real directory: Debian's `slapd` started here on a loopback port with a
//! small SDS schema (`fixtures/sds/sds.schema`) and AS and MHS records
//! (`fixtures/sds/directory.ldif`); `ldapsearch` exports it as an operator's refresh does, and
//! the proxy runs on the export with the fixture PKI and a real provider. `.ci/run` installs
//! `slapd` and `ldap-utils`; without them the test says so and does nothing else.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ssp::demo::provider;

const SLAPD: &str = "/usr/sbin/slapd";
const BASE: &str = "ou=services,o=nhs";
const ADMIN: &str = "cn=admin,o=nhs";
const PASSWORD: &str = "test-only";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sds")
        .join(name)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// A slapd of our own: its database in a temp folder, loaded with `slapadd` before it starts,
/// listening on 127.0.0.1 only, in the clear (`url`, for the test's own edits) and over LDAPS
/// with the fixture PKI's provider certificate, demanding a client certificate (`ldaps`), as
/// SDS does; killed when dropped.
struct Directory {
    child: Child,
    url: String,
    ldaps: String,
    _dir: TempDir,
}

impl Directory {
    /// `None` when slapd or the LDAP tools are not installed.
    fn start(provider_port: u16) -> Option<Directory> {
        let tools = ["ldapsearch", "ldapmodify", "ldapdelete", "slapadd"];
        if !Path::new(SLAPD).is_file()
            || !tools
                .iter()
                .all(|t| on_path(t) || Path::new("/usr/sbin").join(t).is_file())
        {
            println!(
                "SKIPPED: the SDS directory test needs Debian's slapd and ldap-utils \
                 (apt-get install slapd ldap-utils; .ci/run installs them)"
            );
            return None;
        }
        let dir = TempDir::new("slapd");
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include {schema}\n\
                 pidfile {dir}/slapd.pid\n\
                 TLSCertificateFile {pki}/provider.pem\n\
                 TLSCertificateKeyFile {pki}/provider.key\n\
                 TLSCACertificateFile {pki}/nhs-ca.pem\n\
                 TLSVerifyClient demand\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 database mdb\n\
                 suffix \"o=nhs\"\n\
                 rootdn \"{ADMIN}\"\n\
                 rootpw {PASSWORD}\n\
                 directory {dir}/db\n\
                 maxsize 10485760\n",
                schema = fixture("sds.schema").display(),
                dir = dir.path().display(),
                pki = pki_dir().display(),
            ),
        )
        .unwrap();
        let data = std::fs::read_to_string(fixture("directory.ldif"))
            .unwrap()
            .replace("{port}", &provider_port.to_string());
        let data_file = dir.path().join("directory.ldif");
        std::fs::write(&data_file, data).unwrap();
        let slapadd = if on_path("slapadd") {
            PathBuf::from("slapadd")
        } else {
            PathBuf::from("/usr/sbin/slapadd")
        };
        run(
            Command::new(slapadd)
                .arg("-f")
                .arg(&conf)
                .arg("-l")
                .arg(&data_file),
            "slapadd",
        );
        let url = format!("ldap://127.0.0.1:{}", unused_port().port());
        // By address: libldap checks "localhost" against the machine's own name instead.
        let ldaps = format!("ldaps://127.0.0.1:{}", unused_port().port());
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(&conf)
            .args(["-h", &format!("{url}/ {ldaps}/"), "-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        let directory = Directory {
            child,
            url,
            ldaps,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ldap(Command::new("ldapsearch").args(["-x", "-H", &directory.url, "-b", BASE, "-s", "base"]))
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "slapd did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(directory)
    }

    /// `ldapsearch -LLL` of the services base into `to`, as the refresh unit does.
    fn export(&self, to: &Path) -> String {
        let out = ldap(Command::new("ldapsearch").args(["-LLL", "-x", "-H", &self.url, "-b", BASE]));
        assert!(
            out.status.success(),
            "ldapsearch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(to, &out.stdout).unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    fn modify(&self, changes: &str) {
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url, "-D", ADMIN, "-w", PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ldapmodify");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), changes.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "ldapmodify failed");
    }

    fn delete(&self, dns: &[String]) {
        let out = ldap(
            Command::new("ldapdelete")
                .args(["-x", "-H", &self.url, "-D", ADMIN, "-w", PASSWORD])
                .args(dns),
        );
        assert!(
            out.status.success(),
            "ldapdelete: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ldap(command: &mut Command) -> std::process::Output {
    // No ~/.ldaprc or /etc/ldap/ldap.conf of the machine's may change what is asked.
    command.env("LDAPNOINIT", "1").output().expect("run an LDAP tool")
}

fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ssp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(args)
        .output()
        .expect("run ssp");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The local file: one agreement (dispenser A may call the provider), the provider's fixed
/// address; everything else from the export.
fn config_text(dir: &Path, provider: std::net::SocketAddr) -> String {
    let pki = pki_dir();
    let (pki, dir) = (pki.display(), dir.display());
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
certificate = "{pki}/ssp.pem"
private_key = "{pki}/ssp.key"
client_ca = "{pki}/nhs-ca.pem"
crl = ["{pki}/level1c.crl"]

[upstream]
ca = "{pki}/nhs-ca.pem"

[throttle]
rate = 10000
burst = 10000

[audit]
dir = "{dir}/audit"
key = "{dir}/audit.key"
sync = "off"

[transactions]
path = ""

[admin]
listen = ""

[sds]
ldif = "sds.ldif"

[[consumer]]
asid = "{a}"
providers = ["{PROVIDER_ASID}"]

[[provider]]
asid = "{PROVIDER_ASID}"
connect = "{provider}"
"#,
        a = CONSUMER_A.asid,
    )
}

fn request(proxy: &Proxy, who: &Who, root: &str) -> Response {
    let r = proxy
        .valid_request("GET", SEARCH, &[], b"")
        .set("Ssp-From", who.asid)
        .target(&format!("/{root}{SEARCH}"));
    proxy.consumer(who).exchange(&r)
}

#[test]
fn the_allowlist_comes_from_a_real_sds_export_and_follows_it_on_reload() {
    let tls =
        provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem")).unwrap();
    let p = provider::start("127.0.0.1:0".parse().unwrap(), tls, default_handler()).expect("provider");
    let Some(directory) = Directory::start(p.addr.port()) else {
        return;
    };
    let dir = TempDir::new("sds");
    assert_eq!(ssp::audit::cli::keygen(&dir.path().join("audit.key")), 0);
    let config = dir.path().join("ssp.toml");
    std::fs::write(&config, config_text(dir.path(), p.addr)).unwrap();
    let (v1, v2, v3) = (
        dir.path().join("v1.ldif"),
        dir.path().join("v2.ldif"),
        dir.path().join("v3.ldif"),
    );
    let first = directory.export(&v1);
    // What ldapsearch really writes: folded long lines, and base64 for a value that needs it.
    assert!(first.contains("\n "), "no folded line in the export:\n{first}");
    assert!(first.contains(":: "), "no base64 value in the export:\n{first}");
    std::fs::copy(&v1, dir.path().join("sds.ldif")).unwrap();

    let old_root = format!(
        "https://localhost:{}/Prescription-Exemptions/1.0.0",
        p.addr.port()
    );
    let setup = Setup {
        dir,
        config: config.clone(),
        provider_addr: p.addr,
        endpoint: old_root.clone(),
        seen: p.seen.clone(),
    };
    let proxy = Proxy::on(setup);
    // As `ssp run` does once it serves.
    ssp::service::config_in_force(&proxy.runtime, "start");

    // A consumer of the export with a local agreement is served.
    let r = request(&proxy, &CONSUMER_A, &old_root);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), PROVIDER_BODY);
    // One the export does not have is refused at row 9.
    let r = request(&proxy, &ECDSA, &old_root);
    assert_outcome(
        &r,
        403,
        "forbidden",
        "ASID_CHECK_FAILED_MESSAGESENDER_200000000003",
        None,
    );
    // One the export has, without a local agreement, can call nothing (row 11).
    let r = request(&proxy, &CONSUMER_B, &old_root);
    assert_outcome(
        &r,
        403,
        "forbidden",
        "FOT_CHECK_FAILED_MESSAGESENDER_200000000002_MESSAGERECEIVER_200000000999",
        None,
    );
    assert_eq!(
        p.seen.lock().unwrap().len(),
        1,
        "only the allowed request reached the provider"
    );

    // SDS moves the provider's endpoint: after the export and a reload, the new one is in force.
    let new_root = format!(
        "https://localhost:{}/Prescription-Exemptions/2.0.0",
        p.addr.port()
    );
    directory.modify(&format!(
        "dn: uniqueIdentifier=mhs-pecs-search,{BASE}\nchangetype: modify\nreplace: nhsMHSEndPoint\nnhsMHSEndPoint: {new_root}\n"
    ));
    directory.export(&v2);
    let (code, out, err) = ssp(&["sds", "diff", v1.to_str().unwrap(), v2.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "~ provider 200000000999: interaction {INTERACTION}: {old_root} (CPA id S20000000999) -> {new_root} (CPA id S20000000999)"
        )),
        "{out}"
    );
    std::fs::copy(&v2, proxy.dir().join("sds.ldif")).unwrap();
    ssp::service::reload(&proxy.runtime, &config).expect("the reload with the moved endpoint");
    let r = request(&proxy, &CONSUMER_A, &new_root);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(&proxy, &CONSUMER_A, &old_root);
    assert_eq!(r.status, 400, "{}", r.text());
    let token = r.json()["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        token.starts_with(&format!(
            "ENDPOINT_{new_root}_CPAID_S20000000999_VARIES_FROM_TARGETURL_"
        )),
        "{token}"
    );

    // Three of the 23 known ASIDs disappear (13 %, over the default 10 %): the reload is
    // refused and the allowlist in force keeps serving.
    let gone: Vec<String> = (100..103)
        .map(|n| format!("uniqueIdentifier=200000000{n},{BASE}"))
        .collect();
    directory.delete(&gone);
    directory.export(&v3);
    std::fs::copy(&v3, proxy.dir().join("sds.ldif")).unwrap();
    let refused = ssp::service::reload(&proxy.runtime, &config).expect_err("a shrinking export is refused");
    assert!(
        refused.contains("drops 3 of the 23 known ASIDs") && refused.contains("max_shrink"),
        "{refused}"
    );
    assert!(
        proxy
            .runtime
            .metrics
            .render(&[])
            .contains("ssp_config_last_reload_success 0"),
        "the refusal is in /metrics"
    );
    let r = request(&proxy, &CONSUMER_A, &new_root);
    assert_eq!(r.status, 200, "the old allowlist keeps serving: {}", r.text());
    // An LDAP outage that leaves an empty (or unparsable) file never empties the allowlist.
    for broken in ["", "dn: ou=services,o=nhs\nthis is not LDIF\n"] {
        std::fs::write(proxy.dir().join("sds.ldif"), broken).unwrap();
        let refused = ssp::service::reload(&proxy.runtime, &config).expect_err("refused");
        assert!(
            refused.contains("yields no consumer and no provider")
                || refused.contains("sds.ldif:2: SDS export"),
            "{refused}"
        );
        let r = request(&proxy, &CONSUMER_A, &new_root);
        assert_eq!(r.status, 200, "the old allowlist keeps serving: {}", r.text());
    }

    // `ssp check --sds` refuses it before a refresh would move it into place.
    std::fs::copy(&v2, proxy.dir().join("sds.ldif")).unwrap();
    let config_arg = config.to_str().unwrap();
    let (code, out, err) = ssp(&["check", "--config", config_arg, "--sds", v3.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("drops 3 of the 23 known ASIDs"), "{err}");
    let (code, out, err) = ssp(&["check", "--config", config_arg, "--sds", v2.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    // `ssp sds show` tells what the export yields, and what it left out and why.
    let (code, out, err) = ssp(&["sds", "show", "--config", config_arg]);
    assert_eq!(code, 0, "{out}{err}");
    for expected in [
        "consumer 200000000001 (sds) dispenser-a.example.nhs.uk",
        "  may call: 200000000999",
        "consumer 200000000002 (sds) dispenser-b.example.nhs.uk",
        "  may call: none: it can call nothing",
        &format!("  endpoint {new_root} CPA id S20000000999: {INTERACTION}"),
        "unknown party key \"NOWHERE-0000001\"",
        "missing attribute nhsMhsPartyKey",
        "two endpoints for one interaction: urn:nhs:names:services:test:other-1",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    proxy.stop();
    // The refusal is in the audit trail as an alarm, and the export's hash in the config records.
    let mut audit = String::new();
    for file in std::fs::read_dir(proxy.dir().join("audit")).unwrap() {
        audit.push_str(&std::fs::read_to_string(file.unwrap().path()).unwrap_or_default());
    }
    let alarm = audit
        .lines()
        .find(|l| l.contains(r#""type":"alarm""#) && l.contains("max_shrink"))
        .unwrap_or_else(|| panic!("no alarm for the refused export in:\n{audit}"));
    assert!(alarm.contains("drops 3 of the 23 known ASIDs"), "{alarm}");
    let configs = audit
        .lines()
        .filter(|l| l.contains(r#""type":"config""#) && l.contains("sds.ldif"));
    assert_eq!(
        configs.count(),
        2,
        "start and the one reload that passed name the export"
    );
}

/// `packaging/ssp-sds-refresh` as the timer runs it: LDAPS with the box's certificate, `ssp
/// check --sds`, then the move; an export that shrinks too far, a directory that is down, or a
/// URL in the clear change nothing.
#[test]
fn the_refresh_script_changes_nothing_unless_every_step_passes() {
    let tls =
        provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem")).unwrap();
    let p = provider::start("127.0.0.1:0".parse().unwrap(), tls, default_handler()).expect("provider");
    let Some(directory) = Directory::start(p.addr.port()) else {
        return;
    };
    let dir = TempDir::new("sds-refresh");
    assert_eq!(ssp::audit::cli::keygen(&dir.path().join("audit.key")), 0);
    let config = dir.path().join("ssp.toml");
    std::fs::write(&config, config_text(dir.path(), p.addr)).unwrap();
    let ldif = dir.path().join("sds.ldif");
    let bin = Path::new(env!("CARGO_BIN_EXE_ssp"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let refresh = |url: &str| {
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ssp-sds-refresh"))
            .env("PATH", &path)
            .env("SSP_SDS_URL", url)
            .env("SSP_CONFIG", &config)
            .env("SSP_SDS_LDIF", &ldif)
            .env("LDAPTLS_CERT", pki("ssp.pem"))
            .env("LDAPTLS_KEY", pki("ssp.key"))
            .env("LDAPTLS_CACERT", pki("nhs-ca.pem"))
            .output()
            .expect("run ssp-sds-refresh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let leftovers = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".new.")
            })
            .count()
    };

    // First run: nothing in place yet.
    let (code, out) = refresh(&directory.ldaps);
    assert_eq!(code, Some(0), "{out}");
    let first = std::fs::read_to_string(&ldif).unwrap();
    assert!(first.contains("uniqueIdentifier: 200000000999"), "{first}");
    // Only the two classes: the person and the organisational units are not asked for.
    assert!(
        !first.contains("cn=someone") && !first.contains("dn: ou=services"),
        "{first}"
    );
    assert!(!dir.path().join("sds.ldif.previous").exists());
    let (code, out) = refresh(&directory.ldaps);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sds.ldif.previous")).unwrap(),
        first
    );

    // Too many ASIDs gone: `ssp check --sds` refuses, the export in place stays.
    let gone: Vec<String> = (100..103)
        .map(|n| format!("uniqueIdentifier=200000000{n},{BASE}"))
        .collect();
    directory.delete(&gone);
    let (code, out) = refresh(&directory.ldaps);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("max_shrink"), "{out}");
    assert_eq!(std::fs::read_to_string(&ldif).unwrap(), first);

    // In the clear: refused before asking.
    let (code, out) = refresh(&directory.url);
    assert_eq!(code, Some(2), "{out}");

    // The directory is down: ldapsearch fails, nothing changes.
    let ldaps = directory.ldaps.clone();
    drop(directory);
    let (code, out) = refresh(&ldaps);
    assert_ne!(code, Some(0), "{out}");
    assert_eq!(std::fs::read_to_string(&ldif).unwrap(), first);
    assert_eq!(leftovers(), 0, "no temporary file is left behind");
}
