//! HTTP/1.1 as the proxy needs it, without I/O: heads, framing, target URLs, rewriting and the
//! proxy's own answers. Nothing here knows about sockets, TLS or mio.

pub mod answer;
pub mod body;
pub mod chunked;
pub mod forward;
pub mod head;
pub mod request;
pub mod response;
pub mod target;
