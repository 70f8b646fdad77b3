//! Buffers the executor owns: cache-line-aligned heap memory (large ones mapped from the
//! kernel), or (for tests) memory flush against an inaccessible page so that any access outside
//! the buffer faults at once.

/// Where buffers sit relative to a PROT_NONE guard page.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Guard {
    /// Ordinary heap memory.
    #[default]
    None,
    /// Each buffer ends exactly where an inaccessible page begins (catches overruns).
    After,
    /// Each buffer starts exactly where an inaccessible page ends (catches underruns).
    Before,
}

/// A zero-initialised f32 buffer that never moves or resizes.
pub(crate) struct Buffer {
    ptr: *mut f32,
    len: usize,
    storage: Storage,
}

enum Storage {
    Heap(std::alloc::Layout),
    Mapped { base: *mut libc::c_void, size: usize },
}

const PAGE: usize = 4096;

/// Bytes to which a heap buffer's start is aligned: a cache line, so that a kernel's 64-byte
/// (f32x16) loads of a whole line, and its 32-byte ones, never straddle two lines (the
/// allocator's 16 bytes left every f32x16 load of an activation split across two).
pub(crate) const ALIGN: usize = 64;

/// Unguarded buffers of at least this many bytes are mapped straight from the kernel
/// (page-aligned, each page zeroed when first touched), as the allocator's zeroed allocations of
/// that size are: an aligned allocation writes its zeros at once, which doubled ResNet-50's
/// compile time (2 GB of activations) until they were mapped.
const MAP_FROM: usize = 128 * 1024;

impl Buffer {
    /// `len` zeros, placed as `guard` asks (unguarded: [`ALIGN`]ed, and mapped from
    /// [`MAP_FROM`] bytes).
    pub(crate) fn zeroed(len: usize, guard: Guard) -> Buffer {
        if guard == Guard::None && 4 * len >= MAP_FROM {
            let size = (4 * len).div_ceil(PAGE) * PAGE;
            let base = map_zeroed(size);
            return Buffer { ptr: base as *mut f32, len, storage: Storage::Mapped { base, size } };
        }
        if guard == Guard::None {
            let layout = std::alloc::Layout::from_size_align((4 * len).max(ALIGN), ALIGN).expect("a buffer's size");
            // SAFETY: the layout's size is non-zero.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
            if ptr.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            return Buffer { ptr, len, storage: Storage::Heap(layout) };
        }
        let bytes = len * 4;
        let size = (bytes.div_ceil(PAGE) + 2) * PAGE;
        let base = map_zeroed(size);
        // SAFETY: the pointer arithmetic stays inside the mapping, and the guard pages are its
        // first and last page.
        unsafe {
            let bytes_ptr = base as *mut u8;
            assert_eq!(libc::mprotect(base, PAGE, libc::PROT_NONE), 0);
            assert_eq!(libc::mprotect(bytes_ptr.add(size - PAGE) as *mut libc::c_void, PAGE, libc::PROT_NONE), 0);
            let start = if guard == Guard::After { size - PAGE - bytes } else { PAGE };
            Buffer { ptr: bytes_ptr.add(start) as *mut f32, len, storage: Storage::Mapped { base, size } }
        }
    }

    /// Its length in f32s.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *mut f32 {
        self.ptr
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `ptr` is valid for `len` initialised f32s for the buffer's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// A fresh anonymous mapping of `size` bytes (a multiple of the page), zero-filled by the kernel
/// as its pages are first touched; the buffer holding it unmaps it when dropped.
fn map_zeroed(size: usize) -> *mut libc::c_void {
    // SAFETY: a new private anonymous mapping aliases nothing.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(size, PAGE).expect("a page layout"));
    }
    base
}

impl Drop for Buffer {
    fn drop(&mut self) {
        match self.storage {
            // SAFETY: freeing the allocation `zeroed` made with this layout.
            Storage::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr as *mut u8, layout) },
            // SAFETY: unmapping the region this buffer mapped.
            Storage::Mapped { base, size } => unsafe {
                libc::munmap(base, size);
            },
        }
    }
}
