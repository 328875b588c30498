//! `ssp`: a Spine-Security-Proxy-style mutual-TLS forward proxy. See ARCHITECTURE.md.

pub mod admin;
pub mod audit;
pub mod clock;
pub mod config;
pub mod crl;
pub mod demo;
pub mod durable_file;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod proxy_protocol;
pub mod regular_file;
pub mod sds;
pub mod service;
pub mod startup;
pub mod systemd;
pub mod tls;
pub mod x509;
