//! cargo-microimage's runtime object: compiled by `rustc --emit=obj` for the image's target
//! and linked into the final link of binaries that `cargo microimage build` compiles, before
//! the C library (`-l static:+verbatim=microimage_rt.o`), so its definitions win over musl's.
//! Nothing here runs unless a part is compiled in (`--cfg`):
//!
//! - `microimage_pid1`: when the process is PID 1 — the program of a container, where the
//!   kernel delivers no signal whose action is the default — SIGHUP, SIGINT and SIGTERM get
//!   a handler that ends the process as the default action would outside a container, with
//!   exit status 128 + the signal. A program that installs its own handlers later replaces
//!   this one (and one that chains to the previous handler, as signal-hook does, finds that
//!   this one does nothing once replaced).
//! - `microimage_copy` (x86 and x86_64): `memcpy` and `memmove` that are fast for small
//!   copies. musl's are `rep movs` loops, whose start-up costs tens of cycles per call;
//!   allocation-heavy Rust code makes millions of small copies. 16-byte SSE2 loads and
//!   stores up to 2 KiB (and beyond on i686 and for close or backward moves), `rep movsb`
//!   from a 64-byte-aligned destination above (`benches/copy.sh` measures them).
//! - `microimage_cmp` (x86, x86_64 and aarch64): `memcmp` and `bcmp` that compare 16 bytes
//!   (SSE2) or 8 bytes at a time. musl's `memcmp` is a loop over single bytes on every
//!   architecture, and sorting strings, `BTreeMap` and `HashMap` lookups call it all the time.
//! - `microimage_purge` (with mimalloc): memory the program freed goes back to the kernel
//!   while it idles. mimalloc hands freed memory back only `purge_delay` (1 s) after the
//!   free, and only when the allocator is called again: a service that goes quiet after a
//!   burst would keep its peak for good. A thread started before `main` calls
//!   `mi_collect(false)` every half `purge_delay` (at most every 500 ms), which purges what
//!   has expired, program-wide; it does nothing else, holds no lock of the program's, and
//!   takes no signal. `MIMALLOC_PURGE_DELAY` still rules: `0` (mimalloc purges at once)
//!   and `-1` (never) end the thread, other values set its pace.
//!
//! - `microimage_cxa` (when a crate compiles C++): `__cxa_thread_atexit_impl`, glibc's
//!   registration of a thread's C++ `thread_local` destructors, which musl does not have.
//!   C++ configured for glibc calls it directly: snmalloc's CMake build picks that on every
//!   non-Apple Unix (`SNMALLOC_CLEANUP=CXX11_THREAD_ATEXIT_DIRECT`), so its allocator did
//!   not link for musl. The destructors run, last registered first, when the thread ends
//!   (through a pthread key's destructor, as musl runs those); like with Rust's own
//!   thread-locals on musl, not for the main thread at `exit`. Rust's standard library
//!   uses it too once it is there (it looks for it as a weak symbol).
//!
//! `no_std`, no `core` function called (the object may only need the C library), and
//! `no_builtins` so that the copy loops are not turned back into calls to `memcpy`.
#![no_std]
#![no_builtins]

#[cfg(microimage_pid1)]
mod pid1 {
    extern "C" {
        fn getpid() -> i32;
        fn signal(sig: i32, handler: usize) -> usize;
        fn sigaction(sig: i32, act: *const u8, old: *mut u8) -> i32;
        fn _exit(code: i32) -> !;
    }

    const SIG_IGN: usize = 1;
    /// SIGHUP, SIGINT, SIGTERM (the same numbers on every Linux platform in the table).
    const SIGNALS: [i32; 3] = [1, 2, 15];

    /// What `cargo microimage verify` looks for to tell that a binary has this hook (in
    /// the section of its own that only this object makes).
    #[used]
    #[link_section = ".microimage"]
    static MARKER: [u8; 13] = *b"pid1-signals\0";

    extern "C" fn on_signal(sig: i32) {
        // A handler installed after this one may still call it (signal-hook calls the
        // handler it replaced): act only while this one is the installed handler. The
        // buffer is larger than any libc's `struct sigaction`; its first field is the
        // handler.
        if handler_of(sig) != Some(on_signal as *const () as usize) {
            return;
        }
        unsafe { _exit(128 + sig) }
    }

