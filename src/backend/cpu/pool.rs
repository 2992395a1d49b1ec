//! The CPU backend's thread pool: persistent workers that spin between jobs,
//! so the hundreds of parallel ops in each generated token cost an atomic
//! increment to start and a counter to join, not a wake-up. Workers park
//! after a millisecond without work, so an idle server does not burn cores.
//!
//! A job is a task count and a function of the task index; the calling thread
//! works too, and tasks are handed out by an atomic counter, so a core slowed
//! by other load takes fewer of them. One job runs at a time; a second caller
//! (another engine, a test thread) runs its job inline rather than waiting.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(1);

/// Spins before an idle thread starts yielding its core between checks.
const YIELD_AFTER: u32 = 20_000;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// Incremented to publish a job.
    epoch: AtomicUsize,
    /// The current job; written only while no worker runs one.
    job: UnsafeCell<Option<&'static Job>>,
    tasks: AtomicUsize,
    next: AtomicUsize,
    /// Workers that have not yet finished the current job.
    running: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleeping: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written by the one thread holding `Pool::busy` while every
// worker is between jobs (running == 0), and read by workers only after they
// observe the epoch that published it (Release/Acquire).
unsafe impl Sync for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    busy: Mutex<()>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("tandem-cpu-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a pool thread")
            })
            .collect();
        Pool {
            shared,
            busy: Mutex::new(()),
            workers,
        }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// `f(i, piece)` for each `chunk`-sized piece of `data` (the last may be
    /// shorter), across the pool.
    pub fn chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync + '_),
    ) {
        let (len, base) = (data.len(), SendPtr(data.as_mut_ptr()));
        self.run(len.div_ceil(chunk.max(1)), &|i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: pieces are disjoint and inside `data`, which the
            // caller lends mutably for the whole call.
            let piece =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(i, piece)
        });
    }

    /// Run `f(0..tasks)` across the pool and return when all have finished.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync + '_)) {
        if tasks <= 1 || self.workers.is_empty() {
            (0..tasks).for_each(f);
            return;
        }
        let _busy = match self.busy.try_lock() {
            Ok(g) => g,
            // A job that panicked poisoned the lock; the pool itself is fine.
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                (0..tasks).for_each(f);
                return;
            }
        };
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased; this function does not return
        // before every worker has finished with the job (`running` == 0).
        let job: &'static Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Job>(f) };
        // SAFETY: we hold `busy` and no worker is in a job (see `Shared`).
        unsafe { *s.job.get() = Some(job) };
        s.tasks.store(tasks, Relaxed);
        s.next.store(0, Relaxed);
        s.running.store(self.workers.len(), Relaxed);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleeping.load(SeqCst) > 0 {
            let _g = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| take_tasks(s, f)));
        let mut spins = 0u32;
        while s.running.load(Acquire) != 0 {
            relax(&mut spins);
        }
        // SAFETY: as above; all workers are done with it.
        unsafe { *s.job.get() = None };
        let worker_panicked = s.panicked.swap(false, Relaxed);
        if let Err(e) = mine {
            std::panic::resume_unwind(e);
        }
        if worker_panicked {
            panic!("a CPU pool task panicked (see the message above)");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        self.shared.epoch.fetch_add(1, SeqCst);
        {
            let _g = self.shared.park.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            w.join().ok();
        }
    }
}

/// One turn of a wait loop: spin, and past the first few microseconds give
/// the core away between checks (on a machine with more runnable threads
/// than cores a pure spinner would starve the thread it is waiting for).
fn relax(spins: &mut u32) {
    std::hint::spin_loop();
    *spins = spins.wrapping_add(1);
    if *spins > YIELD_AFTER {
        std::thread::yield_now();
    }
}

fn take_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync + '_)) {
    let tasks = s.tasks.load(Relaxed);
    loop {
        let t = s.next.fetch_add(1, Relaxed);
        if t >= tasks {
            return;
        }
        f(t);
    }
}

fn worker(s: &Shared) {
    // The epoch the pool was created with, not a fresh load: a job published
    // before this thread got to run must still be seen as new.
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Acquire) == seen {
            relax(&mut spins);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut g = s.park.lock().unwrap_or_else(|e| e.into_inner());
                s.sleeping.fetch_add(1, SeqCst);
                while s.epoch.load(SeqCst) == seen {
                    g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                s.sleeping.fetch_sub(1, SeqCst);
            }
        }
        seen = s.epoch.load(Acquire);
        if s.shutdown.load(SeqCst) {
            return;
        }
        // SAFETY: published before the epoch we observed; valid until we
        // decrement `running`.
        if let Some(job) = unsafe { *s.job.get() } {
            if catch_unwind(AssertUnwindSafe(|| take_tasks(s, job))).is_err() {
                s.panicked.store(true, Relaxed);
            }
        }
        s.running.fetch_sub(1, Release);
    }
}

/// A pointer lent to pool tasks that write disjoint parts of its target.
pub struct SendPtr<T>(pub *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: users guarantee that tasks touch disjoint elements.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// A method, so closures capture the whole (Sync) wrapper, not the field.
    pub fn get(self) -> *mut T {
        self.0
    }
}

static GLOBAL: OnceLock<Pool> = OnceLock::new();

/// Size the process-wide pool; the first call wins (tests may call it many
/// times). Returns the size in effect.
pub fn init(threads: usize) -> usize {
    GLOBAL.get_or_init(|| Pool::new(threads)).threads()
}

/// The process-wide pool (physical cores unless [`init`] said otherwise).
pub fn global() -> &'static Pool {
    GLOBAL.get_or_init(|| Pool::new(num_cpus::get_physical()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_once_and_jobs_follow_each_other() {
        let pool = Pool::new(3);
        for tasks in [0, 1, 2, 7, 100] {
            let hits: Vec<AtomicU64> = (0..tasks).map(|_| AtomicU64::new(0)).collect();
            pool.run(tasks, &|t| {
                hits[t].fetch_add(1, Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "{tasks} tasks");
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = Pool::new(2);
        std::thread::sleep(SPIN * 5);
        let sum = AtomicU64::new(0);
        pool.run(64, &|t| {
            sum.fetch_add(t as u64, Relaxed);
        });
        assert_eq!(sum.load(Relaxed), 64 * 63 / 2);
    }

    #[test]
    fn concurrent_callers_both_finish() {
        let pool = Arc::new(Pool::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let sum = AtomicU64::new(0);
                    for _ in 0..200 {
                        pool.run(16, &|t| {
                            sum.fetch_add(t as u64, Relaxed);
                        });
                    }
                    sum.load(Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 200 * 120);
        }
    }

    #[test]
    fn a_panicking_task_is_reported_not_hung() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|t| assert!(t != 5, "task five fails"));
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let n = AtomicU64::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 8);
    }
}
