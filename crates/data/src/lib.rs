//! Datasets for skipgrad's experiments: Fashion-MNIST from Debian's IDX files ([`fashion_mnist`])
//! and CIFAR-10 from its binary files ([`cifar10`]), a seeded validation split, the per-pixel
//! mean, and a [`Loader`] that shuffles, augments (pad 4, random crop, random flip) and subtracts
//! the mean on a background thread. Bad files are errors naming the file and the byte offset.

mod cifar;
mod dataset;
mod error;
mod idx;
mod loader;

pub use cifar::{cifar10, parse_cifar, read_cifar_file};
pub use dataset::Dataset;
pub use error::Error;
pub use idx::{FASHION_MNIST_DIR, Idx, MAX_IDX_BYTES, decode_idx, fashion_mnist, parse_idx, read_idx};
pub use loader::{Batch, Loader, LoaderConfig, Position, in_order};

/// Result type of the data crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
