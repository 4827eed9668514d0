//! A scenario file error: `file:line:column: field: message` (`file: message` when the error is
//! about the whole file).

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The field at fault, as a path (`scenario[2].clones`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Errors about the file as a whole (unreadable, not a regular file) have no position.
        match self.line {
            0 => write!(f, "{}: ", self.file.display())?,
            _ => write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?,
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}
