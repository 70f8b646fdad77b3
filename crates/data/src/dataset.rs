//! A labelled image dataset in memory (bytes, as the files store them), its validation split and
//! per-pixel mean.

use crate::{Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Images (`u8`, channel-major `[C][H][W]` each) and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `len() * C * H * W` pixel bytes.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Channels, height, width of each image.
    pub shape: [usize; 3],
    /// Number of classes (labels are below it).
    pub classes: usize,
}

impl Dataset {
    /// Images in the dataset.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Image `i`'s bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Splits off `validation` images chosen by a seeded shuffle (the paper holds out 5k of
    /// CIFAR-10's 50k): returns (training, validation).
    pub fn split(&self, validation: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        if validation > self.len() {
            return Err(Error::Argument(format!("a validation split of {validation} from {} images", self.len())));
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let (held, kept) = order.split_at(validation);
        let (mut held, mut kept) = (held.to_vec(), kept.to_vec());
        held.sort_unstable();
        kept.sort_unstable();
        Ok((self.subset(&kept), self.subset(&held)))
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Dataset { images, labels, shape: self.shape, classes: self.classes }
    }

    /// The per-pixel mean image of this dataset, on the `[0, 1]` pixel scale (the paper subtracts
    /// the training split's).
    pub fn mean_image(&self) -> Vec<f32> {
        let n = self.image_len();
        let mut sums = vec![0u64; n];
        for i in 0..self.len() {
            for (s, &p) in sums.iter_mut().zip(self.image(i)) {
                *s += p as u64;
            }
        }
        let count = self.len().max(1) as f64 * 255.0;
        sums.into_iter().map(|s| (s as f64 / count) as f32).collect()
    }
}
