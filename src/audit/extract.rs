//! Extracts that prove themselves (`ssp audit find --proof OUT`, `ssp audit verify-extract`),
//! without I/O beyond the `Write` they are given.
//!
//! A seal's MAC covers the hash of the record before it, and each hash the one before, so a
//! record is proved by the chain from it to the next seal. The records between are not copied
//! (they are other people's requests, and there can be thousands): each is replaced by a
//! *link*, SHA-256's state after the whole 64-byte blocks of it that come before its `prev`,
//! and the few bytes after those (under 64) up to `prev`. Given the hash before, a link gives
//! the record's hash and nothing more of it. An extract is JSON Lines:
//!
//! ```text
//! {"ssp_audit_extract":"ssp-audit-extract-v1","query":"--subject 9000000009"}
//! {"seq":1041,…,"type":"req",…}                   a record found, exactly as written
//! {"link":"<state, 64 hex>","blocks":13,"tail":"<hex>"}   each record between
//! {"seq":1043,…,"type":"seal",…}                  the next seal, exactly as written
//! …                                               more records, each run ending with its seal
//! {"mac":"<64 hex>"}
//! ```
//!
//! The last line is an HMAC-SHA-256 of every line before it with a key derived from the
//! initial key, made by whoever ran `find` with that key: a record dropped from the extract,
//! or turned into a link, is then seen too, which the seals alone cannot show.

use std::io::{self, Write};

use hmac::{Hmac, KeyInit, Mac};
use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

use super::hex;
use super::json;
use super::record::{self, MAX_LINE, Parsed};
use super::seal::Key;

const FORMAT: &str = "ssp-audit-extract-v1";

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Runs SHA-256's compression over whole 64-byte blocks (a shorter rest is ignored).
fn absorb(state: &mut [u32; 8], bytes: &[u8]) {
    let (blocks, _) = bytes.as_chunks::<64>();
    compress256(state, blocks);
}

/// A record left out of an extract: what links its hash to the hash before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    state: [u32; 8],
    blocks: u64,
    tail: Vec<u8>,
}

impl Link {
    /// The link of a checked record line.
    pub fn of(line: &[u8]) -> Link {
        let before = record::before_prev(line);
        let whole = before.len() / 64 * 64;
        let mut state = IV;
        absorb(&mut state, &before[..whole]);
        Link {
            state,
            blocks: (whole / 64) as u64,
            tail: before[whole..].to_vec(),
        }
    }

    /// The record's hash, given the hash of the record before it: SHA-256 finished from the
    /// state, over the tail, `prev`'s hex digits and `"}`, with SHA-256's padding.
    pub fn hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut rest = self.tail.clone();
        rest.extend_from_slice(hex::encode(prev).as_bytes());
        rest.extend_from_slice(b"\"}");
        let bits = (self.blocks * 64 + rest.len() as u64) * 8;
        rest.push(0x80);
        while rest.len() % 64 != 56 {
            rest.push(0);
        }
        rest.extend_from_slice(&bits.to_be_bytes());
        let mut state = self.state;
        absorb(&mut state, &rest);
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        let state: Vec<u8> = self.state.iter().flat_map(|w| w.to_be_bytes()).collect();
        let line = format!(
            "{{\"link\":\"{}\",\"blocks\":{},\"tail\":\"{}\"}}\n",
            hex::encode(&state),
            self.blocks,
            hex::encode(&self.tail)
        );
        out.extend_from_slice(line.as_bytes());
    }

    fn parse(line: &[u8]) -> Option<Link> {
        let members = json::members(std::str::from_utf8(line).ok()?)?;
        let text = |name: &str| json::member(&members, name).and_then(json::unquoted);
        let state = hex::decode32(text("link")?.as_bytes())?;
        let blocks = json::member(&members, "blocks")?.parse().ok();
        let blocks = blocks.filter(|b| *b <= (MAX_LINE / 64) as u64)?;
        let tail = hex::decode(text("tail")?.as_bytes()).filter(|t| t.len() < 64)?;
        let mut words = [0u32; 8];
        for (word, bytes) in words.iter_mut().zip(state.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        Some(Link {
            state: words,
            blocks,
            tail,
        })
    }
}

/// The HMAC that closes an extract, keyed by a key derived from the initial key (never a
/// seal's key: the label differs from the key evolution's).
fn extract_mac(k0: &Key) -> Hmac<Sha256> {
    let key = Sha256::new()
        .chain_update(FORMAT)
        .chain_update(k0.bytes())
        .finalize();
    // HMAC takes keys of any length: this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any HMAC key length")
}

