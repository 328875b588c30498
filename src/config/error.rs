//! `ConfigError`, and turning byte spans from the TOML parser into lines and dotted keys.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A configuration problem, located as precisely as the file allows.
///
/// Shown as `FILE:LINE: `key`: message`, the form `ssp check` prints (SPEC §2); `line` and
/// `key` are left out when unknown, e.g. for an unreadable file or a missing `[[consumer]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as given.
    pub file: PathBuf,
    /// 1-based line of the offending key or value, or of the table header for a missing key.
    pub line: Option<usize>,
    /// Dotted key such as `server.certificate` or `consumer[2].asid`; indexes count from 1,
    /// as an operator counts `[[consumer]]` blocks.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The file being loaded: its text (for lines and keys) and its name (for messages and as the
/// anchor of relative paths).
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub file: &'a Path,
    /// Byte offset where each line starts, so a line number costs a binary search: a config
    /// with thousands of consumers asks for thousands of them.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str, file: &'a Path) -> Source<'a> {
        let line_starts = std::iter::once(0)
            .chain(
                text.bytes()
                    .enumerate()
                    .filter(|&(_, b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        Source {
            text,
            file,
            line_starts,
        }
    }
}

impl Source<'_> {
    /// The one place a `ConfigError` is made from a position in the text.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|span| self.line(span.start)),
            key,
            message: message.into(),
        }
    }

    /// An error without a position, such as an unreadable file.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
        }
    }

    /// 1-based line holding byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        // The number of lines starting at or before `offset` is the 1-based line number.
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// A path from the file, resolved against the file's folder unless absolute.
    pub fn path(&self, value: String) -> Result<PathBuf, String> {
        if value.is_empty() {
            return Err("a path must not be empty".to_string());
        }
        Ok(self.resolve(&value))
    }

    pub fn resolve(&self, value: &str) -> PathBuf {
        let folder = self.file.parent().unwrap_or(Path::new(""));
        // `join` keeps an absolute `value` as it is.
        folder.join(value)
    }

    /// Locates a syntax, type or unknown-key error reported by `toml`.
    pub fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let span = error.span();
        let key = span.as_ref().and_then(|span| key_at(self.text, span.start));
        // serde speaks of struct fields; the operator is editing keys.
        let message = error.message().replacen("unknown field", "unknown key", 1);
        self.error(span, key, message)
    }
}

/// The dotted key whose name or value covers byte `offset`, found by walking a spanned parse
/// of the document. `toml` tracks the key internally but does not expose it, nor array indexes.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let document = DeTable::parse(text).ok()?;
    find_in_table(document.get_ref(), offset, None)
}

fn find_in_table(table: &DeTable<'_>, offset: usize, prefix: Option<&str>) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let path = match prefix {
            Some(prefix) => format!("{prefix}.{}", key.get_ref()),
            None => key.get_ref().to_string(),
        };
        find_in_value(value, offset, &path).or_else(|| key.span().contains(&offset).then_some(path))
    })
}

/// Looks inside first: a `[server]` header's span covers only the header, not its keys.
fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
    let inside = match value.get_ref() {
        DeValue::Table(table) => find_in_table(table, offset, Some(path)),
        DeValue::Array(array) => array
            .iter()
            .enumerate()
            .find_map(|(i, element)| find_in_value(element, offset, &format!("{path}[{}]", i + 1))),
        _ => None,
    };
    inside.or_else(|| value.span().contains(&offset).then(|| path.to_string()))
}
