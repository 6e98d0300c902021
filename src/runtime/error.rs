use std::io;
use std::path::PathBuf;

/// Errors of the container runtime. Those about one container name its service and
/// replica (`web/2`) or its id.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what}: {message}")]
    Container { what: String, message: String },
    #[error("{what}: {action} failed")]
    Libcontainer {
        what: String,
        action: &'static str,
        #[source]
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid container configuration: {0}")]
    Config(String),
    #[error("no container {0} (see `wharf ps`)")]
    NotFound(String),
}

impl RuntimeError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| RuntimeError::Io { path, source }
    }
}
