//! `ssp`: a Spine-Security-Proxy-style mutual-TLS forward proxy. See ARCHITECTURE.md.

pub mod http;
