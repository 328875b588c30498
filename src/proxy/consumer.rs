//! The consumer's side of a session: its TLS session, who it is, and the plaintext it sent
//! that is not handled yet. Shared by the session (heads, answers) and the exchange (bodies,
//! responses), which is why it is a type of its own.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use rustls::ServerConnection;

use super::tls_io::{self, ReadOutcome};
use super::wire::Pipe;
use crate::policy::identity::Identity;

pub struct Consumer {
    pub tls: ServerConnection,
    /// The consumer's address: the socket's peer, or what a balancer's PROXY header said.
    pub peer: SocketAddr,
    /// From its verified certificate, once the handshake is done.
    pub identity: Option<Identity>,
    /// Plaintext from the consumer not yet handled (a head, body bytes, pipelined requests).
    pub inbuf: Vec<u8>,
    /// It closed its side (or the connection broke).
    pub eof: bool,
    pub accepted: Instant,
    pub handshake_ms: Option<f64>,
}

impl Consumer {
    pub fn new(tls: ServerConnection, peer: SocketAddr, now: Instant) -> Consumer {
        Consumer {
            tls,
            peer,
            identity: None,
            inbuf: Vec::new(),
            eof: false,
            accepted: now,
            handshake_ms: None,
        }
    }

    /// Reads what arrived, up to `cap` bytes of plaintext held.
    pub fn read(&mut self, pipe: &mut dyn Pipe, cap: usize) -> Result<ReadOutcome, rustls::Error> {
        let outcome = tls_io::read(pipe, &mut self.tls, &mut self.inbuf, cap, None)?;
        self.eof |= outcome.eof;
        Ok(outcome)
    }

    /// Queues plaintext for the consumer; false if its session is broken. Answers are small
    /// and written only when nothing else is queued, so rustls takes them whole.
    pub fn write_plaintext(&mut self, bytes: &[u8]) -> bool {
        self.tls.writer().write_all(bytes).is_ok()
    }

    /// Sends queued TLS records; returns the bytes written.
    pub fn flush(&mut self, pipe: &mut dyn Pipe) -> std::io::Result<usize> {
        tls_io::flush(pipe, &mut self.tls)
    }
}
