use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::yaml::Mark;

/// An error in a manifest, addressed the way editors and CI logs expect:
/// `services/web.yaml:7:3: resources.memory: invalid quantity "12Q" (...)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// Absent when the problem is with the file as a whole (unreadable, not UTF-8 at
    /// an unknown place).
    #[serde(flatten)]
    pub mark: Option<Mark>,
    /// Field path such as `volumes[2].target`; empty for the document as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(mark) = self.mark {
            write!(f, ":{mark}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}
