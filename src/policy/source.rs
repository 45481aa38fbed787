//! Reading policy files: the TOML schema of `policy/*.toml` and errors that
//! name file, line and key, so an administrator can fix a typo in one look.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// One `[[ban]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanEntry {
    pub app: Spanned<String>,
    pub domains: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub user_agents: Vec<Spanned<String>>,
    /// Hosts other sites embed (pixels, image CDNs): blocked and recorded,
    /// never a reason to flag a device.
    #[serde(default)]
    pub embedded: Vec<Spanned<String>>,
    pub advice: Spanned<String>,
    pub reference: String,
    pub since: Spanned<String>,
}

/// One `[[exemption]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExemptionEntry {
    pub who: Spanned<Vec<Spanned<String>>>,
    pub apps: Spanned<Vec<Spanned<String>>>,
    pub reason: Spanned<String>,
    pub until: Spanned<String>,
}

/// A whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    #[serde(default)]
    pub ban: Vec<BanEntry>,
    #[serde(default)]
    pub exemption: Vec<ExemptionEntry>,
}

/// What is wrong with the policy, and exactly where.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {key}: {message}", file.display())]
    Invalid { file: PathBuf, line: usize, key: String, message: String },
    #[error("{}: no policy files (*.toml) found: nothing would be blocked", dir.display())]
    NoFiles { dir: PathBuf },
}

/// Every error found in one pass, so `policy check` reports them all at once.
#[derive(Debug)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// A file's text with its name, for turning byte spans into line numbers.
/// The newline offsets are found once, so that naming the line of each of a
/// million domains stays linear in the file size.
pub(crate) struct SourceText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    newlines: Vec<usize>,
}

impl<'a> SourceText<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let newlines = text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i).collect();
        SourceText { path, text, newlines }
    }

    /// The 1-based line that holds byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }

    pub fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            file: self.path.to_path_buf(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Parses the file; a TOML or schema error is reported at its span with
    /// the key found there (for an unknown key, the key itself).
    pub fn parse(&self) -> Result<PolicyFile, PolicyError> {
        toml::from_str(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = self
                .text
                .get(span.clone())
                .map(|s| s.trim().chars().take(60).collect::<String>())
                .filter(|s| !s.is_empty() && !s.contains('\n'))
                .unwrap_or_else(|| "-".to_string());
            self.error(span, &key, e.message().to_string())
        })
    }
}
