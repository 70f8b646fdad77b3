//! Errors of reading datasets: each names the file, and for bad contents the byte offset.

/// An error reading or preparing a dataset.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A dataset file is not there.
    #[error("{path}: not found; {hint}")]
    Missing {
        /// The file looked for.
        path: String,
        /// How to get it.
        hint: String,
    },
    /// A file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        message: String,
    },
    /// A file's contents are not what its format says (truncated, corrupt, another format).
    #[error("{path}: at byte {offset}: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// Where the problem is, in the (decompressed) contents.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A setting the data cannot satisfy (a batch larger than the dataset, a split larger than it).
    #[error("{0}")]
    Argument(String),
}
