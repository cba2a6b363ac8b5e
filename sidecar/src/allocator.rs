//! The `pickline` binary's memory allocator: mimalloc, without transparent huge pages, and
//! returning freed memory to the OS from a background thread of its own.
//!
//! A library that embeds the engine chooses its own allocator; these are the binary's
//! choices, and every figure of `pickline bench` is taken with them.

use std::time::Duration;

/// mimalloc instead of the system allocator: the request path allocates many small,
/// short-lived buffers (protobuf messages, HTTP/2 frames) across worker threads, which
/// glibc's malloc serves with consolidation and arena contention that showed up at about
/// 15% of CPU in `pickline bench grpc` profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option numbers (`mi_option_e` in the vendored v3 `mimalloc.h`; the crate
/// exports no constants for them). `option_numbers_are_those_of_the_linked_mimalloc` checks
/// them against the library's defaults.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ARENA_PURGE_MULT: libmimalloc_sys::mi_option_t = 24;

/// How often the purge thread returns freed memory to the OS.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// A purge delay no allocation path reaches (about 11 days, in ms): only the purge thread
/// purges.
const PURGE_DELAY_NEVER_MS: std::ffi::c_long = 1_000_000_000;

/// Sets the process up: THP off, purging on a background thread.
pub(crate) fn configure() {
    disable_transparent_huge_pages();
    purge_in_the_background();
}

/// Transparent huge pages off for this process (as mimalloc's `allow_thp = 0` does).
/// mimalloc asks for THP on its arenas, and a first touch of a fresh 2 MiB huge page zeroes
/// all of it inside the page fault, with the faulting thread's locks held: as the engine's
/// maps and the event stream grew, those faults were 30-40% of CPU in `pickline bench grpc`
/// BatchHold profiles and multi-millisecond stalls in the open loop. 4 KiB pages cost some
/// TLB reach and save all of that. Best effort: a kernel without the call keeps THP.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map; the
    // arguments are plain integers and no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc gives freed memory back to the OS (a purge: `madvise`) once it has been free
/// for `purge_delay`, and the thread that does it is whichever frees or allocates a page
/// next. After a checkpoint dropped its rebuilt state (gigabytes at 10M holds), that was a
/// writer: 20-120 ms stalls of one hold while it purged what the checkpoint had freed, the
/// longest writer stalls of `pickline bench wal`'s snapshot run (perf, off-CPU stacks in
/// `_mi_prim_decommit`). Here no allocation path ever reaches the delay; a thread at the
/// lowest CPU priority forces the purge every [`PURGE_INTERVAL`] instead, so memory still
/// goes back within about a second and no request pays for it. Best effort: without the
/// thread, mimalloc keeps its default (purging on the allocating threads).
fn purge_in_the_background() {
    let started = std::thread::Builder::new()
        .name("pickline-purge".into())
        .spawn(|| {
            lower_this_threads_priority();
            // SAFETY: `mi_option_set` takes plain integers (option numbers checked by a test
            // against the linked library); `mi_collect` takes none. Both may be called from
            // any thread at any time.
            unsafe {
                libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_NEVER_MS);
                libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_PURGE_MULT, 1);
            }
            loop {
                std::thread::sleep(PURGE_INTERVAL);
                // SAFETY: as above.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        });
    if let Err(e) = started {
        eprintln!("pickline: no memory purge thread ({e}); purging inline");
    }
}

/// The calling thread at nice 19 (Linux: priorities are per thread). Best effort.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers; `who = 0` is the calling thread on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_numbers_are_those_of_the_linked_mimalloc() {
        // The library's defaults (options.c): purge_delay 1000 ms, arena_purge_mult 1.
        // Nothing in this test binary sets them.
        // SAFETY: plain integer in, plain integer out.
        let (delay, mult) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_PURGE_MULT),
            )
        };
        assert_eq!((delay, mult), (1000, 1));
    }
}
