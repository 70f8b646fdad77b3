//! Batches for training and evaluation, prepared on a background thread: seeded shuffling, the
//! paper's augmentation (pad 4, random crop, random horizontal flip), per-pixel mean subtraction.
//!
//! Everything random is a function of the seed and the batch's position (epoch, index): the
//! order of epoch `e` comes from ChaCha8 stream `e`, and each batch's crops and flips from a
//! stream of its own. A loader started at any position yields exactly the batches an
//! uninterrupted one yields from there, so a resumed run sees the same data.

use crate::dataset::Dataset;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// How batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch: usize,
    /// Seed of the order and the augmentation.
    pub seed: u64,
    /// Shuffle each epoch (training) or keep the dataset's order (evaluation).
    pub shuffle: bool,
    /// Pad 4 pixels (with the mean, i.e. zero after subtraction), crop back at a random offset,
    /// flip horizontally with probability 1/2.
    pub augment: bool,
    /// Skip an epoch's last partial batch (training, where the compiled step has a fixed batch);
    /// otherwise it is padded with zero images, and [`Batch::valid`] says how many are real.
    pub drop_last: bool,
}

impl LoaderConfig {
    /// Batches per epoch over `images` images.
    pub fn batches(&self, images: usize) -> u64 {
        let (n, b) = (images as u64, self.batch.max(1) as u64);
        if self.drop_last { n / b } else { n.div_ceil(b) }
    }
}

/// Where a loader is: the next batch's epoch and index within it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Batch within the epoch, from 0.
    pub batch: u64,
}

/// One batch, ready to feed: images `[batch, C, H, W]` as `pixel / 255 - mean`, labels as `f32`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The images.
    pub images: Vec<f32>,
    /// Their labels (0 for padding images).
    pub labels: Vec<f32>,
    /// How many images are real (the rest pad an epoch's last batch).
    pub valid: usize,
    /// Where this batch is.
    pub position: Position,
}

/// The batch preparation, shared by the background thread and direct calls.
struct Prepare {
    data: Arc<Dataset>,
    mean: Arc<Vec<f32>>,
    config: LoaderConfig,
}

impl Prepare {
    fn per_epoch(&self) -> u64 {
        self.config.batches(self.data.len())
    }

    /// The order of epoch `epoch`.
    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if self.config.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            rng.set_stream(epoch);
            order.shuffle(&mut rng);
        }
        order
    }

    fn batch(&self, order: &[usize], at: Position) -> Batch {
        let [c, h, w] = self.data.shape;
        let pixels = c * h * w;
        let b = self.config.batch;
        let first = at.batch as usize * b;
        let indices = &order[first..(first + b).min(order.len())];
        let mut images = vec![0f32; b * pixels];
        let mut labels = vec![0f32; b];
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream((1 << 63) | (at.epoch << 32) | at.batch);
        for (k, &i) in indices.iter().enumerate() {
            labels[k] = self.data.labels[i] as f32;
            let src = self.data.image(i);
            let out = &mut images[k * pixels..(k + 1) * pixels];
            let (dy, dx, flip) = if self.config.augment {
                (
                    rng.random_range(0..9usize) as isize - 4,
                    rng.random_range(0..9usize) as isize - 4,
                    rng.random_bool(0.5),
                )
            } else {
                (0, 0, false)
            };
            for ch in 0..c {
                for y in 0..h {
                    let sy = y as isize + dy;
                    for x in 0..w {
                        let xx = if flip { w - 1 - x } else { x };
                        let sx = xx as isize + dx;
                        let at = (ch * h + y) * w + x;
                        out[at] = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                            let s = (ch * h + sy as usize) * w + sx as usize;
                            src[s] as f32 / 255.0 - self.mean[s]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
        Batch { images, labels, valid: indices.len(), position: at }
    }
}

/// Batches, epoch after epoch, prepared on a background thread a few batches ahead.
pub struct Loader {
    receiver: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    per_epoch: u64,
}

impl Loader {
    /// A loader over `data` that subtracts `mean` (one value per pixel, `[0, 1]` scale), starting
    /// at `start`.
    pub fn new(data: Arc<Dataset>, mean: Arc<Vec<f32>>, config: LoaderConfig, start: Position) -> Result<Loader> {
        if config.batch == 0 {
            return Err(Error::Argument("the batch size must be at least 1".into()));
        }
        if mean.len() != data.image_len() {
            return Err(Error::Argument(format!(
                "a mean image of {} values for images of {}",
                mean.len(),
                data.image_len()
            )));
        }
        let prepare = Prepare { data, mean, config };
        let per_epoch = prepare.per_epoch();
        if per_epoch == 0 {
            let n = prepare.data.len();
            return Err(Error::Argument(format!("batches of {} from {n} images leave no whole batch", config.batch)));
        }
        let (sender, receiver) = sync_channel(4);
        let worker = std::thread::Builder::new()
            .name("skipgrad-loader".into())
            .spawn(move || produce(prepare, start, sender))
            .map_err(|e| Error::Argument(format!("starting the loader thread: {e}")))?;
        Ok(Loader { receiver: Some(receiver), worker: Some(worker), per_epoch })
    }

    /// Batches per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.per_epoch
    }

    /// The next batch (waits for the background thread when it is behind).
    pub fn next_batch(&mut self) -> Batch {
        self.receiver.as_ref().and_then(|r| r.recv().ok()).expect("the loader thread runs until the loader is dropped")
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next send.
        self.receiver.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn produce(prepare: Prepare, start: Position, sender: SyncSender<Batch>) {
    let mut at = start;
    loop {
        let order = prepare.order(at.epoch);
        while at.batch < prepare.per_epoch() {
            if sender.send(prepare.batch(&order, at)).is_err() {
                return;
            }
            at.batch += 1;
        }
        at = Position { epoch: at.epoch + 1, batch: 0 };
    }
}

/// The batches of one pass over `data` in order, without augmentation (evaluation): the last one
/// padded, with its real count in [`Batch::valid`].
pub fn in_order(data: &Dataset, mean: &[f32], batch: usize) -> Result<Vec<Batch>> {
    if batch == 0 {
        return Err(Error::Argument("the batch size must be at least 1".into()));
    }
    let config = LoaderConfig { batch, seed: 0, shuffle: false, augment: false, drop_last: false };
    let prepare = Prepare { data: Arc::new(data.clone()), mean: Arc::new(mean.to_vec()), config };
    let order = prepare.order(0);
    Ok((0..prepare.per_epoch()).map(|b| prepare.batch(&order, Position { epoch: 0, batch: b })).collect())
}
