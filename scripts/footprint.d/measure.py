#!/usr/bin/env python3
"""Process-level measurements of one `ssp run` for scripts/footprint.

    measure.py --bin SSP --config FILE --port P --pki DIR [--counts 1000,5000] [--starts 3]

1. Startup: starts `ssp run` --starts times and measures the time from exec to the listen
   socket appearing in /proc/net/tcp (LISTEN state), then stops it with SIGTERM.
2. Starts it once more, lets it settle, reads VmRSS (idle).
3. Opens mutual-TLS consumer connections (consumer-a's certificate) with a few threads, each
   completing the handshake and then held open without sending anything, up to each count;
   after each count waits for the proxy's RSS to settle, checks the proxy still holds the
   connections (ESTABLISHED sockets on its port) and reads VmRSS.

Prints `key=value` lines for the shell script: startup_ms=..., idle_rss_kib=...,
rss_kib_<N>=..., held_<N>=..., hwm_kib=... . Exit 1 with a message on any failure.
Everything is bounded: handshake timeouts, settle timeouts, a stop timeout then SIGKILL.
"""

import argparse
import concurrent.futures
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time


def fail(msg):
    print(f"measure.py: {msg}", file=sys.stderr)
    sys.exit(1)


def raise_nofile(limit=20000):
    """Both the proxy (inherits it) and this client hold one fd per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tcp_sockets(port):
    """(listening, established) sockets whose local port is `port`, from /proc/net/tcp{,6}."""
    listening = established = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split(None, 4)
                    if int(parts[1].rsplit(":", 1)[1], 16) != port:
                        continue
                    if parts[3] == "0A":
                        listening += 1
                    elif parts[3] == "01":
                        established += 1
        except FileNotFoundError:
            pass
    return listening, established


def status(pid, field):
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    fail(f"no {field} in /proc/{pid}/status")


def start(args, log):
    return subprocess.Popen(
        [args.bin, "run", "--config", args.config],
        stdout=log,
        stderr=log,
        env={**os.environ, "RUST_LOG": "warn"},
    )


def wait_listening(proc, port, t0, timeout=30.0):
    """Seconds from t0 (just before exec) until the port is in LISTEN, polling /proc every
    millisecond."""
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            fail(f"ssp run exited with {proc.returncode} before listening (see the log)")
        if tcp_sockets(port)[0] > 0:
            return time.monotonic() - t0
        time.sleep(0.001)
    fail(f"ssp run did not listen on {port} within {timeout:.0f} s")


def stop(proc, timeout=40.0):
    """SIGTERM drains (idle connections are closed at once); SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            fail("ssp run did not stop within 40 s of SIGTERM")


def settle(pid, timeout=20.0):
    """Waits until VmRSS stops moving (the proxy finishes the handshakes it has read, sends
    session tickets, frees handshake state): three reads 0.5 s apart within 0.5 %."""
    reads = [status(pid, "VmRSS")]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        reads.append(status(pid, "VmRSS"))
        last = reads[-3:]
        if len(last) == 3 and max(last) - min(last) <= max(last) * 0.005:
            break
    return reads[-1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pki", required=True)
    p.add_argument("--counts", default="1000,5000")
    p.add_argument("--starts", type=int, default=3)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--log", default=os.devnull)
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c]

    nofile = raise_nofile()
    if counts and nofile < max(counts) + 100:
        fail(f"RLIMIT_NOFILE is {nofile}; need more than {max(counts)} for the connections")

    log = open(args.log, "ab")

    # 1. Startup to listening: median of a few starts (the first also creates the audit file).
    times = []
    for _ in range(args.starts):
        t0 = time.monotonic()
        proc = start(args, log)
        times.append(wait_listening(proc, args.port, t0))
        stop(proc)
    times.sort()
    print(f"startup_ms={times[len(times) // 2] * 1000:.1f}")
    print(f"startup_all_ms={','.join(f'{t * 1000:.1f}' for t in times)}")

    # 2. Idle.
    proc = start(args, log)
    try:
        wait_listening(proc, args.port, time.monotonic())
        time.sleep(1.0)
        print(f"idle_rss_kib={settle(proc.pid)}", flush=True)

        # 3. Held connections.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(f"{args.pki}/consumer-a.pem", f"{args.pki}/consumer-a.key")
        ctx.load_verify_locations(f"{args.pki}/nhs-ca.pem")

        def connect(_):
            raw = socket.create_connection(("127.0.0.1", args.port), timeout=30)
            tls = ctx.wrap_socket(raw, server_hostname="localhost")  # handshake happens here
            return tls

        held = []
        with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
            for count in counts:
                t0 = time.monotonic()
                need = count - len(held)
                try:
                    held.extend(pool.map(connect, range(need)))
                except (OSError, ssl.SSLError) as e:
                    fail(f"connection {len(held) + 1} of {count} failed: {e!r}")
                took = time.monotonic() - t0
                rss = settle(proc.pid)
                # The proxy must still hold them all (no idle or header timeout closed them).
                established = tcp_sockets(args.port)[1]
                print(f"rss_kib_{count}={rss}")
                print(f"held_{count}={established}")
                print(f"handshakes_per_s_{count}={need / took:.0f}", flush=True)
                if established < count:
                    fail(f"the proxy holds {established} of {count} connections")
        print(f"hwm_kib={status(proc.pid, 'VmHWM')}")
        for s in held:
            s.close()
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
