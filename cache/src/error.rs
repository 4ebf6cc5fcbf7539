//! Error types: [`StoreError`] for opening and flushing the store,
//! [`ComputeError`] for what a failed or panicked computation hands its
//! callers.

/// Why the caller's computation produced no value.
///
/// Every caller waiting on the same computation receives an equal copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError<E> {
    /// The computation returned this error. It was not stored; the next call
    /// for the key computes again.
    #[error("{0}")]
    Failed(E),
    /// The computation panicked (or its task was cancelled, e.g. by runtime
    /// shutdown) before producing a result.
    #[error("the computation panicked")]
    Panicked,
}

/// Failure to open, flush or close the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption of its own files, ...).
    #[error("disk tier (sled): {0}")]
    Sled(#[from] sled::Error),
    /// A filesystem operation of this crate failed.
    #[error("disk tier I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking task running sled panicked or was cancelled.
    #[error("disk tier task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The background disk writer thread is gone (it panicked or the runtime
    /// is shutting down), so the request could not be carried out.
    #[error("the disk writer thread has stopped")]
    WriterStopped,
    /// The configuration cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),
}
