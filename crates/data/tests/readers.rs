//! The dataset readers: real files read right, bad files are errors naming the file and offset.

use skipgrad_data::{Error, cifar10, fashion_mnist, parse_cifar, parse_idx, read_cifar_file, read_idx};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first 20 records of CIFAR-10's test batch (`shared/data/cifar10-sample`), kept beside the
/// tests so a fresh clone has them.
fn cifar_sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar10_test_first20.bin")
}

#[test]
fn the_cifar_sample_reads_with_its_labels() {
    let d = read_cifar_file(&cifar_sample()).unwrap();
    assert_eq!((d.len(), d.shape, d.classes), (20, [3, 32, 32], 10));
    assert_eq!(d.labels, [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]);
    let bytes = std::fs::read(cifar_sample()).unwrap();
    assert_eq!(d.image(1), &bytes[3073 + 1..2 * 3073], "image 1 is record 1 without its label");
}

#[test]
fn bad_cifar_files_name_the_file_and_offset() {
    let bytes = std::fs::read(cifar_sample()).unwrap();
    for cut in [1, 3072, 3074, 5 * 3073 + 100] {
        let err = parse_cifar("batch.bin", &bytes[..cut]).unwrap_err();
        let Error::Corrupt { path, offset, message } = &err else { panic!("{err}") };
        assert_eq!((path.as_str(), *offset), ("batch.bin", cut / 3073 * 3073), "{err}");
        assert!(message.contains("cut short"), "{err}");
    }
    let mut bad = bytes.clone();
    bad[2 * 3073] = 12;
    let err = parse_cifar("batch.bin", &bad).unwrap_err().to_string();
    assert!(err.contains("at byte 6146") && err.contains("label 12"), "{err}");
    let dir = std::env::temp_dir().join(format!("skipgrad-no-cifar-{}", std::process::id()));
    let err = cifar10(&dir).unwrap_err().to_string();
    assert!(err.contains("data_batch_1.bin") && err.contains("--data"), "{err}");
}

/// An IDX file of `dims` with elements `0, 1, 2, ...`.
fn idx(dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    out.extend((0..n).map(|i| i as u8));
    out
}

#[test]
fn idx_files_parse_and_bad_ones_name_the_offset() {
    let ok = parse_idx("x", &idx(&[2, 3, 4])).unwrap();
    assert_eq!((ok.dims.clone(), ok.data.len(), ok.data[23]), (vec![2, 3, 4], 24, 23));
    let full = idx(&[2, 3, 4]);
    for (bytes, offset, says) in [
        (full[..3].to_vec(), 3, "magic"),
        (full[..10].to_vec(), 10, "sizes"),
        (full[..30].to_vec(), 30, "need 24 bytes"),
        ([&[1u8, 0, 8, 1][..], &[0, 0, 0, 1, 7]].concat(), 0, "not an IDX"),
        ([&[0u8, 0, 0x0d, 1][..], &[0, 0, 0, 1, 7]].concat(), 2, "element type"),
    ] {
        let err = parse_idx("f.idx", &bytes).unwrap_err();
        let Error::Corrupt { offset: at, message, .. } = &err else { panic!("{err}") };
        assert!(*at == offset && message.contains(says), "{err}");
    }
    // gzip: compressed files read; a damaged stream is an error, not a panic.
    let dir = std::env::temp_dir().join(format!("skipgrad-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&full).unwrap();
    let compressed = gz.finish().unwrap();
    std::fs::write(&path, &compressed).unwrap();
    assert_eq!(read_idx(&path).unwrap(), ok);
    std::fs::write(&path, &compressed[..compressed.len() / 2]).unwrap();
    let err = read_idx(&path).unwrap_err().to_string();
    assert!(err.contains("a.gz") && err.contains("gzip"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_fashion_mnist_says_how_to_get_it() {
    let dir = std::env::temp_dir().join(format!("skipgrad-no-fashion-{}", std::process::id()));
    let err = fashion_mnist(Some(&dir)).unwrap_err().to_string();
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("apt-get install dataset-fashion-mnist"),
        "{err}"
    );
}

/// Debian's Fashion-MNIST, which CI installs (`.ci/run`); elsewhere the test says it skipped.
#[test]
fn fashion_mnist_reads_when_installed() {
    let (train, test) = match fashion_mnist(None) {
        Ok(d) => d,
        Err(Error::Missing { .. }) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!((train.len(), test.len(), train.shape), (60_000, 10_000, [1, 28, 28]));
    let mut counts = [0usize; 10];
    train.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [6_000; 10], "Fashion-MNIST's training classes are balanced");
    let mean = train.mean_image();
    assert!(mean.iter().all(|m| (0.0..=1.0).contains(m)) && mean.iter().sum::<f32>() / 784.0 > 0.2);
}
