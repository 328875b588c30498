//! The demo provider on a fixed address, for `scripts/fleet`: mutual TLS with
//! `fixtures/pki/provider.pem` (client certificates under `nhs-ca.pem`), answering every
//! request 200 with a small FHIR Bundle, and `X-Seen-Forwarded` echoing the `Forwarded` field
//! it received (so a consumer can see which address the proxy named), after DELAY_MS
//! milliseconds (default 0: a real provider takes its time, and requests are in flight).
//! Runs until killed.
//!
//!     cargo run --example provider -- 127.0.0.1:19443 [DELAY_MS]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ssp::demo::provider::{self, Reply, SeenRequest};

fn main() {
    let addr: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("usage: provider ADDR:PORT [DELAY_MS]");
            std::process::exit(2);
        }
    };
    let delay = match std::env::args().nth(2).map(|d| d.parse()) {
        None => std::time::Duration::ZERO,
        Some(Ok(ms)) => std::time::Duration::from_millis(ms),
        Some(Err(_)) => {
            eprintln!("usage: provider ADDR:PORT [DELAY_MS]");
            std::process::exit(2);
        }
    };
    let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
    let tls = match provider::server_config(
        &pki.join("provider.pem"),
        &pki.join("provider.key"),
        &pki.join("nhs-ca.pem"),
    ) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("provider: TLS: {e}");
            std::process::exit(1);
        }
    };
    let handler = Arc::new(move |req: &SeenRequest| {
        let mut reply = Reply::json(200, r#"{"resourceType":"Bundle","type":"searchset","total":0}"#);
        reply.delay = delay;
        if let Some(forwarded) = req.field("forwarded") {
            reply
                .fields
                .push(("X-Seen-Forwarded".into(), forwarded.to_string()));
        }
        reply
    });
    let running = match provider::start(addr, tls, handler) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("provider: {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("provider on https://localhost:{}", running.addr.port());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
        // What the provider remembers of each request is of no use here.
        if let Ok(mut seen) = running.seen.lock() {
            seen.clear();
        }
    }
}
