//! What the workers share: the configuration in force (`Shared`, replaced whole by a reload)
//! and what outlives any one configuration (`Runtime`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::audit::{Audit, Settings as AuditSettings, Transactions};
use crate::metrics::Metrics;

use rustls::pki_types::ServerName;

use crate::config::Config;
use crate::policy::Rules;
use crate::policy::allowlist::Allowlist;
use crate::policy::throttle::{self, HandshakeFailures, InFlight, Limit, RateLimits, RefusalStrikes};
use crate::tls::{self, Tls};

/// Where and how to reach one provider.
pub struct Route {
    /// The name its certificate must carry: the registered endpoint's host.
    pub server_name: ServerName<'static>,
    /// `connect` from the configuration, used instead of DNS when not empty.
    pub fixed_addrs: Vec<SocketAddr>,
    pub host: String,
    pub port: u16,
}

/// Everything a worker reads and never writes, built once per configuration load.
pub struct Shared {
    pub config: Config,
    pub server_tls: Arc<rustls::ServerConfig>,
    /// For an address past `[limits] refused_handshakes` (`tls::resumption`).
    pub server_tls_resumption_only: Arc<rustls::ServerConfig>,
    /// The client certificate check `server_tls` runs; row 8 runs it again on a connection
    /// verified under an earlier configuration.
    pub consumer_verifier: Arc<tls::verifier::ConsumerVerifier>,
    pub client_tls: Arc<rustls::ClientConfig>,
    pub crls: Vec<tls::CrlSummary>,
    /// What a CRL refresh rebuilds `server_tls` from.
    pub tls_material: Arc<tls::Material>,
    pub rules: Rules,
    pub routes: Vec<Route>,
    /// Row 14: each consumer's rate, by configuration position (reset by a reload, kept by a
    /// CRL refresh).
    pub rates: Arc<RateLimits>,
    /// Row 15: each provider's requests in flight.
    pub in_flight: Arc<InFlight>,
}

/// The configuration in force, replaceable as a whole while the workers run (the CRL store
/// with it), plus what outlives any one configuration.
pub struct Runtime {
    current: RwLock<Arc<Shared>>,
    generation: AtomicU64,
    /// Consumer connections open across all workers, for `max_connections`.
    pub connections: AtomicUsize,
    /// Zero of the monotonic nanosecond clock the rate limits run on.
    started: Instant,
    /// The audit and the transactions log outlive reloads: their files stay where they are.
    pub audit: Audit,
    pub transactions: Transactions,
    pub metrics: Arc<Metrics>,
    /// Refused handshakes per address (see ARCHITECTURE.md, "Overload").
    pub handshake_failures: Arc<HandshakeFailures>,
    /// Refused requests per consumer certificate (`[limits] refusals`).
    pub refusals: Arc<RefusalStrikes>,
    /// The kernel's last word on the clock (`service::watch_clock`).
    pub clock: crate::clock::ClockWatch,
    /// Set by SIGTERM: stop accepting, finish what is in flight, exit.
    stopping: AtomicBool,
    /// Set by SIGTERM before `stopping`, for `[server] stop_delay`: `/readyz` says
    /// "stopping", and every answer from then on closes its connection, while the workers
    /// still accept and serve.
    leaving: AtomicBool,
    /// An admin endpoint serves `/readyz`, so a balancer can be told of a stop.
    admin_serving: AtomicBool,
    /// Each worker's last turn of its loop (nanos), for the systemd watchdog.
    heartbeats: RwLock<Vec<Arc<AtomicU64>>>,
}

/// Refused handshakes an address earns back per second, after its `refused_handshakes` burst.
const HANDSHAKE_FAILURES_PER_SECOND: f64 = 1.0;
/// How fast a consumer certificate's allowance of refused requests refills.
const REFUSALS_PER_SECOND: f64 = 1.0;

impl Runtime {
    /// Starts the audit and the transactions log of `shared`'s configuration; the proxy does
    /// not run without an audit (SPEC section 5).
    pub fn start(shared: Shared) -> Result<Runtime, String> {
        let cfg = &shared.config;
        // The hash of the text loaded, as the `config` record and `/metrics` give it.
        let config_hash = cfg.sha256;
        if cfg.audit.key.is_none() {
            log::warn!(
                "[audit] sealed = false: audit files are NOT sealed; tampering by whoever holds the box goes undetected"
            );
        }
        let audit = Audit::start(AuditSettings {
            dir: cfg.audit.dir.clone(),
            key: cfg.audit.key.clone(),
            sync: cfg.audit.sync,
            rotate_bytes: cfg.audit.rotate_bytes,
            seal_interval: cfg.audit.seal_interval,
            config_hash,
            version: env!("CARGO_PKG_VERSION"),
        })
        .map_err(|e| e.to_string())?;
        let transactions = Transactions::start(cfg.transactions.path.clone()).map_err(|e| e.to_string())?;
        // Kept for the process's life: a reload does not forget who flooded us.
        let burst = shared.config.limits.refused_handshakes;
        let handshake_failures = Arc::new(HandshakeFailures::new(
            (burst > 0).then(|| Limit::new(HANDSHAKE_FAILURES_PER_SECOND, burst)),
        ));
        let burst = shared.config.limits.refusals;
        let refusals = Arc::new(RefusalStrikes::new(
            (burst > 0).then(|| Limit::new(REFUSALS_PER_SECOND, burst)),
        ));
        Ok(Runtime {
            current: RwLock::new(Arc::new(shared)),
            audit,
            transactions,
            metrics: Metrics::new(),
            generation: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            handshake_failures,
            refusals,
            clock: Default::default(),
            stopping: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            admin_serving: AtomicBool::new(false),
            heartbeats: RwLock::new(Vec::new()),
        })
    }

