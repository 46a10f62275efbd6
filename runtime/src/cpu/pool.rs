//! A persistent worker pool for the decode step's many short parallel loops (a small model's
//! matrix-vector product takes tens of microseconds; waking sleeping threads for each costs
//! more). Workers spin for a while on a generation counter before they sleep, so back-to-back
//! jobs start in well under a microsecond. The calling thread works too.
//!
//! A waiting thread spins only briefly before it yields its core at each check: when the
//! machine has fewer free cores than threads (another process, two models), the thread it
//! waits for may be the one that needs that core. Spinning through whole time slices there
//! made two 2-thread decodes on 2 cores 10× slower each, not 2×.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Tasks per thread of a job over rows (a matrix-vector product, a quantization): enough to
/// even out threads that run at different speeds.
pub const TASKS_PER_THREAD: usize = 4;

/// Spin iterations before a waiting thread yields its core at each check (≈ microseconds).
const SPINS_BEFORE_YIELD: u32 = 2_000;
/// Yields before a worker sleeps (a yield on an idle core returns at once: ≈ tens of
/// microseconds in all).
const YIELDS_BEFORE_SLEEP: u32 = 64;

type Task<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// The current job, valid while `active > 0`; written only by `run` between jobs.
    job: UnsafeCell<Option<Task<'static>>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    /// Workers still inside the current job.
    active: AtomicUsize,
    generation: AtomicU64,
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Workers asleep (or about to be) on `wake`: a job takes the lock and wakes them only
    /// then (a notify is a system call; back-to-back jobs find the workers spinning).
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by `run` while no worker reads it (active == 0 and the new
// generation not yet published), and read by workers only between observing a generation
// (Acquire) and decrementing `active` (Release); `run` waits for active == 0 before returning.
unsafe impl Sync for Shared {}

pub struct WorkerPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` calls from several threads.
    run_lock: Mutex<()>,
}

impl WorkerPool {
    /// A pool of `threads` threads in all (the caller counts as one).
    /// A pool of `threads` threads, the calling one included (an error if one cannot start).
    pub fn new(threads: usize) -> std::io::Result<WorkerPool> {
        let mut pool = WorkerPool::calling_thread();
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&pool.shared);
            pool.workers.push(
                std::thread::Builder::new()
                    .name(format!("liger-worker-{i}"))
                    .spawn(move || worker(&shared))?,
            );
        }
        Ok(pool)
    }

    /// A pool of the calling thread alone: its jobs run where they are submitted.
    pub fn calling_thread() -> WorkerPool {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        WorkerPool {
            shared,
            workers: Vec::new(),
            run_lock: Mutex::new(()),
        }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..n_tasks`, spread over the pool; returns when all are
    /// done. A panic in a task is re-raised here.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: no worker reads `job` now (the previous `run` waited for active == 0), and
        // the lifetime is erased only until this function returns, after every worker has
        // finished with it (active == 0 again).
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<Task<'_>, Task<'static>>(f));
        }
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next_task.store(0, Ordering::Relaxed);
        s.active.store(self.workers.len(), Ordering::Relaxed);
        // SeqCst with the worker's `sleepers` increment and generation check: either it sees
        // this generation and does not sleep, or this sees it counted and wakes it (under the
        // lock, so after it waits).
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let caller = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(s, f)));
        let mut spins = 0u32;
        while s.active.load(Ordering::Acquire) != 0 {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: every worker is done with the job.
        unsafe {
            *s.job.get() = None;
        }
        if let Err(p) = caller {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker task panicked");
        }
    }
}

fn work(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin, yield, then sleep.
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else if spins < SPINS_BEFORE_YIELD + YIELDS_BEFORE_SLEEP {
                spins += 1;
                std::thread::yield_now();
            } else {
                let guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                if s.generation.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::Acquire) {
                    let _unused = s.wake.wait(guard);
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // SAFETY: the generation was published after `job` was set, and `run` keeps it alive
        // until `active` reaches 0, which this worker signals only after its last use.
        let job = unsafe { *s.job.get() };
        if let Some(f) = job {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(s, f))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.active.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _g = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerPool;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once_across_many_jobs() {
        let pool = WorkerPool::new(3).unwrap();
        for n in [0, 1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
        // Workers that fell asleep wake up again.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let count = AtomicUsize::new(0);
        pool.run(64, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let pool = WorkerPool::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(16, &|i| assert!(i != 5))
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(16, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 16);
    }
}

/// A mutable slice shared by the tasks of one `run`, each writing only its own elements.
pub struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _life: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: `Disjoint` hands out sub-slices only through `slice`, whose contract is that
// concurrent callers never overlap.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}
// SAFETY: it owns the exclusive borrow it was made from, which may move to another thread.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    pub fn new(data: &'a mut [T]) -> Self {
        Disjoint {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _life: std::marker::PhantomData,
        }
    }

    /// A view of `data[range]` handing out slices the same way (the contract of [`Self::slice`]
    /// holds across every view of the same data).
    pub fn sub(&self, range: std::ops::Range<usize>) -> Disjoint<'_, T> {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Disjoint::sub out of bounds"
        );
        Disjoint {
            // SAFETY: in bounds (checked above).
            ptr: unsafe { self.ptr.add(range.start) },
            len: range.end - range.start,
            _life: std::marker::PhantomData,
        }
    }

    /// `data[range]`.
    ///
    /// # Safety
    /// No two live slices from concurrent tasks may overlap.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Disjoint::slice out of bounds"
        );
        std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start)
    }
}

impl WorkerPool {
    /// Splits `data` into chunks of `chunk` elements and calls `f(index, chunk)` for each,
    /// in parallel.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let chunk = chunk.max(1);
        let n = data.len();
        let shared = Disjoint::new(data);
        self.run(n.div_ceil(chunk), &|i| {
            // SAFETY: task i touches only elements [i·chunk, (i+1)·chunk), disjoint from others.
            let part = unsafe { shared.slice(i * chunk..((i + 1) * chunk).min(n)) };
            f(i, part);
        });
    }
}
