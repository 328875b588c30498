//! Moving bytes between a pipe (`wire::Pipe`) and a rustls connection, the same way for both
//! sides of the proxy. Nothing here decides anything about HTTP, and nothing here knows
//! whether the pipe is a socket.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::ops::{Deref, DerefMut};

use rustls::ConnectionCommon;

/// What a read pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Plaintext bytes appended to the buffer.
    pub bytes: usize,
    /// The pipe has nothing more for now.
    pub drained: bool,
    /// The peer closed: cleanly (close_notify) or not.
    pub eof: bool,
    /// The peer sent close_notify: the end of its data is its own, not a cut connection.
    pub close_notify: bool,
}

/// Reads from `pipe` through TLS into `plaintext` until the pipe would block, the peer closes,
/// or `plaintext` holds `cap` bytes. TLS errors are returned for the caller to log.
pub fn read<C, S>(
    pipe: &mut dyn Read,
    tls: &mut C,
    plaintext: &mut Vec<u8>,
    cap: usize,
    mut framing: Option<&mut RecordFraming>,
) -> Result<ReadOutcome, rustls::Error>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
{
    let mut out = ReadOutcome::default();
    while plaintext.len() < cap {
        let mut framed = Framed {
            pipe: &mut *pipe,
            framing: framing.as_deref_mut(),
        };
        match tls.read_tls(&mut framed) {
            Ok(0) => out.eof = true,
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

/// A reader that follows the record framing of what it reads when asked to.
struct Framed<'a, 'f> {
    pipe: &'a mut dyn Read,
    framing: Option<&'f mut RecordFraming>,
}

impl Read for Framed<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if let Some(framing) = self.framing.as_deref_mut() {
            framing.feed(&buf[..n]);
        }
        Ok(n)
    }
}

/// Where a peer's TLS byte stream stands against its record framing (a 5-byte header whose
/// last two bytes are the length, then that many bytes). rustls keeps a record it has only
/// partly received to itself, so this is how a provider connection whose peer sent more than
/// its response, in a record still arriving, is known not to be idle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordFraming {
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
}

impl RecordFraming {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&first, rest)) = bytes.split_first() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.header[self.header_len] = first;
            self.header_len += 1;
            bytes = rest;
            if self.header_len == self.header.len() {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header_len = 0;
            }
        }
    }

    /// Every record read so far is whole.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.body_left == 0
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

/// Writes queued TLS records until done or the socket would block; returns the bytes written.
///
/// Bytes written are progress even when nothing else moved: they free room in rustls for
/// more plaintext, and if the socket took them all no writable event will come to say so
/// (the kernel reports room only after a write was refused). A caller that stopped here
/// would leave its staged bytes waiting for an event that never comes.
pub fn flush<C, S>(pipe: &mut dyn Write, tls: &mut C) -> io::Result<usize>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
{
    let mut written = 0;
    while tls.wants_write() {
        match tls.write_tls(pipe) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
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

#[cfg(test)]
mod framing_tests {
    use super::RecordFraming;

    #[test]
    fn record_boundaries_are_followed_across_any_split() {
        // Two application-data records (23, TLS 1.2 on the wire) of 3 and 300 bytes.
        let mut stream = vec![23, 3, 3, 0, 3, 1, 2, 3, 23, 3, 3, 1, 44];
        stream.extend(std::iter::repeat_n(9, 300));
        let ends = [8, stream.len()];
        for split in 0..=stream.len() {
            let mut framing = RecordFraming::default();
            framing.feed(&stream[..split]);
            assert_eq!(
                framing.at_boundary(),
                split == 0 || ends.contains(&split),
                "{split}"
            );
            framing.feed(&stream[split..]);
            assert!(framing.at_boundary(), "{split}");
        }
    }
}