    /// The handler installed for `sig` (`SIG_IGN`, `SIG_DFL` or a function), asked without
    /// changing it. The buffer is zeroed and larger than any libc's `struct sigaction`,
    /// whose first field is the handler.
    fn handler_of(sig: i32) -> Option<usize> {
        let mut old = [0usize; 64];
        let asked = unsafe { sigaction(sig, core::ptr::null(), old.as_mut_ptr() as *mut u8) };
        (asked == 0).then_some(old[0])
    }

    extern "C" fn init() {
        unsafe {
            // Keeps the marker in the linked binary.
            core::ptr::read_volatile(&MARKER[0]);
            if getpid() != 1 {
                return;
            }
            for sig in SIGNALS {
                // A signal the container was started with ignored stays ignored: looked at
                // first, so it is never handled, not even for a moment.
                if handler_of(sig) != Some(SIG_IGN) {
                    signal(sig, on_signal as *const () as usize);
                }
            }
        }
    }

    /// Run by the C library's start-up code before `main`.
    #[used]
    #[link_section = ".init_array"]
    static INIT: extern "C" fn() = init;
}

#[cfg(microimage_purge)]
mod purge {
    extern "C" {
        fn pthread_attr_init(attr: *mut u8) -> i32;
        fn pthread_attr_setstacksize(attr: *mut u8, size: usize) -> i32;
        fn pthread_attr_setdetachstate(attr: *mut u8, state: i32) -> i32;
        fn pthread_attr_destroy(attr: *mut u8) -> i32;
        fn pthread_create(
            thread: *mut usize,
            attr: *const u8,
            run: extern "C" fn(*mut u8) -> *mut u8,
            arg: *mut u8,
        ) -> i32;
        fn pthread_sigmask(how: i32, set: *const u8, old: *mut u8) -> i32;
        fn sigfillset(set: *mut u8) -> i32;
        fn prctl(option: i32, ...) -> i32;
        // Not `nanosleep`: on 32-bit targets musl's public symbol takes the old 32-bit
        // `timespec`, and its headers redirect C callers to `__nanosleep_time64`.
        fn usleep(micros: u32) -> i32;
        fn mi_thread_init();
        fn mi_collect(force: bool);
        fn mi_option_get(option: i32) -> isize;
    }

    /// `mi_option_purge_delay` and `mi_option_arena_purge_mult` in mimalloc 3's `mi_option_t`.
    const PURGE_DELAY: i32 = 15;
    const ARENA_PURGE_MULT: i32 = 24;
    const PTHREAD_CREATE_DETACHED: i32 = 1;
    const SIG_BLOCK: i32 = 0;
    const SIG_SETMASK: i32 = 2;
    const PR_SET_NAME: i32 = 15;

    /// What `cargo microimage verify` looks for to tell mimalloc linked by the tool (with
    /// this thread) from a program's own.
    #[used]
    #[link_section = ".microimage"]
    static MARKER: [u8; 9] = *b"mimalloc\0";

    extern "C" fn run(_: *mut u8) -> *mut u8 {
        unsafe {
            prctl(PR_SET_NAME, b"mimalloc-purge\0".as_ptr());
            // Read once the program runs (mimalloc reads its environment options lazily).
            usleep(100_000);
            let delay = mi_option_get(PURGE_DELAY).saturating_mul(mi_option_get(ARENA_PURGE_MULT).max(1));
            if delay <= 0 {
                return core::ptr::null_mut();
            }
            let tick = (delay / 2).clamp(10, 500) as u32 * 1000;
            // `mi_collect` works through the calling thread's heap, which a thread that
            // never allocated does not have yet.
            mi_thread_init();
            loop {
                usleep(tick);
                mi_collect(false);
            }
        }
    }