/// Writes an extract as `find` meets the records that verified, in chain order.
pub struct Builder<W: Write> {
    out: W,
    mac: Hmac<Sha256>,
    /// Since the first record found that no seal covers yet: its lines and links, to write
    /// once a seal closes them.
    pending: Vec<u8>,
    /// Records found in `pending`.
    waiting: u64,
    /// The hash of the last record met, to see where the chain breaks (a gap).
    last: Option<[u8; 32]>,
    /// Records found and written with their seal.
    pub proven: u64,
}

impl<W: Write> Builder<W> {
    /// `query`: how the records were chosen, for the reader (the MAC covers it).
    pub fn new(out: W, k0: &Key, query: &str) -> io::Result<Builder<W>> {
        let mut builder = Builder {
            out,
            mac: extract_mac(k0),
            pending: Vec::new(),
            waiting: 0,
            last: None,
            proven: 0,
        };
        let mut head = String::new();
        json::write_obj(
            &mut head,
            &[
                ("ssp_audit_extract", json::Val::str(FORMAT)),
                ("query", json::Val::str(query)),
            ],
        );
        head.push('\n');
        builder.emit(head.as_bytes())?;
        Ok(builder)
    }

    /// A record that verified (`line` without its newline); `found`: it is one to prove.
    pub fn record(&mut self, line: &[u8], p: &Parsed, found: bool) -> io::Result<()> {
        if self.last != Some(p.prev) {
            // A gap: what is pending can no longer reach a seal.
            self.pending.clear();
            self.waiting = 0;
        }
        self.last = Some(p.h);
        if self.pending.is_empty() && !found {
            return Ok(());
        }
        if found || p.seal.is_some() {
            self.pending.extend_from_slice(line);
            self.pending.push(b'\n');
            self.waiting += u64::from(found);
        } else {
            Link::of(line).write(&mut self.pending);
        }
        if p.seal.is_some() {
            let pending = std::mem::take(&mut self.pending);
            self.emit(&pending)?;
            self.proven += std::mem::take(&mut self.waiting);
        }
        Ok(())
    }

    /// Closes the extract with its MAC. Gives back the writer and the records found that no
    /// seal covers yet (after the last seal, or before a gap): they are not in the extract.
    pub fn finish(self) -> io::Result<(W, u64)> {
        let Builder {
            mut out,
            mac,
            waiting,
            ..
        } = self;
        let line = format!("{{\"mac\":\"{}\"}}\n", hex::encode(&mac.finalize().into_bytes()));
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok((out, waiting))
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.mac.update(bytes);
        self.out.write_all(bytes)
    }
}

/// `verify-extract`: checks an extract line by line with the initial key alone.
pub struct Checker {
    k0: Key,
    /// The last seal's key, so consecutive seals cost one hash each.
    cursor: Key,
    mac: Hmac<Sha256>,
    lines: u64,
    query: Option<String>,
    /// The seq and hash the next record or link must follow, inside a run not yet sealed.
    head: Option<(u64, [u8; 32])>,
    /// Records of the current run.
    waiting: Vec<u64>,
    /// Records proved by a seal, and the seals.
    proven: Vec<u64>,
    seals: u64,
    closed: bool,
}

impl Checker {
    pub fn new(k0: Key) -> Checker {
        Checker {
            cursor: k0.clone(),
            mac: extract_mac(&k0),
            k0,
            lines: 0,
            query: None,
            head: None,
            waiting: Vec::new(),
            proven: Vec::new(),
            seals: 0,
            closed: false,
        }
    }

