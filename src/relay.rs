//! Output into a pipe whose reader has gone (`ssp --help | true`, `ssp audit verify DIR |
//! head -1`) must neither end a command early nor change its exit code. Rust ignores
//! SIGPIPE, so a write there fails with EPIPE and `println!` panics; with `panic = "abort"`
//! that was exit 134 in place of verify's documented 0 to 3. So when stdout or stderr is a
//! pipe or a socket, it is pointed at a pipe of our own, and a thread copies that to the
//! real one, dropping what the reader no longer takes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::thread::JoinHandle;

/// A standard stream fed through our pipe, and the thread copying it out.
pub struct Relay {
    fd: RawFd,
    copier: JoinHandle<()>,
}

/// Relays stdout and stderr where they are pipes or sockets.
pub fn start() -> Vec<Relay> {
    [libc::STDOUT_FILENO, libc::STDERR_FILENO]
        .into_iter()
        .filter_map(relay)
        .collect()
}

/// Hands over what is still queued, then lets the copiers finish: the last thing `main`
/// does, so that nothing written is lost.
pub fn finish(relays: Vec<Relay>) {
    let _ = std::io::stdout().flush();
    for relay in relays {
        // Putting /dev/null on the stream closes our pipe's last writer: the copier reads
        // to its end and stops.
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            // SAFETY: dup2(2) on descriptors we hold open.
            unsafe { libc::dup2(null.as_raw_fd(), relay.fd) };
        }
        let _ = relay.copier.join();
    }
}

fn relay(fd: RawFd) -> Option<Relay> {
    // SAFETY: fstat(2) fills the zeroed struct; pipe2, fcntl and dup2 only make descriptors,
    // each owned once below (by a `File`, or closed). The stream is pointed at our pipe only
    // once the copier runs, so a failure leaves it as it was.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
            return None;
        }
        let mut ends = [0; 2];
        if libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return None;
        }
        let write_end = File::from_raw_fd(ends[1]);
        let from = File::from_raw_fd(ends[0]);
        let real = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        if real < 0 {
            return None;
        }
        let to = File::from_raw_fd(real);
        let copier = std::thread::Builder::new()
            .name("ssp-output".into())
            .spawn(move || copy(from, to))
            .ok()?;
        if libc::dup2(write_end.as_raw_fd(), fd) < 0 {
            drop(write_end);
            let _ = copier.join();
            return None;
        }
        Some(Relay { fd, copier })
    }
}

/// Copies until every writer has closed; once the reader of `to` has gone, the rest is read
/// and dropped.
fn copy(mut from: File, mut to: File) {
    let mut buf = [0u8; 8192];
    let mut open = true;
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        open = open && to.write_all(&buf[..n]).is_ok();
    }
}
