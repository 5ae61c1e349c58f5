//! The registrar's [`LogWriter`] on the running log driver.

use std::time::Duration;

use crate::log::driver::{AppendError as LogAppendError, LogHandle};
use crate::log::Action;

use super::registrar::{AppendError, BoxFuture, LogWriter};

/// A registry write not learned by then is reported as of unknown outcome (it may
/// still be chosen once a quorum answers), so clients are never held forever.
pub const REGISTRY_APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends registry entries through this member's coordinator.
pub struct DriverLogWriter {
    log: LogHandle,
}

impl DriverLogWriter {
    pub fn new(log: LogHandle) -> Self {
        DriverLogWriter { log }
    }

    fn submit(&self, action: Action) -> BoxFuture<Result<u64, AppendError>> {
        // Queued synchronously: the registrar calls in the order its entries must
        // take in the log.
        let outcome = self.log.submit_now(action);
        Box::pin(async move {
            match tokio::time::timeout(REGISTRY_APPEND_TIMEOUT, outcome).await {
                Ok(Ok(position)) => Ok(position),
                Ok(Err(error)) => Err(translate(error)),
                Err(_) => Err(AppendError::Unknown),
            }
        })
    }
}

fn translate(error: LogAppendError) -> AppendError {
    match error {
        LogAppendError::NotLeader { leader } => AppendError::NotLeader {
            leader: leader.map(|member| member.0),
        },
        LogAppendError::Unknown => AppendError::Unknown,
        LogAppendError::Busy => AppendError::Unavailable("the log's queue is full".into()),
        LogAppendError::Stopped => AppendError::Unavailable("the log has stopped".into()),
    }
}

impl LogWriter for DriverLogWriter {
    fn append(&self, bytes: Vec<u8>) -> BoxFuture<Result<u64, AppendError>> {
        self.submit(Action::Append(bytes.into()))
    }

    fn truncate(&self, to: u64) -> BoxFuture<Result<u64, AppendError>> {
        self.submit(Action::Truncate { to })
    }
}
