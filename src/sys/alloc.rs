//! The binary's global allocator: small allocations from a fixed arena, the rest from the
//! system allocator.
//!
//! A plugin run is short and allocates little, but musl's allocator gives every emptied group
//! of small slots back to the kernel at once: a bridge ADD made 20 `mmap` and 17 `munmap` calls
//! of 4 KiB (of its 210 system calls) for buffers of a few hundred bytes. Here allocations of at
//! most [`SMALL`] bytes are carved from a static arena of [`ARENA`] bytes by bumping an offset
//! (lock-free). Only the most recent allocation is ever taken back: freeing it lowers the offset
//! again, and growing or shrinking it moves the offset in place (a `String` or `Vec` being built,
//! the usual last allocation, grows without a copy). Freeing any other is a no-op. So a run
//! touches fewer pages of the arena (each first touch is a page fault) and copies less. When the
//! arena is used up (a long-running dhcp daemon, a huge config), everything goes to the system
//! allocator, as before. The arena lives in `.bss`: it costs no file size and only the pages
//! touched count as memory.
//!
//! Allocations of [`BIG`] bytes or more are their own anonymous mapping. The kernel hands such
//! pages out zeroed and backs them only where they are written, so a zeroed buffer (a 32 KiB
//! netlink receive buffer, of which a reply uses one page) costs no memset and no page fault
//! for the pages never used: musl's calloc cleared each one (8 faults a buffer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Arena size.
pub const ARENA: usize = 128 * 1024;
/// Largest allocation served from the arena.
pub const SMALL: usize = 4 * 1024;
/// Allocations of at least this size are mapped on their own (see the module doc).
pub const BIG: usize = 32 * 1024;
/// Every arena allocation is aligned at least this much, as malloc's are.
const MIN_ALIGN: usize = 16;

#[repr(C, align(4096))]
struct Buf(UnsafeCell<[u8; ARENA]>);

// SAFETY: the bytes are handed out in disjoint ranges (the offset only grows, by compare and
// swap), so no two threads ever get the same byte
unsafe impl Sync for Buf {}

static BUF: Buf = Buf(UnsafeCell::new([0; ARENA]));
/// The first free byte of the arena.
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Bytes below this offset may have been handed out (and written) before; those above are still
/// the zeroes of `.bss`, which a zeroed allocation need not clear again.
static TOUCHED: AtomicUsize = AtomicUsize::new(0);

/// The allocator (installed with `#[global_allocator]` in the binary).
pub struct Arena;

impl Arena {
    fn base() -> *mut u8 {
        BUF.0.get().cast::<u8>()
    }

    /// Offset range for `layout` in the arena, reserved; None when it does not fit.
    fn reserve(layout: Layout) -> Option<usize> {
        if layout.size() > SMALL || layout.align() > 4096 {
            return None;
        }
        // at least malloc's 16: code in dependencies (nix's control-message buffer, a Vec<u8>
        // read as a cmsghdr) relies on what malloc gives, not on the layout it asks for
        let align = layout.align().max(MIN_ALIGN);
        let mut cur = NEXT.load(Ordering::Relaxed);
        loop {
            let start = cur.checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(layout.size())?;
            if end > ARENA {
                return None;
            }
            // Acquire: a range taken back by another thread was last written before its release
            match NEXT.compare_exchange_weak(cur, end, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(start),
                Err(now) => cur = now,
            }
        }
    }

    /// Zero what of the fresh arena range `start..end` may have been handed out before.
    ///
    /// # Safety
    /// `start..end` is a range this thread has just reserved (so no one else uses it).
    unsafe fn clear_touched(start: usize, end: usize) {
        let touched = TOUCHED.fetch_max(end, Ordering::AcqRel).min(end);
        if touched > start {
            // SAFETY: start < touched ≤ end ≤ ARENA, a range the caller owns
            unsafe { std::ptr::write_bytes(Self::base().add(start), 0, touched - start) };
        }
    }

    /// Mark the arena bytes up to `end` as handed out.
    fn touch(end: usize) {
        TOUCHED.fetch_max(end, Ordering::AcqRel);
    }

    /// Take back the arena range `start..end` if it is the last one handed out (no-op otherwise).
    fn give_back(start: usize, end: usize) {
        // Release: our writes to the range come before whoever reserves it next
        let _ = NEXT.compare_exchange(end, start, Ordering::Release, Ordering::Relaxed);
    }