    /// One line, without its newline. `Err` says what is wrong with it.
    pub fn line(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.lines += 1;
        if self.closed {
            return Err("a line after the extract's MAC".into());
        }
        if let Some(hex_mac) = bytes
            .strip_prefix(b"{\"mac\":\"")
            .and_then(|b| b.strip_suffix(b"\"}"))
        {
            return self.close(hex_mac);
        }
        self.mac.update(bytes);
        self.mac.update(b"\n");
        if self.lines == 1 {
            let head = std::str::from_utf8(bytes).ok().and_then(json::members);
            let field = |name: &str| head.as_deref().and_then(|h| json::member(h, name));
            if field("ssp_audit_extract").and_then(json::unquoted) != Some(FORMAT) {
                return Err(format!(
                    "not an ssp audit extract (its first line does not name {FORMAT})"
                ));
            }
            self.query = field("query").and_then(json::unquoted).map(str::to_owned);
            return Ok(());
        }
        if bytes.starts_with(b"{\"link\":") {
            let link = Link::parse(bytes).ok_or("not a valid link")?;
            let (seq, prev) = self
                .head
                .ok_or("a link with no record before it: a record was dropped or moved")?;
            self.head = Some((seq + 1, link.hash(&prev)));
            return Ok(());
        }
        let p = record::parse(bytes)?;
        if let Some((seq, prev)) = self.head
            && (p.seq != seq || p.prev != prev)
        {
            return Err(format!(
                "record seq {} does not follow the record before it (seq {seq} was expected, \
                 linked to the one before): a record was dropped, changed or moved",
                p.seq
            ));
        }
        match p.seal {
            Some((epoch, mac)) => self.seal(&p, epoch, &mac),
            None => {
                self.waiting.push(p.seq);
                self.head = Some((p.seq + 1, p.h));
                Ok(())
            }
        }
    }

    fn seal(&mut self, p: &Parsed, epoch: u64, mac: &[u8; 32]) -> Result<(), String> {
        if epoch < self.cursor.epoch() {
            self.cursor = self.k0.clone();
        }
        let key = self.cursor.advance_to(epoch);
        match key {
            Some(key) if key.mac(p.seq, &p.prev, &p.ts) == *mac => self.cursor = key,
            _ => {
                return Err(format!(
                    "the seal at seq {} does not verify with the initial key: the extract is \
                     another box's or another chain's, or it was changed",
                    p.seq
                ));
            }
        }
        self.seals += 1;
        self.proven.append(&mut self.waiting);
        self.head = None;
        Ok(())
    }

    fn close(&mut self, hex_mac: &[u8]) -> Result<(), String> {
        if self.head.is_some() {
            return Err("records after the last seal: nothing proves them".into());
        }
        hex::decode32(hex_mac)
            .filter(|m| self.mac.clone().verify_slice(m).is_ok())
            .ok_or(
                "the extract's MAC does not verify with the initial key: lines were dropped, \
                 added or changed after it was made, or it was made with another key",
            )?;
        self.closed = true;
        Ok(())
    }

    /// One line for the reader, once every line checked.
    pub fn finish(self) -> Result<String, String> {
        if !self.closed {
            return Err("the extract ends without its MAC line: it is incomplete".into());
        }
        let seqs = match (self.proven.iter().min(), self.proven.iter().max()) {
            (Some(a), Some(b)) => format!(", seq {a}..{b}"),
            _ => String::new(),
        };
        let query = self.query.as_deref().unwrap_or("");
        Ok(format!(
            "intact: {} records{seqs}, each proved by the seal after it ({} seals, MACs verified \
             with the initial key); chosen by: ssp audit find {query}",
            self.proven.len(),
            self.seals
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Entry, GENESIS};

    const K0: [u8; 32] = [5; 32];
    const TS: &str = "2026-03-21T10:04:05.123Z";

    /// A chain of `n` records of many lengths, every `seal_every`th a seal made with `k0`.
    fn chain(n: u64, seal_every: u64, k0: [u8; 32]) -> Vec<(Vec<u8>, Parsed)> {
        let mut prev = GENESIS;
        let mut key = Key::new(0, k0);
        (0..n)
            .map(|seq| {
                let entry = if seq % seal_every == seal_every - 1 {
                    let e = Entry::Seal {
                        epoch: key.epoch(),
                        mac: key.mac(seq, &prev, TS),
                    };
                    key = key.next();
                    e
                } else {
                    let k = seq as usize;
                    Entry::Stop {
                        reason: "é".repeat(k % 90) + &"e".repeat(k % 3),
                    }
                };
                let line = record::line(seq, TS, &entry, &prev);
                prev = line.h;
                let bytes = line.bytes[..line.bytes.len() - 1].to_vec();
                let parsed = record::parse(&bytes).unwrap();
                (bytes, parsed)
            })
            .collect()
    }

    /// The extract's lines, the records proved and those left out.
    fn extract(chain: &[(Vec<u8>, Parsed)], found: &[u64], k0: [u8; 32]) -> (Vec<String>, u64, u64) {
        let mut builder = Builder::new(Vec::new(), &Key::new(0, k0), "--trace-id x").unwrap();
        for (line, p) in chain {
            builder.record(line, p, found.contains(&p.seq)).unwrap();
        }
        let proven = builder.proven;
        let (out, unproven) = builder.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_owned).collect(), proven, unproven)
    }

