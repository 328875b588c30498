//! The PROXY protocol v2 header an L4 balancer (HAProxy, IPVS with a helper) puts before the
//! consumer's TLS bytes, so that logs, `Forwarded`, the audit and the refused-handshake limits
//! see the real consumer address. Pure: bytes in, an address out.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family, length.
const FIXED: usize = 16;
/// A header longer than this (addresses plus TLVs) is refused rather than buffered.
pub const MAX_HEADER: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// More bytes are needed.
    Incomplete,
    /// The header is `consumed` bytes long; `source` is the consumer's address, or `None` for
    /// the balancer's own health checks (LOCAL) and address families other than TCP.
    Done {
        consumed: usize,
        source: Option<SocketAddr>,
    },
}

pub fn parse(buf: &[u8]) -> Result<Header, &'static str> {
    let seen = buf.len().min(SIGNATURE.len());
    if buf[..seen] != SIGNATURE[..seen] {
        return Err("not a PROXY protocol v2 header");
    }
    if buf.len() < FIXED {
        return Ok(Header::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err("unsupported PROXY protocol version");
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let consumed = FIXED + length;
    if consumed > MAX_HEADER {
        return Err("PROXY protocol header too long");
    }
    if buf.len() < consumed {
        return Ok(Header::Incomplete);
    }
    let body = &buf[FIXED..consumed];
    let source = match (command, buf[13]) {
        // LOCAL: the balancer talking for itself.
        (0, _) => None,
        // TCP over IPv4: source, destination, source port, destination port.
        (1, 0x11) => {
            let a: &[u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or("short IPv4 addresses")?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::from((ip, u16::from_be_bytes([a[8], a[9]]))))
        }
        (1, 0x21) => {
            let a: &[u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or("short IPv6 addresses")?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Some(SocketAddr::from((
                Ipv6Addr::from(octets),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        (1, _) => None,
        _ => return Err("unknown PROXY protocol command"),
    };
    Ok(Header::Done { consumed, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(src: [u8; 4], port: u16, tlv: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&[10, 0, 0, 1]);
        h.extend_from_slice(&port.to_be_bytes());
        h.extend_from_slice(&443u16.to_be_bytes());
        h.extend_from_slice(tlv);
        h
    }

    #[test]
    fn ipv4_source_is_read_and_tls_bytes_after_it_are_left() {
        let mut bytes = v4([203, 0, 113, 7], 5555, &[0x04, 0x00, 0x01, 0xaa]);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&bytes),
            Ok(Header::Done {
                consumed: header_len,
                source: Some("203.0.113.7:5555".parse().unwrap())
            })
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = v4([192, 0, 2, 1], 1, &[]);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(Header::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn ipv6_and_local_are_understood() {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x21, 0, 36]);
        let mut src = [0u8; 16];
        src[0] = 0x20;
        src[1] = 0x01;
        src[15] = 1;
        h.extend_from_slice(&src);
        h.extend_from_slice(&[0u8; 16]);
        h.extend_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
        let Ok(Header::Done {
            source: Some(addr), ..
        }) = parse(&h)
        else {
            panic!("{:?}", parse(&h))
        };
        assert_eq!(addr, "[2001::1]:4660".parse().unwrap());
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Ok(Header::Done {
                consumed: 16,
                source: None
            })
        );
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(
            parse(b"\x16\x03\x01\x02\x00").is_err(),
            "plain TLS without a header"
        );
        assert!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n").is_err(),
            "v1 text header"
        );
        let mut bad_version = v4([1, 2, 3, 4], 1, &[]);
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        let mut bad_command = v4([1, 2, 3, 4], 1, &[]);
        bad_command[12] = 0x2f;
        assert!(parse(&bad_command).is_err());
        let mut too_long = SIGNATURE.to_vec();
        too_long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&too_long).is_err());
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&short).is_err());
    }
}
