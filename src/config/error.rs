//! `ConfigError`, and turning byte spans from the TOML parser into lines and dotted keys.

use std::cell::RefCell;
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

/// Every problem one pass over the file found, in file order: an operator fixes them all
/// before the next `ssp check`, not one per run. Shown one per line.
///
/// The second field is the configuration as it would be with a default standing in for each
/// bad value, when every section could still be read (`None` when a required key or a whole
/// entry is wrong): `ssp check` goes on to check the files it names, so that one pass also
/// finds a missing certificate. It is never put in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>, pub Option<Box<super::Config>>);

impl ConfigErrors {
    /// The problem on the earliest line.
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![error], None)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The file being loaded: its text (for lines and keys) and its name (for messages and as the
/// anchor of relative paths).
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub file: &'a Path,
    /// Byte offset where each line starts, so a line number costs a binary search: a config
    /// with thousands of consumers asks for thousands of them.
    line_starts: Vec<usize>,
    /// Problems noted so far; checking goes on past them so that one pass finds them all.
    problems: RefCell<Vec<ConfigError>>,
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
            problems: RefCell::new(Vec::new()),
        }
    }
}

impl Source<'_> {
    /// Notes a problem and carries on; `finish` reports every one noted, in file order
    /// (those without a line last): each goes in after those on its line or before.
    #[inline(never)]
    pub fn note(&self, error: ConfigError) {
        let line = |e: &ConfigError| e.line.unwrap_or(usize::MAX);
        let mut problems = self.problems.borrow_mut();
        let at = problems.partition_point(|p| line(p) <= line(&error));
        problems.insert(at, error);
    }

    /// The value of a check that may have failed; a failure is noted.
    pub fn keep<T>(&self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.note(e)).ok()
    }

    /// Every problem noted, in file order, or none.
    pub fn finish(&self) -> Vec<ConfigError> {
        self.problems.take()
    }

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
        self.error(span, key, plain_serde_message(error.message()))
    }
}

/// serde speaks of struct fields and Rust types (`expected usize`); the operator is editing
/// keys and values.
fn plain_serde_message(message: &str) -> String {
    let mut message = message.replacen("unknown field", "unknown key", 1);
    for (rust, plain) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        message = message.replace(rust, plain);
    }
    message
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
