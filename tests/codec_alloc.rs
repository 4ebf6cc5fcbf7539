//! Bounded allocation, measured with a counting allocator (this test binary
//! holds a single test so nothing else allocates meanwhile): a 12-hour stream
//! is refused without allocating anything near its 1.4 GB of PCM, and a normal
//! conversion allocates its output once, at its final size.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use opusgate::codec::{convert, ConvertOptions};
use support::clips::{clip, options};
use support::hostile::long_stream;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations of at least `BIG_THRESHOLD` bytes.
static BIG: AtomicUsize = AtomicUsize::new(0);
static BIG_THRESHOLD: AtomicUsize = AtomicUsize::new(usize::MAX);

fn grew(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::SeqCst) + size;
    PEAK.fetch_max(now, Ordering::SeqCst);
    if size >= BIG_THRESHOLD.load(Ordering::SeqCst) {
        BIG.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated above the current level while `f` runs.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - base)
}

#[test]
fn allocation_is_bounded_and_the_output_is_allocated_once() {
    // 12 hours of 120 ms packets (3 bytes each), about 1 MB of Ogg.
    let twelve_hours = long_stream(12 * 3600 * 1000 / 120, None);
    let (result, peak) = peak_during(|| convert(&twelve_hours, &ConvertOptions::default()));
    assert_eq!(result.expect_err("too long").code(), "audio_too_long");
    assert!(
        peak < 4 << 20,
        "refusing a 12-hour stream allocated {peak} bytes"
    );

    // A 60 s clip to 48 kHz stereo: one allocation of the output's size, and
    // little else (packets are borrowed from the input).
    let clip = clip(60.0, 1);
    let opts = options(48000, 2);
    let wav_len = 44 + 60 * 48000 * 4;
    BIG_THRESHOLD.store(wav_len / 2, Ordering::SeqCst);
    let (out, peak) = peak_during(|| convert(&clip, &opts));
    BIG_THRESHOLD.store(usize::MAX, Ordering::SeqCst);
    let out = out.expect("converted");
    assert_eq!(out.wav.len(), wav_len);
    assert_eq!(
        out.wav.capacity(),
        wav_len,
        "the output buffer was not sized exactly"
    );
    assert_eq!(
        BIG.load(Ordering::SeqCst),
        1,
        "the output buffer was allocated more than once"
    );
    assert!(
        peak < wav_len + (1 << 20),
        "peak {peak} bytes for a {wav_len}-byte output"
    );
}
