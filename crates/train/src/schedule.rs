//! The learning rate over a run. The rate is an input of the compiled step, so any schedule
//! runs without recompiling.

/// How the rate decays over a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// The paper's: divided by 10 at each milestone.
    Step,
    /// Cosine annealing to zero over the run (PyTorch's `CosineAnnealingLR` with `eta_min` 0):
    /// `base * (1 + cos(pi * iteration / iterations)) / 2`; milestones are ignored.
    Cosine,
}

impl Decay {
    /// Its name in configurations and checkpoints: `step` or `cosine`.
    pub fn name(self) -> &'static str {
        match self {
            Decay::Step => "step",
            Decay::Cosine => "cosine",
        }
    }
}

/// The paper's schedule, scaled to any run: a base rate divided by 10 at each milestone, given as
/// fractions of the run's iterations (the paper's 32k and 48k of 64k are 0.5 and 0.75), with an
/// optional warm-up rate used until the training error first falls below a threshold (ResNet-110:
/// 0.01 until under 80%). Or a cosine decay, and optionally a linear ramp over the first
/// iterations.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// The rate after warm-up and before the first milestone (0.1).
    pub base: f64,
    /// Milestones as fractions of `iterations`.
    pub milestones: Vec<f64>,
    /// Iterations in the run.
    pub iterations: u64,
    /// (rate, training-error threshold) of a warm-up.
    pub warmup: Option<(f64, f64)>,
    /// How the rate decays.
    pub decay: Decay,
    /// A linear warm-up over this many first iterations: iteration `i` runs at `(i + 1) / ramp`
    /// of the decayed rate (0: none).
    pub ramp: u64,
}

impl Schedule {
    /// The paper's schedule over `iterations`: 0.1, divided by 10 at 50% and 75%.
    pub fn paper(iterations: u64) -> Schedule {
        Schedule { base: 0.1, milestones: vec![0.5, 0.75], iterations, warmup: None, decay: Decay::Step, ramp: 0 }
    }

    /// The rate at `iteration`, once `warmed_up` (the training error has fallen below the warm-up
    /// threshold; always true without a warm-up).
    pub fn lr(&self, iteration: u64, warmed_up: bool) -> f64 {
        if let Some((rate, _)) = self.warmup
            && !warmed_up
        {
            return rate;
        }
        let decayed = match self.decay {
            Decay::Step => {
                let passed =
                    self.milestones.iter().filter(|&&m| iteration as f64 >= m * self.iterations as f64).count();
                self.base * 0.1f64.powi(passed as i32)
            }
            Decay::Cosine => {
                let t = iteration.min(self.iterations) as f64 / self.iterations.max(1) as f64;
                self.base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        if iteration < self.ramp { decayed * (iteration + 1) as f64 / self.ramp as f64 } else { decayed }
    }

    /// Whether a training error of `error` ends the warm-up.
    pub fn warms_up(&self, error: f64) -> bool {
        self.warmup.is_none_or(|(_, threshold)| error < threshold)
    }
}
