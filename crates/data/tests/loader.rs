//! The loader: deterministic, resumable from any position, augmentation as the paper does it,
//! evaluation batches in order with the last one padded.

use skipgrad_data::{Batch, Dataset, Loader, LoaderConfig, Position, in_order};
use std::sync::Arc;

/// `n` images of `[c, h, w]`, every pixel different, labels `i % 10`.
fn dataset(n: usize, shape: [usize; 3]) -> Dataset {
    let len: usize = shape.iter().product();
    let images = (0..n * len).map(|i| ((i * 37 + i / len) % 251) as u8).collect();
    Dataset { images, labels: (0..n).map(|i| (i % 10) as u8).collect(), shape, classes: 10 }
}

fn take(loader: &mut Loader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| loader.next_batch()).collect()
}

#[test]
fn a_loader_started_anywhere_continues_the_same_sequence() {
    let data = Arc::new(dataset(23, [3, 8, 8]));
    let mean = Arc::new(data.mean_image());
    let config = LoaderConfig { batch: 5, seed: 9, shuffle: true, augment: true, drop_last: true };
    let mut whole = Loader::new(data.clone(), mean.clone(), config, Position::default()).unwrap();
    assert_eq!(whole.per_epoch(), 4);
    let all = take(&mut whole, 11);
    let positions: Vec<(u64, u64)> = all.iter().map(|b| (b.position.epoch, b.position.batch)).collect();
    assert_eq!(positions[..6], [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]);
    let mut resumed = Loader::new(data.clone(), mean.clone(), config, Position { epoch: 1, batch: 2 }).unwrap();
    assert_eq!(take(&mut resumed, 5), all[6..]);
    // Each epoch is a new permutation; another seed gives other batches.
    assert_ne!(all[0].labels, all[4].labels);
    let other = LoaderConfig { seed: 10, ..config };
    let mut shifted = Loader::new(data, mean, other, Position::default()).unwrap();
    assert_ne!(shifted.next_batch(), all[0]);
}

#[test]
fn each_training_image_is_a_padded_crop_of_its_source_maybe_flipped() {
    let data = dataset(12, [2, 6, 6]);
    let mean = data.mean_image();
    let config = LoaderConfig { batch: 12, seed: 3, shuffle: false, augment: true, drop_last: true };
    let batch =
        Loader::new(Arc::new(data.clone()), Arc::new(mean.clone()), config, Position::default()).unwrap().next_batch();
    let [c, h, w] = data.shape;
    let normal = |i: usize, ch: usize, y: isize, x: isize| -> f32 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            return 0.0;
        }
        let s = (ch * h + y as usize) * w + x as usize;
        data.image(i)[s] as f32 / 255.0 - mean[s]
    };
    let mut moved = 0;
    for i in 0..12 {
        let got = &batch.images[i * c * h * w..(i + 1) * c * h * w];
        let fits = |dy: isize, dx: isize, flip: bool| {
            (0..c).all(|ch| {
                (0..h).all(|y| {
                    (0..w).all(|x| {
                        let xx = if flip { w - 1 - x } else { x } as isize;
                        got[(ch * h + y) * w + x] == normal(i, ch, y as isize + dy, xx + dx)
                    })
                })
            })
        };
        let found: Vec<(isize, isize, bool)> = (-4..=4)
            .flat_map(|dy| (-4..=4).flat_map(move |dx| [false, true].map(|f| (dy, dx, f))))
            .filter(|&(dy, dx, f)| fits(dy, dx, f))
            .collect();
        assert!(!found.is_empty(), "image {i} is no crop of its source");
        moved += usize::from(!found.contains(&(0, 0, false)));
        assert_eq!(batch.labels[i], data.labels[i] as f32);
    }
    assert!(moved >= 6, "only {moved} of 12 images were shifted or flipped");
}

#[test]
fn evaluation_batches_keep_the_order_and_pad_the_last() {
    let data = dataset(7, [1, 4, 4]);
    let mean = data.mean_image();
    let batches = in_order(&data, &mean, 3).unwrap();
    assert_eq!(batches.iter().map(|b| b.valid).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(batches[2].labels, [6.0, 0.0, 0.0]);
    assert!(batches[2].images[16..].iter().all(|&v| v == 0.0), "padding images are zero");
    let first: Vec<f32> = data.image(0).iter().zip(&mean).map(|(&p, m)| p as f32 / 255.0 - m).collect();
    assert_eq!(batches[0].images[..16], first[..]);
    // Mean subtraction centres every pixel over the dataset.
    let sums: Vec<f32> =
        (0..16).map(|p| batches.iter().flat_map(|b| (0..b.valid).map(move |k| b.images[k * 16 + p])).sum()).collect();
    assert!(sums.iter().all(|s| s.abs() < 1e-4), "{sums:?}");
}

#[test]
fn splits_and_bad_settings() {
    let data = dataset(50, [1, 2, 2]);
    let (train, held) = data.split(5, 1).unwrap();
    assert_eq!((train.len(), held.len()), (45, 5));
    assert_eq!(data.split(5, 1).unwrap().1, held, "the split is seeded");
    let mut all: Vec<Vec<u8>> =
        (0..45).map(|i| train.image(i).to_vec()).chain((0..5).map(|i| held.image(i).to_vec())).collect();
    all.sort();
    let mut want: Vec<Vec<u8>> = (0..50).map(|i| data.image(i).to_vec()).collect();
    want.sort();
    assert_eq!(all, want, "the split partitions the images");
    assert!(data.split(51, 1).unwrap_err().to_string().contains("51"));
    let mean = Arc::new(data.mean_image());
    let config = LoaderConfig { batch: 64, seed: 0, shuffle: true, augment: false, drop_last: true };
    let err = Loader::new(Arc::new(data.clone()), mean.clone(), config, Position::default()).err().unwrap().to_string();
    assert!(err.contains("64") && err.contains("50"), "{err}");
    let zero = LoaderConfig { batch: 0, ..config };
    assert!(Loader::new(Arc::new(data), mean, zero, Position::default()).is_err());
}