    fn check(lines: &[String], k0: [u8; 32]) -> Result<String, String> {
        let mut checker = Checker::new(Key::new(0, k0));
        for line in lines {
            checker
                .line(line.as_bytes())
                .map_err(|e| format!("line {}: {e}", checker.lines))?;
        }
        checker.finish()
    }

    #[test]
    fn a_link_gives_the_records_hash_from_the_hash_before() {
        for (line, p) in chain(300, 1000, K0) {
            assert_eq!(Link::of(&line).hash(&p.prev), p.h, "seq {}", p.seq);
            let mut text = Vec::new();
            Link::of(&line).write(&mut text);
            assert_eq!(Link::parse(&text[..text.len() - 1]), Some(Link::of(&line)));
        }
        assert_eq!(Link::parse(br#"{"link":"00","blocks":1,"tail":""}"#), None);
    }

    #[test]
    fn a_genuine_extract_proves_its_records_with_the_initial_key_alone() {
        let chain = chain(57, 10, K0);
        let (lines, proven, unproven) = extract(&chain, &[3, 4, 25, 55], K0);
        // 55 is after the last seal (49): nothing proves it yet.
        assert_eq!((proven, unproven), (3, 1));
        // Header; 3, 4, links 5..8, seal 9; 25, links 26..28, seal 29; MAC.
        assert_eq!(lines.len(), 1 + 7 + 5 + 1, "{lines:#?}");
        assert!(lines[3].starts_with("{\"link\":"));
        assert_eq!(
            check(&lines, K0),
            Ok(
                "intact: 3 records, seq 3..25, each proved by the seal after it (2 seals, MACs \
                verified with the initial key); chosen by: ssp audit find --trace-id x"
                    .into()
            )
        );
        // Nothing found: an extract of nothing.
        let (lines, ..) = extract(&chain, &[], K0);
        assert_eq!(lines.len(), 2);
        assert!(check(&lines, K0).unwrap().starts_with("intact: 0 records, each"));
    }

    #[test]
    fn a_changed_dropped_moved_or_foreign_extract_fails() {
        let chain = chain(57, 10, K0);
        let (good, ..) = extract(&chain, &[3, 4, 25], K0);
        let fails = |lines: &[String], k0: [u8; 32], expected: &str| {
            let err = check(lines, k0).unwrap_err();
            assert!(err.contains(expected), "{expected:?}: {err}");
        };
        let mut changed = good.clone();
        changed[2] = changed[2].replace("\"seq\":4,", "\"seq\":5,");
        fails(&changed, K0, "line 3: hash mismatch");
        let mut dropped = good.clone();
        dropped.remove(8);
        fails(&dropped, K0, "line 9: a link with no record before it");
        let mut dropped_first = good.clone();
        dropped_first.remove(1);
        fails(&dropped_first, K0, "the extract's MAC does not verify");
        let mut dropped_link = good.clone();
        dropped_link.remove(4);
        fails(&dropped_link, K0, "line 7: record seq 9 does not follow");
        let mut moved = good.clone();
        moved.swap(1, 2);
        fails(&moved, K0, "line 3: record seq 3 does not follow");
        let mut hidden = good.clone();
        let mut link = Vec::new();
        Link::of(&chain[4].0).write(&mut link);
        hidden[2] = String::from_utf8(link).unwrap().trim_end().to_owned();
        fails(&hidden, K0, "the extract's MAC does not verify");
        let mut requery = good.clone();
        requery[0] = requery[0].replace("--trace-id x", "--trace-id y");
        fails(&requery, K0, "the extract's MAC does not verify");
        fails(&good[..good.len() - 1], K0, "ends without its MAC line");
        fails(&good, [9; 32], "line 8: the seal at seq 9 does not verify");
        let other_chain = super::tests::chain(57, 10, [9; 32]);
        let (foreign, ..) = extract(&other_chain, &[3], [9; 32]);
        fails(&foreign, K0, "the seal at seq 9 does not verify");
        let mut after = good.clone();
        after.push(good[1].clone());
        fails(&after, K0, "a line after the extract's MAC");
    }
}
