//! CIFAR-10's binary format: records of one label byte and 3,072 pixel bytes (1,024 red, 1,024
//! green, 1,024 blue, each a row-major 32x32 plane), `data_batch_1.bin` .. `data_batch_5.bin` for
//! training and `test_batch.bin` for testing.

use crate::dataset::Dataset;
use crate::{Error, Result};
use std::path::Path;

/// Bytes of one record.
const RECORD: usize = 1 + 3 * 32 * 32;

/// The images and labels of one CIFAR-10 binary file.
pub fn read_cifar_file(path: &Path) -> Result<Dataset> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            path: name.clone(),
            hint: "CIFAR-10 cannot be downloaded here: point --data at a directory with the binary version's data_batch_1.bin .. data_batch_5.bin and test_batch.bin".into(),
        },
        _ => Error::Io { path: name.clone(), message: e.to_string() },
    })?;
    parse_cifar(&name, &bytes)
}

/// Parses CIFAR-10 records from `bytes` (the contents of the file called `name`).
pub fn parse_cifar(name: &str, bytes: &[u8]) -> Result<Dataset> {
    let corrupt = |offset: usize, message: String| Error::Corrupt { path: name.to_string(), offset, message };
    if !bytes.len().is_multiple_of(RECORD) {
        let whole = bytes.len() / RECORD;
        let message = format!("record {whole} is cut short: {} of its {RECORD} bytes", bytes.len() % RECORD);
        return Err(corrupt(whole * RECORD, message));
    }
    let n = bytes.len() / RECORD;
    let mut images = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] >= 10 {
            return Err(corrupt(i * RECORD, format!("record {i} has label {}, not a class 0..10", record[0])));
        }
        labels.push(record[0]);
        images.extend_from_slice(&record[1..]);
    }
    Ok(Dataset { images, labels, shape: [3, 32, 32], classes: 10 })
}

/// CIFAR-10's training (the five data batches, in order) and test splits from `dir`.
pub fn cifar10(dir: &Path) -> Result<(Dataset, Dataset)> {
    let mut train = read_cifar_file(&dir.join("data_batch_1.bin"))?;
    for k in 2..=5 {
        let more = read_cifar_file(&dir.join(format!("data_batch_{k}.bin")))?;
        train.images.extend(more.images);
        train.labels.extend(more.labels);
    }
    Ok((train, read_cifar_file(&dir.join("test_batch.bin"))?))
}
