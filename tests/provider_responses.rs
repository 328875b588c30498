//! Provider responses whose end only the way the provider's connection ends can tell, and
//! what the consumer is then told. A provider here is one raw TLS connection that sends
//! exactly the bytes a test gives it, then ends the way the test says.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

use common::*;
use rustls::{ServerConnection, StreamOwned};
use ssp::http::request;

/// How the one-shot provider ends its connection after its answer.
#[derive(Clone, Copy)]
enum Ending {
    /// TLS close_notify, then FIN: the end of the data is authenticated.
    CloseNotify,
    /// FIN without close_notify: what a crashed provider or a forged TCP close looks like.
    BareFin,
}

/// Accepts one connection, reads one request head, sends `answer` and ends as told.
fn one_shot_provider(answer: &'static [u8], ending: Ending) -> (SocketAddr, JoinHandle<()>) {
    let tls =
        ssp::demo::provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem"))
            .expect("provider TLS");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(tls).unwrap(), sock);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        while request::parse(&buf, 64 * 1024).unwrap().is_none() {
            let n = tls.read(&mut chunk).unwrap();
            assert!(n > 0, "the proxy closed before its request head was complete");
            buf.extend_from_slice(&chunk[..n]);
        }
        tls.write_all(answer).unwrap();
        if let Ending::CloseNotify = ending {
            tls.conn.send_close_notify();
        }
        tls.flush().unwrap();
        // Dropping the stream closes the socket (FIN); rustls sends nothing of its own.
    });
    (addr, serving)
}

/// Sends a valid GET through a proxy in front of `provider` and reads everything the consumer
/// gets until its connection ends: the bytes, and whether it ended with close_notify.
fn fetch_through(provider: SocketAddr) -> (Vec<u8>, bool) {
    let proxy = Proxy::with(Options {
        provider_at: Some(provider),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    consumer.send(&proxy.get()).expect("send");
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match consumer.tls.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => {
                assert!(
                    !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "the proxy hung: {e}"
                );
                return (got, false);
            }
        }
    }
}

