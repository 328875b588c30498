//! The I/O half of the proxy. One `Session` per consumer connection is the whole state machine
//! of that connection and its provider exchange, without sockets (`session.rs`); a worker
//! thread's mio loop feeds it readiness and carries out what it asks for (`worker.rs`). See
//! ARCHITECTURE.md, "Connection state machine", for which file holds what.

mod buffers;
mod consumer;
pub mod cx;
mod exchange;
pub mod outcome;
mod refusals;
mod report;
pub mod resolver;
pub mod session;
mod shared;
mod tls_io;
mod upstream;
pub mod wire;
mod worker;

pub use report::request_facts;
pub use shared::{LoadError, Route, Runtime, Shared};
pub use worker::{bind, serve};
