//! Lowercase hex for hashes, MACs and keys. Every record carries two hashes, so encoding is a
//! table lookup rather than a `format!` per byte.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push(&mut out, bytes);
    out
}

/// Appends the hex of `bytes` to `out`.
pub fn push(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// Decodes exactly 32 bytes of lowercase hex; anything else (uppercase included) is refused so
/// that one value has one spelling in the audit files.
pub fn decode32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// Decodes lowercase hex of any even length.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_32_bytes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        let text = encode(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(&text[..6], "00254a");
        assert_eq!(decode32(text.as_bytes()), Some(bytes));
    }

    #[test]
    fn refuses_wrong_length_and_non_lowercase_digits() {
        assert_eq!(decode32(b"00"), None);
        assert_eq!(decode32("A".repeat(64).as_bytes()), None);
        assert_eq!(decode32("g".repeat(64).as_bytes()), None);
        assert_eq!(decode32("f".repeat(64).as_bytes()), Some([0xff; 32]));
        assert_eq!(decode(b"00ff1a"), Some(vec![0, 255, 26]));
        assert_eq!(decode(b""), Some(vec![]));
        assert_eq!(decode(b"0"), None);
        assert_eq!(decode(b"0G"), None);
    }
}
