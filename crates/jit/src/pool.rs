//! A pool of worker threads created once: a kernel's groups are split into one contiguous range
//! per thread, the caller runs the first, and nothing is allocated per call.
//!
//! A kernel call of a small step (batch-1 inference) takes tens of microseconds, about what waking
//! a sleeping thread costs on these machines. So a worker that finished its share spins for a
//! short while ([`SPIN`]) watching for the next call before it sleeps on a condition variable, and
//! the caller spins likewise while the other shares finish: back-to-back calls never sleep. Both
//! sides register before sleeping, under the lock the other side takes to publish, so no wake-up
//! is lost.

use crate::compiler::KernelFn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a thread spins waiting (for the next call, or for the other shares) before it sleeps.
const SPIN: Duration = Duration::from_micros(100);

/// Worker threads that run kernels over split group ranges.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    start: Condvar,
    done: Condvar,
    /// Calls published so far (changed under `state`'s lock).
    generation: AtomicU64,
    /// Shares of the current call not finished yet.
    pending: AtomicUsize,
}

struct State {
    job: Option<Job>,
    shutdown: bool,
    /// Workers asleep on `start`.
    sleeping: usize,
    /// Whether the caller is asleep on `done`.
    caller_sleeping: bool,
}

#[derive(Clone, Copy)]
struct Job {
    kernel: KernelFn,
    args: *const *mut f32,
    groups: u64,
    threads: u64,
}

// SAFETY: a Job's pointers are only dereferenced by the kernel while `run` blocks the thread that
// owns the buffers, so sending them to workers cannot outlive or race with their owner.
unsafe impl Send for Job {}

impl Job {
    /// Runs this thread's share of the groups: a contiguous range, the same for every run.
    ///
    /// # Safety
    /// `args` must point to the pointers the kernel expects, valid for all groups.
    unsafe fn run_share(&self, thread: u64) {
        let begin = self.groups * thread / self.threads;
        let end = self.groups * (thread + 1) / self.threads;
        if begin < end {
            // SAFETY: upheld by the caller.
            unsafe { (self.kernel)(self.args, begin, end, thread) };
        }
    }
}

/// Spins until `ready()` or for [`SPIN`]; returns whether it became ready.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN {
            return ready();
        }
    }
}

impl ThreadPool {
    /// A pool running kernels on `threads` threads in all (the caller's plus `threads - 1` workers).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { job: None, shutdown: false, sleeping: 0, caller_sleeping: false }),
            start: Condvar::new(),
            done: Condvar::new(),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|index| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("skipgrad-jit-{index}"))
                    .spawn(move || worker(&shared, index as u64))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool { shared, workers }
    }

    /// Number of threads kernels run on.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `kernel` over groups `0..groups`, split across the threads; returns when all are done.
    ///
    /// # Safety
    /// `args` must hold the pointers `kernel` expects, valid for every group, and no other thread
    /// may touch those buffers until this returns.
    pub(crate) unsafe fn run(&self, kernel: KernelFn, args: *const *mut f32, groups: u64) {
        let threads = (self.threads() as u64).min(groups.max(1));
        let job = Job { kernel, args, groups, threads };
        if threads == 1 {
            // SAFETY: upheld by the caller.
            unsafe { job.run_share(0) };
            return;
        }
        let shared = &*self.shared;
        {
            let mut s = shared.state.lock().expect("pool lock");
            s.job = Some(job);
            shared.pending.store(threads as usize - 1, SeqCst);
            shared.generation.fetch_add(1, SeqCst);
            if s.sleeping > 0 {
                shared.start.notify_all();
            }
        }
        // SAFETY: upheld by the caller.
        unsafe { job.run_share(0) };
        if !spin_until(|| shared.pending.load(SeqCst) == 0) {
            let mut s = shared.state.lock().expect("pool lock");
            s.caller_sleeping = true;
            while shared.pending.load(SeqCst) > 0 {
                s = shared.done.wait(s).expect("pool lock");
            }
            s.caller_sleeping = false;
        }
    }
}

fn worker(shared: &Shared, index: u64) {
    let mut seen = 0;
    loop {
        spin_until(|| shared.generation.load(SeqCst) != seen);
        let job = {
            let mut s = shared.state.lock().expect("pool lock");
            while shared.generation.load(SeqCst) == seen && !s.shutdown {
                s.sleeping += 1;
                s = shared.start.wait(s).expect("pool lock");
                s.sleeping -= 1;
            }
            if s.shutdown {
                return;
            }
            seen = shared.generation.load(SeqCst);
            s.job
        };
        let Some(job) = job else { continue };
        if index < job.threads {
            // SAFETY: `run` keeps the buffers alive and untouched until every share reports done.
            unsafe { job.run_share(index) };
            if shared.pending.fetch_sub(1, SeqCst) == 1 {
                let s = shared.state.lock().expect("pool lock");
                if s.caller_sleeping {
                    shared.done.notify_one();
                }
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.state.lock().expect("pool lock").shutdown = true;
        self.shared.generation.fetch_add(1, SeqCst);
        self.shared.start.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds 1 to element `g` of the buffer `args[0]` for each group `g` of the share.
    unsafe extern "C" fn count(args: *const *mut f32, begin: u64, end: u64, _thread: u64) {
        for g in begin..end {
            // SAFETY: the test's buffer holds an element per group, and shares are disjoint.
            unsafe { *(*args).add(g as usize) += 1.0 };
        }
    }

    /// Calls back to back (the workers spin between them) and after pauses longer than the spin
    /// (the workers and the caller sleep): every group of every call runs exactly once.
    #[test]
    fn every_group_runs_once_whether_threads_spin_or_sleep() {
        for threads in [2, 3] {
            let pool = ThreadPool::new(threads);
            let mut counts = vec![0.0f32; 7];
            let args = [counts.as_mut_ptr()];
            for call in 0..2000 {
                if call % 500 == 0 {
                    std::thread::sleep(SPIN * 5);
                }
                // SAFETY: `args` points to `counts`, untouched until `run` returns.
                unsafe { pool.run(count, args.as_ptr(), 1 + call % 7) };
            }
            let want: Vec<f32> = (0..7u64).map(|g| (0..2000u64).filter(|c| g < 1 + c % 7).count() as f32).collect();
            assert_eq!(counts, want, "{threads} threads");
        }
    }
}