    extern "C" fn init() {
        unsafe {
            core::ptr::read_volatile(&MARKER[0]);
            // Buffers larger than musl's `pthread_attr_t` (56 bytes) and `sigset_t` (128).
            let mut attr = [0u64; 16];
            let mut all = [0u64; 16];
            let mut old = [0u64; 16];
            let attr = attr.as_mut_ptr() as *mut u8;
            if pthread_attr_init(attr) != 0 {
                return;
            }
            pthread_attr_setstacksize(attr, 128 << 10);
            pthread_attr_setdetachstate(attr, PTHREAD_CREATE_DETACHED);
            // The thread starts with every signal blocked (musl's full set leaves its own
            // internal ones open), so a signal meant for the program never lands on it:
            // programs that wait for signals with `sigwait` or `signalfd` keep working.
            sigfillset(all.as_mut_ptr() as *mut u8);
            pthread_sigmask(SIG_BLOCK, all.as_ptr() as *const u8, old.as_mut_ptr() as *mut u8);
            let mut thread = 0usize;
            pthread_create(&mut thread, attr, run, core::ptr::null_mut());
            pthread_sigmask(SIG_SETMASK, old.as_ptr() as *const u8, core::ptr::null_mut());
            pthread_attr_destroy(attr);
        }
    }

    #[used]
    #[link_section = ".init_array"]
    static INIT: extern "C" fn() = init;
}

#[cfg(microimage_cxa)]
mod cxa {
    use core::ptr::addr_of_mut;

    extern "C" {
        // `pthread_key_t` is `unsigned` and `pthread_once_t` `int` in musl on every
        // platform. `pthread_once` rather than a compare-and-swap, which on aarch64 calls
        // an outlined atomic from Rust's compiler builtins (not in this object's reach).
        fn pthread_once(once: *mut i32, init: extern "C" fn()) -> i32;
        fn pthread_key_create(key: *mut u32, dtor: Option<unsafe extern "C" fn(*mut u8)>) -> i32;
        fn pthread_getspecific(key: u32) -> *mut u8;
        fn pthread_setspecific(key: u32, value: *const u8) -> i32;
        fn malloc(size: usize) -> *mut u8;
        fn free(ptr: *mut u8);
    }

    /// One registered destructor; the thread's list hangs from the key, newest first.
    #[repr(C)]
    struct Node {
        dtor: unsafe extern "C" fn(*mut u8),
        obj: *mut u8,
        next: *mut Node,
    }

    static mut ONCE: i32 = 0;
    static mut KEY: u32 = 0;
    static mut KEY_MADE: bool = false;

    extern "C" fn make_key() {
        unsafe {
            KEY_MADE = pthread_key_create(addr_of_mut!(KEY), Some(run)) == 0;
        }
    }

    unsafe fn key() -> Option<u32> {
        pthread_once(addr_of_mut!(ONCE), make_key);
        if KEY_MADE {
            Some(KEY)
        } else {
            None
        }
    }

    /// The key's destructor, with the thread's list: runs it, newest first, and then what
    /// those destructors registered, until nothing is left.
    unsafe extern "C" fn run(list: *mut u8) {
        let Some(key) = key() else { return };
        let mut node = list as *mut Node;
        loop {
            while !node.is_null() {
                let Node { dtor, obj, next } = core::ptr::read(node);
                free(node as *mut u8);
                dtor(obj);
                node = next;
            }
            node = pthread_getspecific(key) as *mut Node;
            if node.is_null() {
                return;
            }
            pthread_setspecific(key, core::ptr::null());
        }
    }

    /// What `cargo microimage verify` looks for.
    #[used]
    #[link_section = ".microimage"]
    static MARKER: [u8; 23] = *b"cxa_thread_atexit_impl\0";

    #[no_mangle]
    pub unsafe extern "C" fn __cxa_thread_atexit_impl(
        dtor: unsafe extern "C" fn(*mut u8),
        obj: *mut u8,
        _dso: *mut u8,
    ) -> i32 {
        core::ptr::read_volatile(&MARKER[0]);
        let Some(key) = key() else { return -1 };
        let node = malloc(core::mem::size_of::<Node>()) as *mut Node;
        if node.is_null() {
            return -1;
        }
        node.write(Node {
            dtor,
            obj,
            next: pthread_getspecific(key) as *mut Node,
        });
        if pthread_setspecific(key, node as *const u8) != 0 {
            free(node as *mut u8);
            return -1;
        }
        0
    }
}

#[cfg(microimage_copy)]
pub mod copy {
    #[cfg(target_arch = "x86")]
    use core::arch::x86::{__m128i as V, _mm_loadu_si128, _mm_storeu_si128};
    #[cfg(target_arch = "x86_64")]
    use core::arch::x86_64::{__m128i as V, _mm_loadu_si128, _mm_storeu_si128};
    use core::ptr::{read_unaligned as load, write_unaligned as store};

