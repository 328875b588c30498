//! DNS on its own thread: `getaddrinfo` blocks, and nothing on a worker may block. Workers
//! send a question and get the answer on their own channel, woken through their mio Waker.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use mio::Waker;

pub struct Question {
    pub host: String,
    pub port: u16,
    /// Identifies the exchange waiting for the answer on the asking worker.
    pub ticket: u64,
    pub reply: Sender<Answer>,
    pub waker: Arc<Waker>,
}

pub struct Answer {
    pub ticket: u64,
    pub addr: Result<SocketAddr, String>,
}

/// Starts the resolver thread; it ends when every sender is dropped.
pub fn start() -> std::io::Result<Sender<Question>> {
    let (tx, rx) = mpsc::channel::<Question>();
    std::thread::Builder::new()
        .name("ssp-resolver".into())
        .spawn(move || serve(rx))?;
    Ok(tx)
}

fn serve(questions: Receiver<Question>) {
    for q in questions {
        let addr = (q.host.as_str(), q.port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()));
        // A worker that has gone away no longer needs the answer.
        if q.reply
            .send(Answer {
                ticket: q.ticket,
                addr,
            })
            .is_ok()
        {
            let _ = q.waker.wake();
        }
    }
}
