//! Memory for weights repacked at load (`quant::grouped`), carved from
//! 2 MiB-aligned chunks that the kernel is asked to back with huge pages.
//!
//! A token reads every byte of the weights, and in 4 KiB pages a GiB is
//! 262,144 TLB entries per token. A mapping of its own per tensor gets huge
//! pages only for its aligned interior: most of a 1.5B model's attention
//! matrices (1.3 MiB and 0.2 MiB) and the edges of the others stayed in
//! 4 KiB pages (684 of 935 MiB huge). Carved from shared chunks, all of them
//! are (kernel notes, twenty-first session: decode +2%).

use std::sync::{Arc, Mutex, Weak};

/// Huge page size on x86-64 Linux.
const HUGE: usize = 2 << 20;

/// Bytes of a chunk that weights share; a larger weight gets one of its own.
const CHUNK: usize = 64 << 20;

/// Alignment of each piece within a chunk: a cache line.
const ALIGN: usize = 64;

/// One anonymous mapping; `base` is its first 2 MiB boundary.
struct Chunk {
    _map: memmap2::MmapMut,
    base: *mut u8,
    len: usize,
}

// SAFETY: the chunk hands out disjoint pieces (`Piece`), each written only
// through the one `Piece` that owns it; the mapping lives as long as any.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(len: usize) -> std::io::Result<Chunk> {
        let len = len.next_multiple_of(HUGE);
        // One huge page more than needed, to start at a boundary; the part
        // before it is never touched, so never resident.
        let mut map = memmap2::MmapMut::map_anon(len + HUGE)?;
        let skip = (map.as_ptr() as usize).next_multiple_of(HUGE) - map.as_ptr() as usize;
        // A hint: without huge pages the memory still works.
        let _ = map.advise_range(memmap2::Advice::HugePage, skip, len);
        // SAFETY: skip + len ≤ the mapping's length.
        let base = unsafe { map.as_mut_ptr().add(skip) };
        Ok(Chunk {
            _map: map,
            base,
            len,
        })
    }
}

/// A weight's bytes in a chunk.
pub struct Piece {
    chunk: Arc<Chunk>,
    at: usize,
    len: usize,
}

impl Piece {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: at + len ≤ the chunk's length, and this range is only
        // written through `bytes_mut`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.chunk.base.add(self.at), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; pieces of a chunk do not overlap.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.base.add(self.at), self.len) }
    }
}

/// Where pieces come from: the chunk being carved and how much of it is
/// taken. Weak: a chunk whose pieces have all been dropped (an unloaded
/// model) is unmapped.
struct Arena {
    current: Mutex<Option<(Weak<Chunk>, usize)>>,
}

impl Arena {
    const fn new() -> Arena {
        Arena {
            current: Mutex::new(None),
        }
    }

    fn alloc(&self, len: usize) -> std::io::Result<Piece> {
        if len > CHUNK / 2 {
            return Ok(Piece {
                chunk: Arc::new(Chunk::new(len)?),
                at: 0,
                len,
            });
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((weak, used)) = current.as_mut() {
            if let Some(chunk) = weak.upgrade() {
                let at = used.next_multiple_of(ALIGN);
                if at + len <= chunk.len {
                    *used = at + len;
                    return Ok(Piece { chunk, at, len });
                }
            }
        }
        let chunk = Arc::new(Chunk::new(CHUNK)?);
        *current = Some((Arc::downgrade(&chunk), len));
        Ok(Piece { chunk, at: 0, len })
    }
}

impl Arena {
    /// Give back the pages of the chunk being carved past its last piece
    /// (from the next 4 KiB boundary). A model's last chunk is rarely full
    /// (SmolLM2's weights fill 63.3 of 64 MiB), and the huge page its end
    /// falls in was resident whole. A piece carved there later faults in
    /// fresh zeroed pages.
    fn release_unused_tail(&self) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some((weak, used)) = current.as_ref() else {
            return;
        };
        let Some(chunk) = weak.upgrade() else {
            return;
        };
        let from = used.next_multiple_of(4096);
        if from < chunk.len {
            // SAFETY: [from, len) of the chunk is in no piece (pieces are
            // carved below `used` while this lock is held), and an anonymous
            // private mapping reads zeros after MADV_DONTNEED. Advice: a
            // failure leaves the pages resident.
            unsafe {
                libc::madvise(
                    chunk.base.add(from).cast(),
                    chunk.len - from,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

static ARENA: Arena = Arena::new();

/// See [`Arena::release_unused_tail`]: called once a model is loaded.
pub fn release_unused_tail() {
    ARENA.release_unused_tail();
}

/// `len` zeroed bytes, on huge pages where the kernel has them.
pub fn alloc(len: usize) -> std::io::Result<Piece> {
    ARENA.alloc(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_disjoint_aligned_and_hold_what_was_written() {
        let arena = Arena::new();
        let sizes = [1000, 3 << 20, 64, 40 << 20, 5, 31 << 20, 31 << 20];
        let mut pieces: Vec<Piece> = sizes.iter().map(|&n| arena.alloc(n).unwrap()).collect();
        for (i, p) in pieces.iter_mut().enumerate() {
            assert_eq!(p.chunk.base as usize % HUGE, 0);
            assert_eq!(p.at % ALIGN, 0);
            assert!(p.bytes().iter().all(|&b| b == 0), "fresh memory is zeroed");
            p.bytes_mut().fill(i as u8 + 1);
        }
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(p.bytes().len(), sizes[i]);
            assert!(p.bytes().iter().all(|&b| b == i as u8 + 1), "piece {i}");
        }
        // The small ones share a chunk; the one over half a chunk has its
        // own; the last does not fit in what is left and starts another.
        let same = |a: usize, b: usize| Arc::ptr_eq(&pieces[a].chunk, &pieces[b].chunk);
        assert!(same(0, 1) && same(1, 2) && same(2, 4) && same(4, 5));
        assert!(!same(0, 3) && pieces[3].at == 0);
        assert!(!same(0, 6) && pieces[6].at == 0);
    }

    #[test]
    fn pieces_keep_their_bytes_and_later_ones_are_zeroed_after_the_tail_is_released() {
        let arena = Arena::new();
        let mut a = arena.alloc(5000).unwrap();
        a.bytes_mut().fill(7);
        arena.release_unused_tail();
        assert!(a.bytes().iter().all(|&b| b == 7));
        let mut b = arena.alloc(3 << 20).unwrap();
        assert!(Arc::ptr_eq(&a.chunk, &b.chunk));
        assert!(
            b.bytes().iter().all(|&x| x == 0),
            "released pages read as zeros"
        );
        b.bytes_mut().fill(9);
        assert!(a.bytes().iter().all(|&x| x == 7) && b.bytes().iter().all(|&x| x == 9));
    }

    #[test]
    fn a_chunk_whose_pieces_are_gone_is_unmapped_and_not_carved_again() {
        let arena = Arena::new();
        let p = arena.alloc(100).unwrap();
        let weak = Arc::downgrade(&p.chunk);
        drop(p);
        assert!(weak.upgrade().is_none());
        let q = arena.alloc(100).unwrap();
        assert_eq!((q.at, q.bytes().len()), (0, 100));
    }
}
