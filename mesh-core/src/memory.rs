//! Giving freed heap memory back to the kernel after a burst.
//!
//! glibc's allocator keeps the pages of freed chunks unless they sit at the very top of a heap,
//! so a proxy that held 10,000 connections for a minute keeps their buffers' pages resident
//! long after they closed (issue 15 measured ztunnel at 7.9 MiB idle, 16.4 MiB during a flood
//! and still 14.2 MiB after it). [`Trimmer`] watches how much of the heap is in use and, once
//! that has fallen by a threshold from its peak, asks glibc to release the free pages of every
//! arena (`malloc_trim(0)`, which `madvise`s them away; the address space stays mapped).
//!
//! This is the crate's only `unsafe` code: two foreign calls that take no pointers. On targets
//! whose C library is not glibc the trimmer does nothing.

use std::time::Duration;

/// What the allocator holds, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUse {
    /// Bytes in chunks handed out and not yet freed.
    pub in_use: usize,
    /// Bytes in free chunks the allocator keeps (resident or not).
    pub free: usize,
}

/// The allocator's current figures, where the C library can tell (glibc).
pub fn heap_use() -> Option<HeapUse> {
    sys::heap_use()
}

/// Asks the allocator to return every free page it can; whether any memory was released.
pub fn trim() -> bool {
    sys::trim()
}

/// Decides when to trim: after the bytes in use fell by at least `threshold` from the highest
/// figure seen since the last trim. Sampled, so a burst shorter than one period between two
/// samples goes unseen; the next one that is longer is caught.
#[derive(Debug)]
pub struct Trimmer {
    threshold: usize,
    peak: usize,
    trims: u64,
}

impl Trimmer {
    pub fn new(threshold: usize) -> Self {
        Trimmer {
            threshold,
            peak: 0,
            trims: 0,
        }
    }

    /// Takes one sample; says whether to trim now.
    pub fn observe(&mut self, now: HeapUse) -> bool {
        self.peak = self.peak.max(now.in_use);
        if self.peak - now.in_use >= self.threshold {
            self.peak = now.in_use;
            self.trims += 1;
            return true;
        }
        false
    }

    /// How many trims were decided.
    pub fn trims(&self) -> u64 {
        self.trims
    }

    /// Samples the heap every `period` for as long as the task lives, trimming off the
    /// async threads (a trim of a large heap takes milliseconds).
    pub async fn run(mut self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(now) = heap_use() else {
                return; // not glibc: nothing to trim
            };
            if self.observe(now) {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(
                    in_use = now.in_use,
                    free = now.free,
                    released,
                    "returned free heap pages after the heap in use shrank"
                );
            }
        }
    }
}

/// The period and threshold proxies use: a sample every 5 s costs nothing measurable, and
/// 2 MiB is well above the churn of ordinary traffic.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);
pub const DEFAULT_THRESHOLD: usize = 2 << 20;

/// Spawns the default trimmer on the current tokio runtime, detached: it lives as long as the
/// runtime, and ends at once where the C library is not glibc.
pub fn spawn_default_trimmer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(Trimmer::new(DEFAULT_THRESHOLD).run(DEFAULT_PERIOD))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod sys {
    use super::HeapUse;

    pub fn heap_use() -> Option<HeapUse> {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value; it only
        // reads the allocator's own bookkeeping under its locks. glibc 2.33 or later.
        let info = unsafe { libc::mallinfo2() };
        Some(HeapUse {
            in_use: info.uordblks,
            free: info.fordblks,
        })
    }

    pub fn trim() -> bool {
        // SAFETY: malloc_trim takes a size (how much to leave at the top of the main heap) and
        // touches only free chunks, under the allocator's locks; callable from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    use super::HeapUse;

    pub fn heap_use() -> Option<HeapUse> {
        None
    }

    pub fn trim() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(in_use: usize) -> HeapUse {
        HeapUse { in_use, free: 0 }
    }

    #[test]
    fn trims_once_after_the_heap_shrinks_by_the_threshold() {
        let mut t = Trimmer::new(100);
        assert!(!t.observe(at(50)));
        assert!(!t.observe(at(400)), "growing is no reason");
        assert!(!t.observe(at(320)), "80 below the peak");
        assert!(t.observe(at(290)), "110 below the peak");
        assert!(!t.observe(at(290)), "steady after a trim");
        assert!(!t.observe(at(200)), "90 below the new reference");
        assert!(t.observe(at(150)), "140 below 290");
        assert_eq!(t.trims(), 2);
    }

    #[test]
    fn steady_churn_under_the_threshold_never_trims() {
        let mut t = Trimmer::new(1000);
        for i in 0..10_000 {
            assert!(!t.observe(at(5000 + (i % 7) * 100)));
        }
    }
}
