//! The IDX format of (Fashion-)MNIST, gzip-compressed or not: a magic number (two zero bytes, the
//! element type `0x08` for unsigned bytes, the number of dimensions), big-endian `u32` sizes, then
//! the elements.

use crate::dataset::Dataset;
use crate::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    /// Sizes, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzip-compressed when it starts with the gzip magic).
pub fn read_idx(path: &Path) -> Result<Idx> {
    let name = path.display().to_string();
    let raw = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing { path: name.clone(), hint: "no such file".into() },
        _ => Error::Io { path: name.clone(), message: e.to_string() },
    })?;
    decode_idx(&name, &raw)
}

/// The most bytes an IDX file may decompress to (Fashion-MNIST's largest is 47 MB): a larger
/// one is rejected rather than filling memory.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Parses the contents of the IDX file called `name`, decompressing them first when they start
/// with the gzip magic.
pub fn decode_idx(name: &str, raw: &[u8]) -> Result<Idx> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return parse_idx(name, raw);
    }
    let mut out = Vec::new();
    GzDecoder::new(raw).take(MAX_IDX_BYTES + 1).read_to_end(&mut out).map_err(|e| Error::Corrupt {
        path: name.to_string(),
        offset: out.len(),
        message: format!("gzip (offset in the decompressed data): {e}"),
    })?;
    if out.len() as u64 > MAX_IDX_BYTES {
        let message = format!("decompresses to more than {MAX_IDX_BYTES} bytes, more than any IDX dataset");
        return Err(Error::Corrupt { path: name.to_string(), offset: 0, message });
    }
    parse_idx(name, &out)
}

/// Parses IDX `bytes` (already decompressed) from the file called `name`.
pub fn parse_idx(name: &str, bytes: &[u8]) -> Result<Idx> {
    let corrupt = |offset: usize, message: String| Error::Corrupt { path: name.to_string(), offset, message };
    if bytes.len() < 4 {
        return Err(corrupt(bytes.len(), "the file ends inside the 4-byte magic number".into()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(corrupt(
            0,
            format!("magic {:02x} {:02x}, not an IDX file (which starts 00 00)", bytes[0], bytes[1]),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(corrupt(
            2,
            format!("element type 0x{:02x}; images and labels are unsigned bytes (0x08)", bytes[2]),
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(corrupt(bytes.len(), format!("the file ends inside the sizes of {rank} dimensions")));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|k| u32::from_be_bytes(bytes[4 + 4 * k..8 + 4 * k].try_into().expect("4 bytes")) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| corrupt(4, format!("sizes {dims:?} overflow")))?;
    let data = &bytes[header..];
    if data.len() != count {
        let offset = header + data.len().min(count);
        let message = format!("sizes {dims:?} need {count} bytes of elements, the file has {}", data.len());
        return Err(corrupt(offset, message));
    }
    Ok(Idx { dims, data: data.to_vec() })
}

/// The Fashion-MNIST split `prefix` (`train` or `t10k`) in `dir`.
fn fashion_split(dir: &Path, prefix: &str) -> Result<Dataset> {
    let file = |kind: &str| -> PathBuf { dir.join(format!("{prefix}-{kind}-ubyte.gz")) };
    let read = |path: PathBuf| {
        read_idx(&path).map_err(|e| match e {
            Error::Missing { path, .. } => Error::Missing {
                path,
                hint: format!(
                    "Fashion-MNIST is Debian's `apt-get install dataset-fashion-mnist` (files in {FASHION_MNIST_DIR}), or give the directory holding {prefix}-images-idx3-ubyte.gz"
                ),
            },
            other => other,
        })
    };
    let (images_path, labels_path) = (file("images-idx3"), file("labels-idx1"));
    let (images, labels) = (read(images_path.clone())?, read(labels_path.clone())?);
    let bad = |path: &Path, message: String| Error::Corrupt { path: path.display().to_string(), offset: 0, message };
    let [n, h, w] = images.dims[..] else {
        return Err(bad(
            &images_path,
            format!("images have {} dimensions, not 3 (count, rows, columns)", images.dims.len()),
        ));
    };
    if labels.dims != [n] {
        return Err(bad(&labels_path, format!("{:?} labels for {n} images", labels.dims)));
    }
    if let Some(at) = labels.data.iter().position(|&l| l >= 10) {
        let message = format!("label {} of image {at} is not a class 0..10", labels.data[at]);
        return Err(Error::Corrupt { path: labels_path.display().to_string(), offset: 8 + at, message });
    }
    Ok(Dataset { images: images.data, labels: labels.data, shape: [1, h, w], classes: 10 })
}

/// Fashion-MNIST's training (60,000) and test (10,000) splits from `dir` (default: Debian's
/// [`FASHION_MNIST_DIR`]).
pub fn fashion_mnist(dir: Option<&Path>) -> Result<(Dataset, Dataset)> {
    let dir = dir.unwrap_or(Path::new(FASHION_MNIST_DIR));
    Ok((fashion_split(dir, "train")?, fashion_split(dir, "t10k")?))
}