    /// Seals the audit and closes the logs; the last thing before exit.
    pub fn shutdown(&self, reason: &str) {
        self.audit.shutdown(reason);
        self.transactions.shutdown();
    }

    pub fn current(&self) -> Arc<Shared> {
        // A panic while holding the lock cannot leave `Arc<Shared>` half-written.
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the workers to stop accepting and to finish once what is in flight is done.
    pub fn stop(&self) {
        self.leaving.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
    }

    /// A stop is coming (`[server] stop_delay`): connections are closed after their next
    /// answer, and `/readyz` says "stopping"; accepting and serving go on.
    pub fn announce_stop(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// A stop is coming, or has begun.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// The admin endpoint is up (`service::start_admin`).
    pub fn set_admin_serving(&self) {
        self.admin_serving.store(true, Ordering::Release);
    }

    pub fn admin_serving(&self) -> bool {
        self.admin_serving.load(Ordering::Acquire)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A heartbeat slot for one worker's loop.
    pub fn heartbeat(&self) -> Arc<AtomicU64> {
        let slot = Arc::new(AtomicU64::new(self.nanos(Instant::now())));
        self.heartbeats
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot.clone());
        slot
    }

    /// Whether every worker has turned its loop within `within` of `now`: a stuck loop stops
    /// the watchdog pings, and systemd restarts us.
    pub fn workers_alive(&self, now: Instant, within: std::time::Duration) -> bool {
        let now = self.nanos(now);
        let within = within.as_nanos() as u64;
        let beats = self.heartbeats.read().unwrap_or_else(|e| e.into_inner());
        !beats.is_empty()
            && beats
                .iter()
                .all(|b| now.saturating_sub(b.load(Ordering::Acquire)) <= within)
    }

    /// The zero of `nanos`, the one time base of every worker's rate limits.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Nanoseconds since start, for the rate limits (monotonic, never wall time).
    pub fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_nanos() as u64
    }

    /// Changes on every `replace`; workers compare it before each batch of events.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts a new configuration in force: new handshakes and new requests use it (so a
    /// certificate its CRLs revoke is refused on its next request, SPEC row 8); requests in
    /// flight finish under the one they were admitted with.
    pub fn replace(&self, shared: Shared) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(shared);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Like `replace`, but only while `basis` is still the configuration in force: a CRL
    /// refresh built from `basis` must not undo a SIGHUP reload that happened meanwhile.
    /// Returns whether it was put in force.
    pub fn replace_if_current(&self, basis: &Arc<Shared>, shared: Shared) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, basis) {
            return false;
        }
        *current = Arc::new(shared);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// A configuration that loaded but cannot run.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

impl Shared {
    /// Loads certificates, keys and CRLs and compiles the rules: everything `ssp check` checks.
    pub fn load(config: Config) -> Result<Shared, LoadError> {
        let tls = tls::load(&config).map_err(|e| LoadError(e.to_string()))?;
        let rates = Arc::new(RateLimits::new(throttle::consumer_limits(
            &config.consumers,
            &config.throttle,
        )));
        let in_flight = InFlight::new(
            throttle::provider_caps(&config.providers, &config.throttle),
            config.throttle.consumer_share,
            config.consumers.len(),
        );
        Shared::assemble(config, tls, rates, in_flight)
    }

    /// The same configuration with `crls` in force: new handshakes and the row-8 check of
    /// every request use them. The rate limits, the in-flight permits, the provider-side TLS
    /// and the session cache carry over, so a refresh is invisible to everyone but the
    /// consumers it revokes.
    pub fn with_crls(&self, crls: Vec<tls::CrlSummary>) -> Result<Shared, LoadError> {
        let tls::ConsumerSide {
            server,
            verifier,
            revocations,
        } = tls::consumer_side(&self.config, &self.tls_material, &crls, Some(&self.server_tls))
            .map_err(|e| LoadError(e.to_string()))?;
        let tls = Tls {
            server,
            verifier,
            client: self.client_tls.clone(),
            revocations,
            crls,
            material: self.tls_material.clone(),
        };
        Shared::assemble(
            self.config.clone(),
            tls,
            self.rates.clone(),
            self.in_flight.clone(),
        )
    }

    fn assemble(
        config: Config,
        tls: Tls,
        rates: Arc<RateLimits>,
        in_flight: Arc<InFlight>,
    ) -> Result<Shared, LoadError> {
        let Tls {
            server,
            verifier,
            client,
            revocations,
            crls,
            material,
        } = tls;
        let mut routes = Vec::new();
        for (index, e) in crate::config::all_endpoints(&config.providers) {
            let p = &config.providers[index];
            let server_name = ServerName::try_from(e.url.host.clone()).map_err(|err| {
                LoadError(format!(
                    "{}:{}: provider {} endpoint host {:?}: {err}",
                    config.path.display(),
                    p.line,
                    p.asid,
                    e.url.host
                ))
            })?;
            routes.push(Route {
                server_name,
                fixed_addrs: p.connect.clone(),
                host: e.url.host.clone(),
                port: e.url.connect_port(),
            });
        }
        let rules = Rules {
            methods: config.limits.methods.clone(),
            require_jwt: config.server.require_jwt,
            jwt: crate::policy::jwt::Policy::new(&config.jwt),
            max_body_bytes: config.limits.max_body_bytes,
            allowlist: Allowlist::new(&config.consumers, &config.providers),
            revocations,
        };
        Ok(Shared {
            tls_material: material,
            rates,
            in_flight,
            config,
            server_tls_resumption_only: tls::resumption::resumption_only(&server),
            server_tls: server,
            consumer_verifier: verifier,
            client_tls: client,
            crls,
            rules,
            routes,
        })
    }
}
