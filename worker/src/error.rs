//! Why a job failed, and whether trying again can help. Classified by the
//! error's kind (status code, I/O kind), never by matching message text.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The request cannot be carried out as asked; retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// A command inside the server failed (its daemon may be starting).
    #[error("inside the server: {0}")]
    Inner(String),
    /// The job's deadline passed; the api fails it, so it must not act.
    #[error("deadline exceeded: {0}")]
    Deadline(&'static str),
}

impl OpError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OpError {
        let path = path.into();
        move |source| OpError::Io { action, path, source }
    }

    /// True when retrying the job cannot help: an invalid spec, a missing
    /// image, a name clash with a container that is not ours, a refusal.
    pub fn is_permanent(&self) -> bool {
        use bollard::errors::Error as E;
        match self {
            OpError::Refused(_) | OpError::Deadline(_) => true,
            OpError::Inner(_) => false,
            // 4xx: the engine understood and said no (404 no such image,
            // 400 invalid spec, 409 conflict). 5xx: the engine failed.
            OpError::Docker(E::DockerResponseServerError { status_code, .. }) => {
                (400..500).contains(status_code) && *status_code != 408 && *status_code != 429
            }
            OpError::Docker(E::JsonDataError { .. } | E::JsonSerdeError { .. }) => false,
            // Connection refused or reset, timeouts, a socket that is gone.
            OpError::Docker(_) => false,
            OpError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::ReadOnlyFilesystem
            ),
        }
    }
}

/// The engine's status code, if the error is an answer from the engine.
pub fn docker_status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(status_code: u16) -> OpError {
        OpError::Docker(bollard::errors::Error::DockerResponseServerError { status_code, message: "x".into() })
    }

    #[test]
    fn engine_answers_are_classified_by_status() {
        assert!(engine(404).is_permanent());
        assert!(engine(400).is_permanent());
        assert!(!engine(500).is_permanent());
        assert!(!engine(503).is_permanent());
        assert!(!OpError::Docker(bollard::errors::Error::RequestTimeoutError).is_permanent());
        assert!(OpError::Refused("no".into()).is_permanent());
    }
}
