//! A small provider for the demo and the tests: HTTPS with client certificates required,
//! one thread per connection (it is not on the proxy's path, so blocking is fine here),
//! keep-alive, Content-Length and chunked bodies, and a record of every request it saw.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::http::body::BodyReader;
use crate::http::request::{self, BodyFraming};
use crate::policy::identity::Identity;
use crate::tls::{self, FileError, files};

/// A request as the provider received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub fields: Vec<(String, String)>,
    /// The payload, framing removed.
    pub body: Vec<u8>,
    /// The body as it came on the wire: chunk framing and trailers included.
    pub framed_body: Vec<u8>,
    /// Subject of the client certificate the caller (the proxy) presented.
    pub client_subject: Option<String>,
}

impl SeenRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body with chunked framing instead of Content-Length.
    pub chunked: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            fields: vec![("Content-Type".into(), "application/fhir+json".into())],
            body: body.into(),
            chunked: false,
            delay: Duration::ZERO,
        }
    }
}

pub type Handler = Arc<dyn Fn(&SeenRequest) -> Reply + Send + Sync>;

pub struct Provider {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
}

/// TLS for a provider: its certificate, and client certificates verified against `client_ca`.
pub fn server_config(
    certificate: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, FileError> {
    let mut roots = RootCertStore::empty();
    for cert in files::certificates(client_ca)? {
        roots
            .add(cert)
            .map_err(|e| files::error(client_ca, e.to_string()))?;
    }
    let provider = tls::crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| files::error(client_ca, e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| files::error(certificate, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(files::certificates(certificate)?, files::private_key(key)?)
        .map_err(|e| files::error(key, e.to_string()))?;
    Ok(Arc::new(config))
}

/// Starts serving on `addr` (port 0 picks one) in background threads.
pub fn start(addr: SocketAddr, config: Arc<ServerConfig>, handler: Handler) -> std::io::Result<Provider> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::Builder::new()
        .name("demo-provider".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, handler, record) = (config.clone(), handler.clone(), record.clone());
                let _ = std::thread::Builder::new()
                    .name("demo-provider-conn".into())
                    .spawn(move || serve(stream, config, handler, record));
            }
        })?;
    Ok(Provider { addr, seen })
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>, handler: Handler, seen: Arc<Mutex<Vec<SeenRequest>>>) {
    let _ = stream.set_nodelay(true);
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut tls, &mut buf) {
        let reply = handler(&request);
        let keep_alive = !request
            .field("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if let Ok(mut all) = seen.lock() {
            all.push(request);
        }
        std::thread::sleep(reply.delay);
        if write_reply(&mut tls, &reply).is_err() || !keep_alive {
            break;
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

fn read_request(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
    buf: &mut Vec<u8>,
) -> Option<SeenRequest> {
    let head = loop {
        if let Some(head) = request::parse(buf, 64 * 1024).ok()? {
            break head;
        }
        fill(tls, buf)?;
    };
    buf.drain(..head.len());
    let mut body = Vec::new();
    let mut framed_body = Vec::new();
    let mut reader = match head.framing {
        BodyFraming::None => None,
        BodyFraming::Length(n) => Some(BodyReader::length(n)),
        BodyFraming::Chunked => Some(BodyReader::chunked()),
    };
    while let Some(r) = reader.as_mut() {
        if buf.is_empty() {
            fill(tls, buf)?;
        }
        let progress = r.feed(buf, Some(&mut body)).ok()?;
        framed_body.extend(buf.drain(..progress.consumed));
        if progress.done {
            reader = None;
        }
    }
    let client_subject = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| Identity::from_certificate(c))
        .map(|i| i.subject.to_string());
    Some(SeenRequest {
        method: head.method().to_string(),
        target: head.target().to_string(),
        fields: head
            .fields()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect(),
        body,
        framed_body,
        client_subject,
    })
}

fn fill(tls: &mut StreamOwned<ServerConnection, TcpStream>, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match tls.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn write_reply(tls: &mut StreamOwned<ServerConnection, TcpStream>, reply: &Reply) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        reply.status,
        if reply.status < 400 { "OK" } else { "Error" }
    );
    for (n, v) in &reply.fields {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if reply.chunked {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    }
    tls.write_all(out.as_bytes())?;
    if reply.chunked {
        for chunk in reply.body.chunks(8192) {
            tls.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            tls.write_all(chunk)?;
            tls.write_all(b"\r\n")?;
        }
        tls.write_all(b"0\r\n\r\n")?;
    } else {
        tls.write_all(&reply.body)?;
    }
    tls.flush()
}
