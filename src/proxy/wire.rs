//! The byte pipes a `Session` reads and writes, and the one place where readiness lives.
//!
//! A session never holds a socket: it is handed an `Io` on every call, as rustls is handed a
//! reader and a writer. In the worker each pipe is a `Wire` around a nonblocking socket whose
//! edge-triggered readiness mio reported; in the simulator (`tests/simulate.rs`) a `Wire`
//! around an in-memory socket whose readiness a seeded scheduler reports the same way.

use std::io::{self, ErrorKind, Read, Write};

/// What a session may do with one side's bytes.
pub trait Pipe: Read + Write {
    /// Shuts our sending side only, so an answer already queued is not cut off by a reset.
    fn shutdown_write(&mut self);
    /// Reads even without a readiness event since the last read found nothing: a kept provider
    /// connection is checked this way before it carries a request, because the event that
    /// would tell of bytes or a close may still be queued behind the one that brought the
    /// request.
    fn recheck(&mut self);
}

/// The pipes of one consumer connection: its own, and its provider connections' by id.
pub trait Io {
    fn consumer(&mut self) -> &mut dyn Pipe;
    /// `None` while the connection's socket does not exist yet (its `Connect` is pending).
    fn provider(&mut self, id: u64) -> Option<&mut dyn Pipe>;
}

/// What a `Wire` needs of its socket beyond reading and writing.
pub trait Socket: Read + Write {
    fn shutdown_write(&self);
}

/// A nonblocking socket and what its (edge-triggered) readiness events said.
///
/// Edge-triggered: an event comes when bytes arrive, not while they wait. So a read that
/// stopped early (a full buffer upstream) must remember that the socket may still hold bytes
/// (`readable` stays set), and a read that found the socket empty must wait for the next event
/// (`readable` cleared) instead of asking again, which would only earn an `EAGAIN`, a wasted
/// system call per request.
pub struct Wire<S> {
    pub sock: S,
    readable: bool,
    /// The event said the peer closed or reset (`EPOLLRDHUP`, `EPOLLERR`).
    closing: bool,
}

impl<S> Wire<S> {
    /// A fresh socket: an accepted one may already hold bytes; a connecting one is told of by
    /// its first event.
    pub fn new(sock: S, readable: bool) -> Wire<S> {
        Wire {
            sock,
            readable,
            closing: false,
        }
    }

    /// A readiness event.
    pub fn ready(&mut self, readable: bool, closing: bool) {
        self.readable |= readable || closing;
        self.closing |= closing;
    }
}

impl<S: Read> Read for Wire<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.readable {
            return Err(ErrorKind::WouldBlock.into());
        }
        match self.sock.read(buf) {
            // The kernel gave less than was asked for: the socket is empty now, and the next
            // bytes, or a close, come with an event. Unless the close was reported with the
            // data: it will not be reported again, so reading goes on until the socket says
            // end of file, error or would-block.
            Ok(n) if n > 0 && n < buf.len() && !self.closing => {
                self.readable = false;
                Ok(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.readable = false;
                Err(e)
            }
            other => other,
        }
    }
}

impl<S: Write> Write for Wire<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl<S: Socket> Pipe for Wire<S> {
    fn shutdown_write(&mut self) {
        self.sock.shutdown_write();
    }

    fn recheck(&mut self) {
        self.readable = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that hands out `chunks` one per read, then would-block (or EOF after `closed`).
    struct Scripted {
        chunks: Vec<Vec<u8>>,
        closed: bool,
        reads: usize,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.chunks.is_empty() {
                return if self.closed {
                    Ok(0)
                } else {
                    Err(ErrorKind::WouldBlock.into())
                };
            }
            let chunk = self.chunks.remove(0);
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn a_short_read_waits_for_the_next_event_without_a_system_call() {
        let sock = Scripted {
            chunks: vec![vec![1; 10], vec![2; 10]],
            closed: false,
            reads: 0,
        };
        let mut wire = Wire::new(sock, true);
        let mut buf = [0u8; 64];
        assert_eq!(wire.read(&mut buf).unwrap(), 10);
        assert_eq!(wire.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert_eq!(wire.sock.reads, 1);
        wire.ready(true, false);
        assert_eq!(wire.read(&mut buf).unwrap(), 10);
    }

    #[test]
    fn a_close_reported_with_the_data_is_read_to_the_end() {
        let sock = Scripted {
            chunks: vec![vec![1; 10]],
            closed: true,
            reads: 0,
        };
        let mut wire = Wire::new(sock, false);
        wire.ready(true, true);
        let mut buf = [0u8; 64];
        assert_eq!(wire.read(&mut buf).unwrap(), 10);
        assert_eq!(wire.read(&mut buf).unwrap(), 0, "the end of file must be seen");
    }
}