const CLOSE_DELIMITED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n\r\n{\"resourceType\":\"Bundle\",\"entry\":[";

/// RFC 9112 section 9.8: a response with neither Content-Length nor chunked framing is
/// complete only if a valid closure alert was received. A provider connection that ends with
/// a bare FIN (a crash, or a close forged on the network) has cut the body at an unknown
/// point: the consumer must not be told, with the proxy's own close_notify, that it is whole.
#[test]
fn close_delimited_response_cut_without_close_notify_is_not_passed_on_as_complete() {
    let (provider, serving) = one_shot_provider(CLOSE_DELIMITED, Ending::BareFin);
    let (got, clean) = fetch_through(provider);
    serving.join().unwrap();
    // The consumer may have had the head and part of the body, or nothing: either way its
    // connection must end without close_notify, so that it knows the body is not whole.
    assert!(
        !clean,
        "a truncated close-delimited body was closed with close_notify, as if complete: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// The same response ended with close_notify is complete, and the consumer is told so.
#[test]
fn close_delimited_response_ended_with_close_notify_is_complete() {
    let (provider, serving) = one_shot_provider(CLOSE_DELIMITED, Ending::CloseNotify);
    let (got, clean) = fetch_through(provider);
    serving.join().unwrap();
    assert!(clean, "the consumer's connection was not closed cleanly");
    assert!(
        got.ends_with(b"\r\n\r\n{\"resourceType\":\"Bundle\",\"entry\":["),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        String::from_utf8_lossy(&got).contains("Connection: close\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// A provider that sends more than one response's worth of bytes in one go: the first answer
/// fills exactly the proxy's 64 KiB read stage, and a second, unasked-for answer ("LEAKD")
/// of 8 KiB follows in the same flush. Every later request, on this connection or another, is answered
/// "HONST". Serves until the test ends.
fn over_answering_provider() -> SocketAddr {
    let tls =
        ssp::demo::provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem"))
            .expect("provider TLS");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut first = true;
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let tls = tls.clone();
            let over_answer = std::mem::take(&mut first);
            std::thread::spawn(move || {
                sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                let mut tls = StreamOwned::new(ServerConnection::new(tls).unwrap(), sock);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                let mut answered = 0;
                loop {
                    while let Some(head) = request::parse(&buf, 64 * 1024).unwrap() {
                        buf.drain(..head.len());
                        let answer = if over_answer && answered == 0 {
                            let head =
                                |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len:05}\r\n\r\n");
                            let body_len = 64 * 1024 - head(0).len();
                            let mut answer = head(body_len).into_bytes();
                            answer.resize(64 * 1024, b'x');
                            // Longer than one socket read of the proxy's TLS, so that its
                            // record is still being received when the first answer is whole.
                            answer
                                .extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 16000\r\n\r\nLEAKD");
                            answer.resize(answer.len() + 15995, b'y');
                            answer
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHONST".to_vec()
                        };
                        answered += 1;
                        if tls.write_all(&answer).and_then(|()| tls.flush()).is_err() {
                            return;
                        }
                    }
                    match tls.read(&mut chunk) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

/// Bytes a provider sent after a complete response, still unread when the exchange ends, must
/// keep its connection out of the pool: reused, they would be read as the answer to the next
/// request, which may be another consumer's.
#[test]
fn bytes_after_a_response_never_answer_the_next_request() {
    let proxy = Proxy::with(Options {
        provider_at: Some(over_answering_provider()),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let first = consumer.exchange(&proxy.get());
    assert_eq!((first.status, first.body.len()), (200, 64 * 1024 - 42));
    for _ in 0..3 {
        let next = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
        assert_eq!(next.status, 200);
        assert!(
            next.body == b"HONST",
            "another exchange's bytes answered this request: {:?}",
            String::from_utf8_lossy(&next.body[..next.body.len().min(40)])
        );
    }
}

/// A provider that answers every request on a connection after its first with two responses:
/// first `STALE:<the previous request's trace id>`, then `FOR:<this one's>`. It is the race
/// above with its timing fixed at the worst point: bytes a provider sent after a response
/// arrive only once the next request is on its way, after any check the proxy can make when
/// it reuses the connection. No check can tell them from the answer.
fn late_extra_provider() -> SocketAddr {
    let tls =
        ssp::demo::provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem"))
            .expect("provider TLS");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = |text: &str| format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let tls = tls.clone();
            std::thread::spawn(move || {
                sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                let mut tls = StreamOwned::new(ServerConnection::new(tls).unwrap(), sock);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                let mut previous: Option<String> = None;
                loop {
                    while let Some(head) = request::parse(&buf, 64 * 1024).unwrap() {
                        let trace =
                            String::from_utf8_lossy(head.field("ssp-traceid").unwrap_or(b"-")).into_owned();
                        buf.drain(..head.len());
                        let mut out = String::new();
                        if let Some(previous) = &previous {
                            out += &answer(&format!("STALE:{previous}"));
                        }
                        out += &answer(&format!("FOR:{trace}"));
                        previous = Some(trace);
                        if tls.write_all(out.as_bytes()).and_then(|()| tls.flush()).is_err() {
                            return;
                        }
                    }
                    match tls.read(&mut chunk) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

fn trace(n: u32) -> String {
    format!("5b6f3f8e-7a1d-4c1e-9d3a-{n:012}")
}

/// The race of `bytes_after_a_response_never_answer_the_next_request`, driven the same way on
/// every run: a provider connection carries the requests of one consumer connection only, so
/// a provider's late bytes can reach no other, whoever it is (the same consumer on another
/// connection, or another consumer). On its own connection they arrive as they would without
/// the proxy; they never name another connection's request.
#[test]
fn late_bytes_from_a_provider_reach_only_the_consumer_connection_they_followed() {
    let proxy = Proxy::with(Options {
        provider_at: Some(late_extra_provider()),
        ..Options::default()
    });
    let mut first = proxy.consumer(&CONSUMER_A);
    let answer = first.exchange(&proxy.get().set("Ssp-TraceID", &trace(1)));
    assert_eq!(String::from_utf8_lossy(&answer.body), format!("FOR:{}", trace(1)));

    // Other consumer connections, of the same consumer and of another, each on a provider
    // connection of its own: before, the one kept from trace 1 answered them STALE:trace 1.
    for (n, who) in [(2, &ECDSA), (3, &CONSUMER_A), (4, &RSA4096)] {
        let mut other = proxy.consumer(who);
        let request = proxy
            .get()
            .set("Ssp-From", who.asid)
            .set("Ssp-TraceID", &trace(n));
        let answer = other.exchange(&request);
        assert_eq!(
            String::from_utf8_lossy(&answer.body),
            format!("FOR:{}", trace(n)),
            "another connection's late bytes answered {}",
            who.file
        );
    }

    // The first connection's next request meets the provider's late bytes, which are its own.
    let answer = first.exchange(&proxy.get().set("Ssp-TraceID", &trace(5)));
    let body = String::from_utf8_lossy(&answer.body);
    assert!(
        body == format!("STALE:{}", trace(1)) || body == format!("FOR:{}", trace(5)),
        "{body}"
    );
}
