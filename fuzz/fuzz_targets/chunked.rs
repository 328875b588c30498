//! The chunked decoder finds the end of a body whose raw bytes are forwarded unchanged, so
//! where it stops must not depend on how the bytes arrived (TCP and TLS split them anywhere).
//!
//! Input: byte 0 is how many split points follow (0-7), each one byte (a position scaled to
//! the body); the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp::http::chunked::{ChunkError, ChunkedDecoder};

/// Consumed bytes and whether the message ended, or the error; and the payload decoded.
type Outcome = (Result<(usize, bool), ChunkError>, Vec<u8>);

/// Feeds `body` cut at `cuts` (sorted positions), as a connection would: stop at the end of
/// the message or at the first error.
fn run(body: &[u8], cuts: &[usize], copy: bool) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut total = 0;
    let mut start = 0;
    let ends = cuts.iter().copied().chain(std::iter::once(body.len()));
    for end in ends {
        let piece = &body[start..end];
        start = end;
        let progress = match decoder.feed(piece, copy.then_some(&mut out)) {
            Ok(p) => p,
            Err(e) => return (Err(e), out),
        };
        assert!(progress.consumed <= piece.len(), "consumed more than given");
        assert_eq!(progress.done, decoder.is_done());
        total += progress.consumed;
        if progress.done {
            break;
        }
        // Until the message ends every byte given belongs to it.
        assert_eq!(progress.consumed, piece.len(), "stopped early without ending");
    }
    if copy {
        assert_eq!(decoder.payload_len(), out.len() as u64);
    }
    (Ok((total, decoder.is_done())), out)
}

/// What `relay` stages for the provider when `body` arrives cut at `cuts`: the bytes consumed,
/// and those relayed (the framing less trailer fields), or the error.
fn relay(body: &[u8], cuts: &[usize]) -> Result<(usize, Vec<u8>), ChunkError> {
    let mut decoder = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut total = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain(std::iter::once(body.len())) {
        let piece = &body[start..end];
        start = end;
        let progress = decoder.relay(piece, &mut out)?;
        total += progress.consumed;
        if progress.done {
            break;
        }
    }
    Ok((total, out))
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8).min(rest.len());
    let (raw_cuts, body) = rest.split_at(count);
    let mut cuts: Vec<usize> = raw_cuts
        .iter()
        .map(|&c| usize::from(c) * body.len() / 256)
        .collect();
    cuts.sort_unstable();

    let whole = run(body, &[], true);
    let pieces = run(body, &cuts, true);
    let every_byte: Vec<usize> = (1..body.len()).collect();
    let bytewise = run(body, &every_byte, true);
    // The payload copied so far may differ at an error (it stops mid-piece); the verdict and
    // the end of the message may not.
    assert_eq!(whole.0, pieces.0, "split at {cuts:?}");
    assert_eq!(whole.0, bytewise.0, "byte by byte");
    if whole.0.is_ok() {
        assert_eq!(whole.1, pieces.1);
        assert_eq!(whole.1, bytewise.1);
    }
    // Not copying the payload changes nothing about the framing.
    assert_eq!(whole.0, run(body, &cuts, false).0);
    if let Ok((consumed, true)) = whole.0 {
        assert!(consumed <= body.len());
    }
    // Relaying walks the framing as feeding does, whatever the cuts, and what it stages is
    // itself a complete message with the same payload and no trailer fields.
    let relayed = relay(body, &cuts);
    assert_eq!(relayed, relay(body, &[]), "relayed, split at {cuts:?}");
    let verdict = whole.0.map(|(consumed, _)| consumed);
    assert_eq!(relayed.as_ref().map(|(n, _)| *n).map_err(|e| *e), verdict);
    if let (Ok((consumed, staged)), Ok((_, true))) = (&relayed, whole.0) {
        assert!(staged.len() <= *consumed);
        let again = run(staged, &[], true);
        assert_eq!(again.0, Ok((staged.len(), true)), "the relayed message");
        assert_eq!(again.1, whole.1, "the relayed payload");
        // No trailer field left: relaying it again changes nothing.
        assert_eq!(relay(staged, &[]), Ok((staged.len(), staged.clone())));
    }
});
