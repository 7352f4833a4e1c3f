//! The trimmer against the real allocator: a burst of small allocations freed behind a live one
//! stays resident until the trimmer decides to trim, and then leaves. A test binary of its own,
//! so no other test allocates in the process meanwhile.

use mesh_core::memory::{self, Trimmer};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_freed_burst_is_returned_once_the_heap_shrinks() {
    let Some(before) = memory::heap_use() else {
        eprintln!("not glibc: the trimmer does nothing here");
        return;
    };
    let mut trimmer = Trimmer::new(memory::DEFAULT_THRESHOLD);
    assert!(!trimmer.observe(before));

    // 64 MiB in 8 KiB chunks (under glibc's mmap threshold, so they come from the heap), each
    // written so its pages are resident, then one more allocation above them: freeing the
    // burst cannot shrink the heap from its top.
    let burst: Vec<Box<[u8]>> = (0..8192).map(|i| vec![i as u8 | 1; 8192].into()).collect();
    let pin = vec![7u8; 64].into_boxed_slice();
    let during = memory::heap_use().expect("heap use");
    assert!(during.in_use >= before.in_use + (60 << 20), "{during:?}");
    assert!(!trimmer.observe(during), "growing is no reason to trim");
    let rss_during = rss_kib();

    drop(burst);
    let after = memory::heap_use().expect("heap use");
    let rss_freed = rss_kib();
    assert!(trimmer.observe(after), "the heap in use fell by 64 MiB");
    assert!(memory::trim(), "glibc released nothing");
    let rss_trimmed = rss_kib();
    println!("RSS: {rss_during} KiB during the burst, {rss_freed} KiB after free, {rss_trimmed} KiB after the trim");
    assert!(
        rss_trimmed + 48 * 1024 <= rss_freed,
        "the trim returned too little: {rss_freed} -> {rss_trimmed} KiB"
    );
    assert_eq!(pin[0], 7);
}