    /// Move the end of the last arena range from `old_end` to `new_end` (≤ ARENA); false when the
    /// range is not the last one.
    fn resize_last(old_end: usize, new_end: usize) -> bool {
        if new_end > ARENA {
            return false;
        }
        let moved = NEXT.compare_exchange(old_end, new_end, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if moved {
            Self::touch(new_end);
        }
        moved
    }

    fn is_big(layout: &Layout) -> bool {
        layout.size() >= BIG && layout.align() <= 4096
    }

    /// A fresh private anonymous mapping of `size` bytes (zeroed); null on failure.
    fn map(size: usize) -> *mut u8 {
        use nix::libc::{mmap, MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE};
        // SAFETY: asks for new memory at an address the kernel picks; nothing existing is touched
        let p = unsafe { mmap(std::ptr::null_mut(), size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) };
        if p == MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    /// A big layout's own mapping, arena bytes (zero: never handed out before), or the system
    /// allocator's memory (cleared by it when `zeroed`).
    ///
    /// # Safety
    /// `layout` has a non-zero size, as `GlobalAlloc::alloc` requires.
    unsafe fn get(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        if Self::is_big(&layout) {
            return Self::map(layout.size());
        }
        match Self::reserve(layout) {
            Some(start) => {
                let end = start + layout.size();
                if zeroed {
                    // SAFETY: start..end was just reserved by this thread
                    unsafe { Self::clear_touched(start, end) };
                } else {
                    Self::touch(end);
                }
                // SAFETY: start + size ≤ ARENA, so the pointer stays inside BUF
                unsafe { Self::base().add(start) }
            }
            // SAFETY: the caller's layout contract is passed on unchanged
            None if zeroed => unsafe { System.alloc_zeroed(layout) },
            // SAFETY: as above
            None => unsafe { System.alloc(layout) },
        }
    }

    fn owns(ptr: *mut u8) -> bool {
        let (p, b) = (ptr as usize, Self::base() as usize);
        p >= b && p < b + ARENA
    }

    /// The offset of an arena pointer.
    fn offset(ptr: *mut u8) -> usize {
        ptr as usize - Self::base() as usize
    }
}

// SAFETY: alloc returns a fresh, exclusively reserved, suitably aligned range of the static
// arena (alignment ≤ the arena's 4096), a fresh page-aligned mapping (layouts of BIG bytes or
// more, alignment ≤ 4096), or what the system allocator returns; dealloc unmaps exactly the
// big layouts, passes to the system allocator exactly the other pointers that did not come
// from the arena, and takes back an arena range only while it is the last one (the offset is
// moved by compare and swap from its end, so no range handed out later is affected). A zeroed
// arena range is cleared where it may have been handed out before (below TOUCHED).
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on unchanged
        unsafe { self.get(layout, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as alloc
        unsafe { self.get(layout, true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::is_big(&layout) {
            // SAFETY: a big layout's pointer is the start of its own mapping of that size
            unsafe { nix::libc::munmap(ptr.cast(), layout.size()) };
        } else if !Self::owns(ptr) {
            // SAFETY: not an arena pointer, so it came from System.alloc with this layout
            unsafe { System.dealloc(ptr, layout) }
        } else {
            let start = Self::offset(ptr);
            Self::give_back(start, start + layout.size());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if Self::owns(ptr) && new_size <= SMALL {
            let (start, old_size) = (Self::offset(ptr), layout.size());
            // in place: the last range grows or shrinks; any other shrinks without moving
            if Self::resize_last(start + old_size, start + new_size) || new_size <= old_size {
                return ptr;
            }
        }
        let system = |l: &Layout| !Self::is_big(l);
        if !Self::owns(ptr) && system(&layout) && system(&new_layout) && new_size > SMALL {
            // SAFETY: a system pointer staying between SMALL and BIG stays with the system allocator
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: as alloc
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both ranges are valid for min(old, new) bytes and do not overlap (the new
            // one is freshly reserved)
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: ptr was allocated by us with `layout`
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_from_the_arena_aligned_and_disjoint_large_and_overflow_from_the_system() {
        let a = Arena;
        // SAFETY: (test) valid non-zero layouts; every pointer is written within its size and
        // freed with its layout
        unsafe {
            let l8 = Layout::from_size_align(24, 8).unwrap();
            let l64 = Layout::from_size_align(100, 64).unwrap();
            let p = a.alloc(l8);
            let q = a.alloc(l64);
            let b = a.alloc(Layout::from_size_align(3, 1).unwrap());
            assert!(Arena::owns(p) && Arena::owns(q) && Arena::owns(b));
            assert_eq!((p as usize % MIN_ALIGN, b as usize % MIN_ALIGN), (0, 0), "malloc's alignment even for bytes");
            a.dealloc(b, Layout::from_size_align(3, 1).unwrap());
            assert_eq!(q as usize % 64, 0);
            assert!(q as usize >= p as usize + 24 || p as usize >= q as usize + 100);
            std::ptr::write_bytes(p, 0xaa, 24);
            std::ptr::write_bytes(q, 0x55, 100);
            assert_eq!(*p.add(23), 0xaa);
            // growing copies the bytes; past SMALL it moves to the system allocator
            let r = a.realloc(p, l8, 48);
            assert!(Arena::owns(r) && *r.add(23) == 0xaa);
            let big = a.realloc(r, Layout::from_size_align(48, 8).unwrap(), SMALL + 1);
            assert!(!Arena::owns(big) && *big.add(23) == 0xaa);
            a.dealloc(big, Layout::from_size_align(SMALL + 1, 8).unwrap());
            a.dealloc(q, l64);
            let large = Layout::from_size_align(SMALL + 1, 8).unwrap();
            let s = a.alloc(large);
            assert!(!s.is_null() && !Arena::owns(s));
            a.dealloc(s, large);
        }
        // big layouts are mappings of their own: zeroed, kept across a realloc in both directions
        // SAFETY: (test) valid layouts; every pointer is written within its size and freed with
        // its layout
        unsafe {
            let lb = Layout::from_size_align(BIG, 8).unwrap();
            let z = a.alloc_zeroed(lb);
            assert!(!z.is_null() && !Arena::owns(z) && (z as usize).is_multiple_of(4096));
            assert!((0..BIG).all(|i| *z.add(i) == 0));
            *z.add(BIG - 1) = 7;
            let grown = a.realloc(z, lb, 3 * BIG);
            assert!(*grown.add(BIG - 1) == 7 && *grown.add(3 * BIG - 1) == 0);
            let shrunk = a.realloc(grown, Layout::from_size_align(3 * BIG, 8).unwrap(), BIG - 1);
            assert!(*shrunk.add(BIG - 2) == 0 && !shrunk.is_null());
            a.dealloc(shrunk, Layout::from_size_align(BIG - 1, 8).unwrap());
            // a system pointer growing past BIG moves to a mapping; the small zeroed ones are zero
            let ls = Layout::from_size_align(SMALL + 10, 8).unwrap();
            let p = a.alloc(ls);
            std::ptr::write_bytes(p, 0x11, SMALL + 10);
            let q = a.realloc(p, ls, BIG + 1);
            assert!(*q.add(SMALL + 9) == 0x11);
            a.dealloc(q, Layout::from_size_align(BIG + 1, 8).unwrap());
            let l = Layout::from_size_align(64, 8).unwrap();
            let r = a.alloc_zeroed(l);
            assert!((0..64).all(|i| *r.add(i) == 0));
            a.dealloc(r, l);
        }
        // the last range is taken back: the next allocation reuses it, and a zeroed one finds
        // it cleared; growing the last range keeps its place and bytes, another one moves
        // SAFETY: (test) valid layouts; every pointer is written within its size and freed with
        // its layout
        unsafe {
            let l = Layout::from_size_align(40, 8).unwrap();
            let p = a.alloc(l);
            std::ptr::write_bytes(p, 0xee, 40);
            a.dealloc(p, l);
            let z = a.alloc_zeroed(l);
            assert_eq!(z, p, "the last range is reused");
            assert!((0..40).all(|i| *z.add(i) == 0), "a reused range is zeroed for alloc_zeroed");
            *z.add(39) = 9;
            let g = a.realloc(z, l, 200);
            assert_eq!(g, z, "the last range grows in place");
            assert_eq!(*g.add(39), 9);
            let l200 = Layout::from_size_align(200, 8).unwrap();
            let other = a.alloc(l);
            let moved = a.realloc(g, l200, 400);
            assert!(moved != g && Arena::owns(moved) && *moved.add(39) == 9, "a range that is not the last moves");
            // freeing a range that is not the last takes nothing back
            let next = NEXT.load(Ordering::Relaxed);
            a.dealloc(other, l);
            assert_eq!(NEXT.load(Ordering::Relaxed), next);
            // shrinking in place keeps the pointer
            let l400 = Layout::from_size_align(400, 8).unwrap();
            let small = a.realloc(moved, l400, 16);
            assert_eq!(small, moved);
            a.dealloc(small, Layout::from_size_align(16, 8).unwrap());
        }
        // a full arena: reserve() past the end refuses, the offset never passes ARENA, and
        // allocations go to the system (one test: the arena is shared by the test threads)
        let l = Layout::from_size_align(SMALL, 8).unwrap();
        for _ in 0..(ARENA / SMALL + 2) {
            let _ = Arena::reserve(l);
        }
        assert!(Arena::reserve(l).is_none());
        assert!(NEXT.load(Ordering::Relaxed) <= ARENA);
        let a = Arena;
        // SAFETY: (test) valid layout, freed with it
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null() && !Arena::owns(p));
            a.dealloc(p, l);
        }
    }
}