    /// Above this, `rep movsb` on x86_64 (fast on CPUs with ERMS/FSRM, which long copies
    /// pay off on).
    const LARGE: usize = 2048;

    /// 16 bytes from `p`, one SSE2 load at any alignment (`movdqu`; a `u128` would be four
    /// 32-bit loads on i686).
    #[inline(always)]
    unsafe fn ld(p: *const u8) -> V {
        _mm_loadu_si128(p as *const V)
    }

    #[inline(always)]
    unsafe fn st(p: *mut u8, v: V) {
        _mm_storeu_si128(p as *mut V, v)
    }

    /// Copies `n <= 32` bytes. Every load happens before any store, so the ranges may overlap.
    #[inline(always)]
    unsafe fn small(d: *mut u8, s: *const u8, n: usize) {
        if n >= 16 {
            let a = ld(s);
            let b = ld(s.add(n - 16));
            st(d, a);
            st(d.add(n - 16), b);
        } else if n >= 8 {
            let a: u64 = load(s as *const u64);
            let b: u64 = load(s.add(n - 8) as *const u64);
            store(d as *mut u64, a);
            store(d.add(n - 8) as *mut u64, b);
        } else if n >= 4 {
            let a: u32 = load(s as *const u32);
            let b: u32 = load(s.add(n - 4) as *const u32);
            store(d as *mut u32, a);
            store(d.add(n - 4) as *mut u32, b);
        } else if n > 0 {
            let a = *s;
            let b = *s.add(n / 2);
            let c = *s.add(n - 1);
            *d = a;
            *d.add(n / 2) = b;
            *d.add(n - 1) = c;
        }
    }

    /// Copies `n > 32` bytes front to back, 32 at a time, the last 32 loaded first and
    /// stored last. Correct for overlapping ranges when `d` is below `s`: a store only ever
    /// reaches source bytes that were loaded already.
    #[inline(always)]
    unsafe fn forward(d: *mut u8, s: *const u8, n: usize) {
        let ta = ld(s.add(n - 32));
        let tb = ld(s.add(n - 16));
        let mut i = 0;
        while i + 32 < n {
            let a = ld(s.add(i));
            let b = ld(s.add(i + 16));
            st(d.add(i), a);
            st(d.add(i + 16), b);
            i += 32;
        }
        st(d.add(n - 32), ta);
        st(d.add(n - 16), tb);
    }

    /// Copies `n > 32` bytes back to front, the first 32 loaded first and stored last:
    /// for overlapping ranges where `d` is above `s`.
    #[inline(always)]
    unsafe fn backward(d: *mut u8, s: *const u8, n: usize) {
        let ha = ld(s);
        let hb = ld(s.add(16));
        let mut i = n;
        while i > 32 {
            let a = ld(s.add(i - 32));
            let b = ld(s.add(i - 16));
            st(d.add(i - 32), a);
            st(d.add(i - 16), b);
            i -= 32;
        }
        st(d, ha);
        st(d.add(16), hb);
    }

    /// Copies `n > LARGE` bytes front to back, with `d` below `s` or the ranges apart.
    ///
    /// `rep movsb` with a destination that is not 64-byte aligned can run many times
    /// slower (measured 20x on AMD Zen 3), and with source and destination less than 64
    /// bytes apart it is slow on Intel parts with FSRM (glibc avoids both; musl aligns the
    /// destination first too). So: ranges that close take the vector loop; otherwise the
    /// first 64 bytes are copied with vector stores, and `rep movsb` copies the rest from
    /// the first 64-byte boundary of the destination. The head's stores end at `d + 64`,
    /// at or below `s`, so they never reach a source byte not yet read.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn long_forward(d: *mut u8, s: *const u8, n: usize) {
        if (s as usize).wrapping_sub(d as usize) < 64 {
            return forward(d, s, n);
        }
        let (a, b, c, e) = (ld(s), ld(s.add(16)), ld(s.add(32)), ld(s.add(48)));
        st(d, a);
        st(d.add(16), b);
        st(d.add(32), c);
        st(d.add(48), e);
        let skip = (d as usize).wrapping_neg() & 63;
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n - skip => _,
            inout("rdi") d.add(skip) => _,
            inout("rsi") s.add(skip) => _,
            options(nostack, preserves_flags)
        );
    }

    /// On 32-bit x86 LLVM keeps `esi` for itself: long copies take the vector loop.
    #[cfg(target_arch = "x86")]
    #[inline(always)]
    unsafe fn long_forward(d: *mut u8, s: *const u8, n: usize) {
        forward(d, s, n);
    }

    #[cfg_attr(not(test), no_mangle)]
    pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
        if n <= 32 {
            small(d, s, n);
        } else if n <= LARGE {
            forward(d, s, n);
        } else {
            long_forward(d, s, n);
        }
        d
    }

    #[cfg_attr(not(test), no_mangle)]
    pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
        if n <= 32 {
            small(d, s, n);
        } else if (d as usize).wrapping_sub(s as usize) >= n {
            // `d` below `s`, or no overlap.
            if n <= LARGE {
                forward(d, s, n);
            } else {
                long_forward(d, s, n);
            }
        } else {
            backward(d, s, n);
        }
        d
    }
}

