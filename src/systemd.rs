//! systemd's notification protocol (sd_notify(3)): datagrams to `$NOTIFY_SOCKET`, spoken
//! directly so no libsystemd is needed. Outside systemd every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`); false when not under systemd or the send failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        // An abstract socket: the name follows the '@'.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    sent.is_ok()
}

/// `RELOADING=1` with the timestamp systemd 253+ wants for `Type=notify-reload` semantics.
pub fn reloading() -> bool {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, if the watchdog is meant for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times on.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real datagram socket stands in for systemd; the test sets NOTIFY_SOCKET only inside
    /// a child process so parallel tests never see it.
    #[test]
    fn notifications_arrive_on_the_socket() {
        if std::env::var_os("SSP_NOTIFY_CHILD").is_some() {
            assert!(notify("READY=1"));
            assert!(reloading());
            return;
        }
        let dir = std::env::temp_dir().join(format!("ssp-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "systemd::tests::notifications_arrive_on_the_socket",
                "--nocapture",
            ])
            .env("SSP_NOTIFY_CHILD", "1")
            .env("NOTIFY_SOCKET", &path)
            .status()
            .unwrap();
        assert!(status.success());
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = listener.recv(&mut buf).unwrap();
        let reload = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(reload.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reload}");
        assert!(
            reload["RELOADING=1\nMONOTONIC_USEC=".len()..]
                .parse::<u64>()
                .unwrap()
                > 0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_systemd_nothing_is_sent() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!notify("READY=1"));
        }
    }
}
