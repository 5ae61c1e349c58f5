//! Test support: an in-memory [`LogWriter`] standing in for the replicated log, so
//! the registrar (and the HTTP API above it) can be driven without a log. Built
//! for this crate's unit tests and, through the `test-support` feature, for the
//! fuzz crate; never part of a master.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::watch;

use super::{AppendError, BoxFuture, CorruptEntry, LogWriter, Registrar, RegistrarConfig, Shared};
use crate::master::metrics::Metrics;

/// An in-memory log: it learns appends
/// in call order (at once, or when released after [`MemoryLog::hold`]) and hands
/// them to the attached registrar, as the driver does. Failures can be injected.
pub struct MemoryLog {
    inner: Mutex<MemoryInner>,
    /// Serializes delivery, so entries reach the registrar in position order.
    delivery: tokio::sync::Mutex<()>,
    held: watch::Sender<bool>,
    registrar: Mutex<Weak<Shared>>,
}

/// What an injected failure does to the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectedFailure {
    /// The append fails and the entry is not chosen.
    Lost(AppendError),
    /// The append reports `Unknown` but the entry is chosen after all.
    UnknownButChosen,
}

#[derive(Default)]
struct MemoryInner {
    next_position: u64,
    /// Chosen entries still held (from the truncation point on).
    entries: BTreeMap<u64, Vec<u8>>,
    /// Positions whose fate is decided: `Some` chosen, `None` skipped.
    decided: BTreeMap<u64, Option<Vec<u8>>>,
    delivered_up_to: u64,
    failures: VecDeque<InjectedFailure>,
    appends: u64,
    truncations: Vec<u64>,
}

impl fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLog").finish_non_exhaustive()
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLog {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(MemoryInner {
                next_position: 1,
                delivered_up_to: 0,
                ..MemoryInner::default()
            }),
            delivery: tokio::sync::Mutex::new(()),
            held: watch::Sender::new(false),
            registrar: Mutex::new(Weak::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers learned entries to `registrar` from now on.
    pub fn attach(&self, registrar: &Registrar) {
        *self
            .registrar
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&registrar.shared);
    }

    /// Appends wait (unlearned) until [`MemoryLog::release`].
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// The next append fails this way.
    pub fn inject(&self, failure: InjectedFailure) {
        self.lock().failures.push_back(failure);
    }

    /// Appends started so far.
    pub fn appends(&self) -> u64 {
        self.lock().appends
    }

    /// Truncation points proposed so far.
    pub fn truncations(&self) -> Vec<u64> {
        self.lock().truncations.clone()
    }

    /// The chosen entries still held, in position order, as a driver would re-deliver
    /// them after a restart.
    pub fn entries(&self) -> Vec<(u64, Vec<u8>)> {
        self.lock()
            .entries
            .iter()
            .map(|(position, bytes)| (*position, bytes.clone()))
            .collect()
    }

    /// Feeds every held entry to `registrar`, as a restarted member's driver does.
    pub fn replay_into(&self, registrar: &Registrar) -> Result<(), CorruptEntry> {
        for (position, bytes) in self.entries() {
            registrar.apply_learned(position, &bytes)?;
        }
        Ok(())
    }

    async fn deliver(&self) {
        let _delivering = self.delivery.lock().await;
        let ready: Vec<(u64, Vec<u8>)> = {
            let mut inner = self.lock();
            let mut ready = Vec::new();
            loop {
                let next = inner.delivered_up_to + 1;
                let Some(decided) = inner.decided.remove(&next) else {
                    break;
                };
                inner.delivered_up_to = next;
                if let Some(bytes) = decided {
                    ready.push((next, bytes));
                }
            }
            ready
        };
        let registrar = self
            .registrar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade();
        if let Some(shared) = registrar {
            let registrar = Registrar { shared };
            for (position, bytes) in ready {
                if let Err(err) = registrar.apply_learned(position, &bytes) {
                    tracing::error!(error = %err, "memory log delivered a corrupt entry");
                }
            }
        }
    }
}

impl LogWriter for Arc<MemoryLog> {
    fn append(&self, bytes: Vec<u8>) -> BoxFuture<Result<u64, AppendError>> {
        let (position, failure) = {
            let mut inner = self.lock();
            let position = inner.next_position;
            inner.next_position += 1;
            inner.appends += 1;
            (position, inner.failures.pop_front())
        };
        let log = Arc::clone(self);
        Box::pin(async move {
            let mut held = log.held.subscribe();
            // The sender lives as long as `log`: waiting cannot fail.
            let _ = held.wait_for(|held| !*held).await;
            let (chosen, result) = match failure {
                None => (true, Ok(position)),
                Some(InjectedFailure::Lost(err)) => (false, Err(err)),
                Some(InjectedFailure::UnknownButChosen) => (true, Err(AppendError::Unknown)),
            };
            {
                let mut inner = log.lock();
                if chosen {
                    inner.entries.insert(position, bytes.clone());
                    inner.decided.insert(position, Some(bytes));
                } else {
                    inner.decided.insert(position, None);
                }
            }
            log.deliver().await;
            result
        })
    }

    fn truncate(&self, to: u64) -> BoxFuture<Result<u64, AppendError>> {
        let mut inner = self.lock();
        inner.truncations.push(to);
        inner.entries = inner.entries.split_off(&to);
        Box::pin(std::future::ready(Ok(to)))
    }
}

/// A registrar over a fresh [`MemoryLog`], attached and ready.
pub fn memory_registrar(
    config: RegistrarConfig,
    metrics: Arc<Metrics>,
) -> (Registrar, Arc<MemoryLog>) {
    let log = Arc::new(MemoryLog::new());
    let registrar = Registrar::new(config, Arc::new(Arc::clone(&log)), metrics);
    log.attach(&registrar);
    (registrar, log)
}