#[cfg(microimage_cmp)]
pub mod cmp {
    #[cfg(target_arch = "x86")]
    use core::arch::x86::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8};
    #[cfg(target_arch = "x86_64")]
    use core::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8};
    use core::ptr::read_unaligned as load;

    /// The mask of bytes that differ between 16 bytes at `a` and at `b` (SSE2, which every
    /// x86_64 CPU and the i686 target have).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[inline(always)]
    unsafe fn differ16(a: *const u8, b: *const u8) -> u32 {
        let x = _mm_loadu_si128(a as *const __m128i);
        let y = _mm_loadu_si128(b as *const __m128i);
        !(_mm_movemask_epi8(_mm_cmpeq_epi8(x, y)) as u32) & 0xffff
    }

    /// The same from two 8-byte words, with only the first differing byte's bit set (the
    /// caller uses only the lowest set bit).
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn differ16(a: *const u8, b: *const u8) -> u32 {
        let lo = u64::from_le(load(a as *const u64)) ^ u64::from_le(load(b as *const u64));
        if lo != 0 {
            return 1 << (lo.trailing_zeros() / 8);
        }
        let hi = u64::from_le(load(a.add(8) as *const u64))
            ^ u64::from_le(load(b.add(8) as *const u64));
        if hi != 0 {
            return 1 << (8 + hi.trailing_zeros() / 8);
        }
        0
    }

    /// The order of the first differing byte within 8 bytes at `a` and `b`, compared as
    /// big-endian numbers (the first byte weighs most).
    #[inline(always)]
    unsafe fn order8(a: *const u8, b: *const u8) -> i32 {
        let x = u64::from_be(load(a as *const u64));
        let y = u64::from_be(load(b as *const u64));
        (x > y) as i32 - (x < y) as i32
    }

    #[inline(always)]
    unsafe fn order4(a: *const u8, b: *const u8) -> i32 {
        let x = u32::from_be(load(a as *const u32));
        let y = u32::from_be(load(b as *const u32));
        (x > y) as i32 - (x < y) as i32
    }

    #[cfg_attr(not(test), no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        if n >= 16 {
            let mut i = 0;
            while i + 16 <= n {
                let d = differ16(a.add(i), b.add(i));
                if d != 0 {
                    let j = i + d.trailing_zeros() as usize;
                    return *a.add(j) as i32 - *b.add(j) as i32;
                }
                i += 16;
            }
            if i < n {
                // The last 16 bytes, overlapping what was compared: everything before
                // `i` is equal, so their first difference is the first one.
                let i = n - 16;
                let d = differ16(a.add(i), b.add(i));
                if d != 0 {
                    let j = i + d.trailing_zeros() as usize;
                    return *a.add(j) as i32 - *b.add(j) as i32;
                }
            }
            0
        } else if n >= 8 {
            match order8(a, b) {
                0 => order8(a.add(n - 8), b.add(n - 8)),
                o => o,
            }
        } else if n >= 4 {
            match order4(a, b) {
                0 => order4(a.add(n - 4), b.add(n - 4)),
                o => o,
            }
        } else {
            let mut i = 0;
            while i < n {
                let (x, y) = (*a.add(i), *b.add(i));
                if x != y {
                    return x as i32 - y as i32;
                }
                i += 1;
            }
            0
        }
    }

    /// Zero when equal, as `memcmp` (what LLVM calls for `==` on byte slices).
    #[cfg_attr(not(test), no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        memcmp(a, b, n)
    }
}
