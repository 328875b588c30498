//! Seal keys: forward-secure MACs over the chain head (SPEC section 5).
//!
//! - `k[n+1] = SHA-256("ssp-audit-key-v1" || k[n])`: one way, so the box only ever holds the
//!   key of the next seal and cannot recompute an earlier one.
//! - a seal with seq `s`, timestamp `ts` and `prev` = the hash of record `s - 1` carries
//!   `mac = HMAC-SHA-256(k[epoch], "ssp-audit-seal-v1" || s as 8 bytes big-endian || prev (32
//!   bytes) || ts)`. The hash chain makes that cover every record before it.
//! - the key file is one line, `ssp-audit-key-v1 <epoch> <64 hex>`; the initial key (epoch 0)
//!   is what the auditor keeps and gives to `verify`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{AuditError, files, hex};
use crate::durable_file;

const KEY_LABEL: &[u8] = b"ssp-audit-key-v1";
const SEAL_LABEL: &[u8] = b"ssp-audit-seal-v1";

/// The key of one epoch. Zeroed when dropped, so an evolved key does not linger in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    epoch: u64,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key {{ epoch: {}, .. }}", self.epoch)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.fill(0);
        // Keeps the zeroing from being optimised away as a dead store.
        std::hint::black_box(&self.bytes);
    }
}

/// The most key evolutions `advance_to` will compute.
const MAX_EPOCH_STEPS: u64 = 1 << 25;

impl Key {
    pub fn new(epoch: u64, bytes: [u8; 32]) -> Key {
        Key { epoch, bytes }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The key of the next epoch.
    pub fn next(&self) -> Key {
        let bytes = Sha256::new()
            .chain_update(KEY_LABEL)
            .chain_update(self.bytes)
            .finalize()
            .into();
        Key {
            epoch: self.epoch + 1,
            bytes,
        }
    }

    /// Evolves this key forward to `epoch` (which must not be earlier than its own).
    pub fn advance_to(&self, epoch: u64) -> Option<Key> {
        // A seal a minute for fifty years is under 27 million epochs; a claim beyond that is
        // a forged record, not a key to spend hours deriving.
        if epoch.checked_sub(self.epoch)? > MAX_EPOCH_STEPS {
            return None;
        }
        let mut key = self.clone();
        while key.epoch < epoch {
            key = key.next();
        }
        Some(key)
    }

    /// The MAC of the seal that is record `seq`, made at `ts`, over the chain head `prev`.
    pub fn mac(&self, seq: u64, prev: &[u8; 32], ts: &str) -> [u8; 32] {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.bytes).expect("any HMAC key length");
        mac.update(SEAL_LABEL);
        mac.update(&seq.to_be_bytes());
        mac.update(prev);
        mac.update(ts.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn to_file_text(&self) -> String {
        format!("ssp-audit-key-v1 {} {}\n", self.epoch, hex::encode(&self.bytes))
    }

    /// Reads a key file, or a bare 64-hex key (taken as epoch 0), as the auditor may keep it.
    pub fn parse(text: &str) -> Result<Key, String> {
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let (epoch, key) = match words.as_slice() {
            [key] => (0, *key),
            ["ssp-audit-key-v1", epoch, key] => (epoch.parse().map_err(|_| "epoch is not a number")?, *key),
            _ => return Err("not an audit key (expected `ssp-audit-key-v1 <epoch> <64 hex>`)".into()),
        };
        let bytes = hex::decode32(key.as_bytes()).ok_or("the key is not 64 lowercase hex digits")?;
        Ok(Key { epoch, bytes })
    }
}

/// Reads the evolving key the writer starts from (and `ssp check` reads it too, so that a
/// key that is missing or damaged is found before a start). The message names the file as
/// the audit key and says how one is made.
pub fn load(path: &Path) -> Result<Key, AuditError> {
    let unusable = |why: String| AuditError::new(path, format!("the audit key ([audit] key) {why}"));
    let mut text = String::new();
    let mut file = crate::regular_file::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => unusable(format!(
            "does not exist: make it once with `ssp audit keygen --out {}` (as the user ssp runs \
             as) and give the initial key it prints to the auditor, or set `sealed = false` in \
             [audit] to run without seals",
            path.display()
        )),
        _ => unusable(format!("cannot be read: {e}")),
    })?;
    file.read_to_string(&mut text)
        .map_err(|e| unusable(format!("cannot be read: {e}")))?;
    let key = Key::parse(&text).map_err(|m| unusable(format!("is not usable: {m}")))?;
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "{}: audit key is readable by group or others; it should be mode 0600",
            path.display()
        );
    }
    Ok(key)
}

/// Writes a new key file; refuses to replace an existing one (`ssp audit keygen`).
pub fn create(path: &Path, key: &Key) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key.to_file_text().as_bytes())?;
    file.sync_all()?;
    files::sync_dir(durable_file::folder_of(path))
}

/// Replaces the key file atomically: the old key is gone from the file system (though not
/// necessarily from the disk blocks, which no file system API can promise) once this returns.
pub fn store(path: &Path, key: &Key) -> io::Result<()> {
    durable_file::replace(path, key.to_file_text().as_bytes(), 0o600)
}

/// Bytes from the kernel's random source, for keys and boot ids.
pub fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_evolve_one_way_by_the_documented_construction() {
        let k0 = Key::new(0, [9; 32]);
        let k1 = k0.next();
        let mut expected = Vec::from(KEY_LABEL);
        expected.extend_from_slice(&[9; 32]);
        let expected: [u8; 32] = Sha256::digest(&expected).into();
        assert_eq!((k1.epoch(), *k1.bytes()), (1, expected));
        assert_eq!(k0.advance_to(3), Some(k1.next().next()));
        assert_eq!(k1.advance_to(0), None);
    }

    #[test]
    fn mac_binds_seq_prev_timestamp_and_key() {
        let key = Key::new(0, [1; 32]);
        let mac = key.mac(5, &[2; 32], "t");
        assert_eq!(mac, key.mac(5, &[2; 32], "t"));
        assert_ne!(mac, key.mac(6, &[2; 32], "t"));
        assert_ne!(mac, key.mac(5, &[3; 32], "t"));
        assert_ne!(mac, key.mac(5, &[2; 32], "u"));
        assert_ne!(mac, key.next().mac(5, &[2; 32], "t"));
    }

    #[test]
    fn key_text_round_trips_and_a_bare_key_is_epoch_zero() {
        let key = Key::new(12, [0xab; 32]);
        assert_eq!(Key::parse(&key.to_file_text()), Ok(key));
        let bare = Key::parse(&format!("{}\n", "cd".repeat(32))).unwrap();
        assert_eq!((bare.epoch(), *bare.bytes()), (0, [0xcd; 32]));
        assert!(Key::parse("").is_err());
        assert!(Key::parse("ssp-audit-key-v1 x 00").is_err());
        assert!(Key::parse(&format!("ssp-audit-key-v1 1 {}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        assert_eq!(format!("{:?}", Key::new(3, [0xee; 32])), "Key { epoch: 3, .. }");
    }
}
