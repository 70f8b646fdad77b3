//! Loader throughput: augmented training batches (pad 4, random crop, random flip, mean
//! subtraction) per second from one background thread, for CIFAR-shaped images (50,000 synthetic
//! 3x32x32) and, when installed, Fashion-MNIST's 60,000 training images.
//!
//! `cargo bench -p skipgrad-data --bench loader`: the median of 5 runs of 100 batches of 128.

use skipgrad_data::{Dataset, Loader, LoaderConfig, Position, fashion_mnist};
use std::sync::Arc;
use std::time::Instant;

fn images_per_second(data: Dataset) -> (f64, f64, f64) {
    let mean = Arc::new(data.mean_image());
    let data = Arc::new(data);
    let config = LoaderConfig { batch: 128, seed: 1, shuffle: true, augment: true, drop_last: true };
    let mut rates: Vec<f64> = (0..5)
        .map(|run| {
            let mut loader =
                Loader::new(data.clone(), mean.clone(), config, Position { epoch: run, batch: 0 }).unwrap();
            let start = Instant::now();
            for _ in 0..100 {
                std::hint::black_box(loader.next_batch());
            }
            100.0 * 128.0 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    (rates[2], rates[0], rates[4])
}

fn main() {
    println!("| data | images/s (median of 5) | min | max |");
    println!("|---|---|---|---|");
    let cifar = Dataset {
        images: (0..50_000 * 3072).map(|i| (i * 7919 % 251) as u8).collect(),
        labels: (0..50_000).map(|i| (i % 10) as u8).collect(),
        shape: [3, 32, 32],
        classes: 10,
    };
    let (median, min, max) = images_per_second(cifar);
    println!("| CIFAR-shaped 3x32x32 (synthetic) | {median:.0} | {min:.0} | {max:.0} |");
    match fashion_mnist(None) {
        Ok((train, _)) => {
            let (median, min, max) = images_per_second(train);
            println!("| Fashion-MNIST 1x28x28 | {median:.0} | {min:.0} | {max:.0} |");
        }
        Err(e) => println!("| Fashion-MNIST | not measured: {e} | | |"),
    }
}
