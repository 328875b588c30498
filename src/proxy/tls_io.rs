//! Moving bytes between a nonblocking socket and a rustls connection, the same way for both
//! sides of the proxy. Nothing here decides anything about HTTP.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::ops::{Deref, DerefMut};

use mio::net::TcpStream;
use rustls::ConnectionCommon;

/// What a read pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Plaintext bytes appended to the buffer.
    pub bytes: usize,
    /// The socket has nothing more for now (readiness consumed).
    pub drained: bool,
    /// The peer closed: cleanly (close_notify) or not.
    pub eof: bool,
    /// The peer sent close_notify: the end of its data is its own, not a cut connection.
    pub close_notify: bool,
}

/// Reads from the socket through TLS into `plaintext` until the socket would block (or gave
/// less than asked for, see below), the peer closes, or `plaintext` holds `cap` bytes. TLS
/// errors are returned for the caller to log.
///
/// `peer_closing`: epoll said the peer closed or reset. A short read then proves nothing: the
/// close was reported with the data and will not be reported again, so reading goes on until
/// the socket says EOF, error or would-block.
pub fn read<C, S>(
    sock: &mut TcpStream,
    tls: &mut C,
    plaintext: &mut Vec<u8>,
    cap: usize,
    peer_closing: bool,
) -> Result<ReadOutcome, rustls::Error>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
{
    let mut out = ReadOutcome::default();
    while plaintext.len() < cap {
        let mut probe = ShortReadProbe { sock, short: false };
        match tls.read_tls(&mut probe) {
            Ok(0) => out.eof = true,
            // The kernel gave less than was asked for: the socket is empty now, and epoll
            // (edge-triggered, as mio registers) reports the next bytes, or close, that arrive.
            // Asking again would only earn an EAGAIN, a wasted system call per request.
            Ok(_) if probe.short && !peer_closing => out.drained = true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => out.drained = true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => out.eof = true,
        }
        let state = tls.process_new_packets()?;
        if state.peer_has_closed() {
            out.eof = true;
            out.close_notify = true;
        }
        out.bytes += drain_plaintext(tls, plaintext);
        if out.eof || out.drained {
            break;
        }
    }
    Ok(out)
}

/// A socket reader that remembers whether a read returned fewer bytes than asked for.
struct ShortReadProbe<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for ShortReadProbe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n > 0 && n < buf.len();
        Ok(n)
    }
}

fn drain_plaintext<C, S>(tls: &mut C, plaintext: &mut Vec<u8>) -> usize
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
{
    // Copy rustls's decrypted chunks straight in, appending only what arrived: no scratch
    // buffer to zero per read, and no idle connection holding a whole chunk of touched memory.
    let mut total = 0;
    loop {
        let mut reader = tls.reader();
        // WouldBlock: no more plaintext now; UnexpectedEof: closed without close_notify,
        // which the caller learns from the socket.
        let n = match reader.fill_buf() {
            Ok(chunk) if !chunk.is_empty() => {
                plaintext.extend_from_slice(chunk);
                chunk.len()
            }
            _ => return total,
        };
        reader.consume(n);
        total += n;
    }
}

/// Writes queued TLS records until done or the socket would block.
pub fn flush<C, S>(sock: &mut TcpStream, tls: &mut C) -> io::Result<()>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
{
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Hands as much of `staged` as rustls accepts to it, removing what was taken.
pub fn stage<C, S>(tls: &mut C, staged: &mut Vec<u8>) -> usize
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
{
    if staged.is_empty() {
        return 0;
    }
    let n = tls.writer().write(staged).unwrap_or(0);
    staged.drain(..n);
    n
}

/// Shuts the write side only, so an answer already queued is not cut off by a reset.
pub fn shutdown_write(sock: &TcpStream) {
    let _ = sock.shutdown(std::net::Shutdown::Write);
}
