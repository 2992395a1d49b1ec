//! Weight rows repacked eight to a group, the layout the single-token
//! kernels read fastest (`grouped_avx2`).
//!
//! In the file each row's blocks lie one after another. A group holds the
//! same blocks of eight rows, transposed by 4-byte words: for block `i`,
//! word `w` of rows 0..8 lie side by side (32 bytes, row r at bytes 4r..4r+4),
//! then word `w + 1`, and so on; the `block_bytes % 4` bytes left at a
//! block's end (Q6_K's scale) follow for the eight rows in row order. One
//! 32-byte load then holds the same four bytes of all eight rows, which is
//! what lets a kernel keep one row per lane: no sums across lanes, and each
//! scale spread by one in-lane shuffle. The bytes are the file's, moved: a
//! group reads exactly what its rows read.

use super::GgmlType;

/// Rows per group.
pub const GROUP_ROWS: usize = 8;

/// Bytes of one block of a group's eight rows.
pub fn group_block_bytes(ty: GgmlType) -> usize {
    GROUP_ROWS * ty.block_bytes()
}

/// Where byte `k` of row `r`'s block goes in the group's block.
#[inline]
pub(super) fn place(block_bytes: usize, r: usize, k: usize) -> usize {
    let words = block_bytes / 4;
    if k < 4 * words {
        32 * (k / 4) + 4 * r + k % 4
    } else {
        let tail = block_bytes % 4;
        32 * words + tail * r + (k - 4 * words)
    }
}

/// `n_rows` rows (a multiple of [`GROUP_ROWS`]) of `ty`, laid end to end in
/// `rows`, in the grouped layout (same length), a byte at a time (the
/// reference for `group_rows`).
pub fn group_rows_portable(ty: GgmlType, rows: &[u8], n_rows: usize) -> Vec<u8> {
    assert!(n_rows.is_multiple_of(GROUP_ROWS) && rows.len().is_multiple_of(n_rows));
    let bb = ty.block_bytes();
    let row_bytes = rows.len() / n_rows;
    assert!(row_bytes.is_multiple_of(bb), "partial block");
    let mut out = vec![0u8; rows.len()];
    for (g, dst) in out.chunks_exact_mut(GROUP_ROWS * row_bytes).enumerate() {
        for (i, dst) in dst.chunks_exact_mut(GROUP_ROWS * bb).enumerate() {
            for r in 0..GROUP_ROWS {
                let src = &rows[(g * GROUP_ROWS + r) * row_bytes + i * bb..][..bb];
                for (k, &b) in src.iter().enumerate() {
                    dst[place(bb, r, k)] = b;
                }
            }
        }
    }
    out
}

/// Row `r` of one group back in the file's layout (`out`: one row).
pub fn ungroup_row(ty: GgmlType, group: &[u8], r: usize, out: &mut [u8]) {
    let bb = ty.block_bytes();
    assert!(r < GROUP_ROWS && group.len() == GROUP_ROWS * out.len());
    assert!(out.len().is_multiple_of(bb), "partial block");
    for (src, dst) in group
        .chunks_exact(GROUP_ROWS * bb)
        .zip(out.chunks_exact_mut(bb))
    {
        for (k, d) in dst.iter_mut().enumerate() {
            *d = src[place(bb, r, k)];
        }
    }
}
