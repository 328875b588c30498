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
    /// Every address, in the order getaddrinfo gave them (tried in that order); never empty.
    pub addrs: Result<Vec<SocketAddr>, String>,
}

/// Addresses kept from one answer, at most: enough for any provider's A and AAAA records.
const MAX_ADDRS: usize = 16;

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
        let addrs = (q.host.as_str(), q.port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .map(|found| {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for addr in found {
                    if !addrs.contains(&addr) && addrs.len() < MAX_ADDRS {
                        addrs.push(addr);
                    }
                }
                addrs
            })
            .and_then(|addrs| {
                if addrs.is_empty() {
                    Err("no address".to_string())
                } else {
                    Ok(addrs)
                }
            });
        // A worker that has gone away no longer needs the answer.
        if q.reply
            .send(Answer {
                ticket: q.ticket,
                addrs,
            })
            .is_ok()
        {
            let _ = q.waker.wake();
        }
    }
}
