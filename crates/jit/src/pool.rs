//! A pool of worker threads created once: a kernel's groups are split into one contiguous range
//! per thread, the caller runs the first, and nothing is allocated per call.

use crate::compiler::KernelFn;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Worker threads that run kernels over split group ranges.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    start: Condvar,
    done: Condvar,
}

struct State {
    generation: u64,
    job: Option<Job>,
    pending: usize,
    shutdown: bool,
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

impl ThreadPool {
    /// A pool running kernels on `threads` threads in all (the caller's plus `threads - 1` workers).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { generation: 0, job: None, pending: 0, shutdown: false }),
            start: Condvar::new(),
            done: Condvar::new(),
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
        {
            let mut s = self.shared.state.lock().expect("pool lock");
            s.job = Some(job);
            s.pending = threads as usize - 1;
            s.generation += 1;
        }
        self.shared.start.notify_all();
        // SAFETY: upheld by the caller.
        unsafe { job.run_share(0) };
        let mut s = self.shared.state.lock().expect("pool lock");
        while s.pending > 0 {
            s = self.shared.done.wait(s).expect("pool lock");
        }
        s.job = None;
    }
}

fn worker(shared: &Shared, index: u64) {
    let mut seen = 0;
    loop {
        let job = {
            let mut s = shared.state.lock().expect("pool lock");
            while s.generation == seen && !s.shutdown {
                s = shared.start.wait(s).expect("pool lock");
            }
            if s.shutdown {
                return;
            }
            seen = s.generation;
            s.job
        };
        let Some(job) = job else { continue };
        if index < job.threads {
            // SAFETY: `run` keeps the buffers alive and untouched until every share reports done.
            unsafe { job.run_share(index) };
            let mut s = shared.state.lock().expect("pool lock");
            s.pending -= 1;
            if s.pending == 0 {
                shared.done.notify_one();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.state.lock().expect("pool lock").shutdown = true;
        self.shared.start.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
