//! The Kubernetes front end's one error type.

use crate::operator::kubernetes::resources::ResourceError;

/// The operator's errors; each says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
}

impl Error {
    /// The label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Resource(_) => "resource",
            Error::Finalizer(_) => "finalizer",
            Error::Random(_) => "random",
        }
    }

    pub(crate) fn is_conflict(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(response)) => response.code == 409,
            Error::Finalizer(inner) => matches!(
                inner.as_ref(),
                kube::runtime::finalizer::Error::ApplyFailed(error)
                    | kube::runtime::finalizer::Error::CleanupFailed(error)
                    if error.is_conflict()
            ),
            _ => false,
        }
    }
}
