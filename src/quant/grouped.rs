//! Weight rows repacked eight to a group, the layout the single-token
//! kernels read fastest (`grouped_avx2`).
//!
//! In the file each row's blocks lie one after another. A group holds the
//! same blocks of eight rows, transposed by 4-byte words: for block `i`,
//! word `w` of rows 0..8 lie side by side (32 bytes, row r at bytes 4r..4r+4),
//! then word `w + 1`, and so on; the `block_bytes % 4` bytes left at a
//! block's end (Q6_K's scale, the legacy formats' `d`) follow for the eight
//! rows in row order. One 32-byte load then holds the same four bytes of all
//! eight rows, which is what lets a kernel keep one row per lane: no sums
//! across lanes, and each scale spread by one in-lane shuffle.
//!
//! Two changes of order make the legacy 32-element formats fit: a block's
//! scales (`d`, and `m`), first in the file, go last ([`head_bytes`]), so that
//! the values' words line up whatever the block's size; and the 32 fifth
//! bits of Q5_0/Q5_1 are reordered within their word ([`spread_fifth_bits`])
//! so that a shift puts each value's bit in place. The bytes are the file's,
//! moved: a group reads exactly what its rows read.

use super::GgmlType;

/// Rows per group.
pub const GROUP_ROWS: usize = 8;

/// Bytes of one block of a group's eight rows.
pub fn group_block_bytes(ty: GgmlType) -> usize {
    GROUP_ROWS * ty.block_bytes()
}

/// Bytes at the start of a block in the file that the grouped layout puts
/// at its end: the legacy formats' f16 scale, and min.
pub(super) fn head_bytes(ty: GgmlType) -> usize {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => 2,
        Q4_1 | Q5_1 => 4,
        _ => 0,
    }
}

/// Whether word 0 of the grouped block holds fifth bits, reordered.
pub(super) fn has_fifth_bits(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1)
}

/// Where byte `k` (in the file) of row `r`'s block goes in the group's block.
#[inline]
pub(super) fn place(ty: GgmlType, r: usize, k: usize) -> usize {
    let bb = ty.block_bytes();
    let k = (k + bb - head_bytes(ty)) % bb;
    let words = bb / 4;
    if k < 4 * words {
        32 * (k / 4) + 4 * r + k % 4
    } else {
        let tail = bb % 4;
        32 * words + tail * r + (k - 4 * words)
    }
}

/// Fifth bit `16h + 4m + k` of a block (value `16h + 4m + k`: half h, word
/// m of the nibbles, byte k) goes to bit `8k + 4h + m`: then byte k of the
/// word holds the fifth bits of byte k of every nibble word, and shifting
/// the word left by `4 - m` (low nibbles) or right by `m` (high) brings
/// word m's to bit 4 of each byte.
const fn moved_bit(i: usize) -> usize {
    8 * (i % 4) + 4 * (i / 16) + i / 4 % 4
}

/// The inverse of [`moved_bit`].
const fn restored_bit(j: usize) -> usize {
    16 * (j / 4 % 2) + 4 * (j % 4) + j / 8
}

/// For each byte of a word and each value of that byte, the bits it sets
/// in the reordered word (`RESTORE`: in the file's word).
const fn bit_tables<const RESTORE: bool>() -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut byte = 0;
    while byte < 4 {
        let mut v = 0;
        while v < 256 {
            let mut bit = 0;
            while bit < 8 {
                if (v >> bit) & 1 == 1 {
                    let from = 8 * byte + bit;
                    let to = if RESTORE {
                        restored_bit(from)
                    } else {
                        moved_bit(from)
                    };
                    t[byte][v] |= 1 << to;
                }
                bit += 1;
            }
            v += 1;
        }
        byte += 1;
    }
    t
}

static SPREAD: [[u32; 256]; 4] = bit_tables::<false>();
static GATHER: [[u32; 256]; 4] = bit_tables::<true>();

fn permute_bits(table: &[[u32; 256]; 4], w: u32) -> u32 {
    let b = w.to_le_bytes();
    table[0][b[0] as usize]
        | table[1][b[1] as usize]
        | table[2][b[2] as usize]
        | table[3][b[3] as usize]
}

/// A Q5 block's fifth bits (`qh`, little-endian) in the grouped order.
pub(super) fn spread_fifth_bits(qh: u32) -> u32 {
    permute_bits(&SPREAD, qh)
}

/// The inverse of [`spread_fifth_bits`].
pub(super) fn gather_fifth_bits(word: u32) -> u32 {
    permute_bits(&GATHER, word)
}

/// The fifth-bit word of row `r` in the group's block at `block` rewritten
/// by `f`.
fn map_fifth_bits(block: &mut [u8], r: usize, f: fn(u32) -> u32) {
    let at = 4 * r;
    let w = u32::from_le_bytes(block[at..at + 4].try_into().expect("4 bytes"));
    block[at..at + 4].copy_from_slice(&f(w).to_le_bytes());
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
                    dst[place(ty, r, k)] = b;
                }
                if has_fifth_bits(ty) {
                    map_fifth_bits(dst, r, spread_fifth_bits);
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
    let mut block = vec![0u8; GROUP_ROWS * bb];
    for (src, dst) in group
        .chunks_exact(GROUP_ROWS * bb)
        .zip(out.chunks_exact_mut(bb))
    {
        block.copy_from_slice(src);
        if has_fifth_bits(ty) {
            map_fifth_bits(&mut block, r, gather_fifth_bits);
        }
        for (k, d) in dst.iter_mut().enumerate() {
            *d = block[place(ty, r, k)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifth_bits_come_back_and_land_where_the_kernel_shifts_them() {
        for i in 0..32 {
            assert_eq!(restored_bit(moved_bit(i)), i);
        }
        let mut x = 0x9e37_79b9u32;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            assert_eq!(gather_fifth_bits(spread_fifth_bits(x)), x);
        }
        // Value 4m + k's bit (low nibbles) and 16 + 4m + k's (high), shifted
        // as the kernel shifts them, at bit 4 of byte k.
        for m in 0..4 {
            for k in 0..4 {
                let lo = spread_fifth_bits(1 << (4 * m + k)) << (4 - m);
                let hi = spread_fifth_bits(1 << (16 + 4 * m + k)) >> m;
                assert_eq!(lo & 0x1010_1010, 0x10 << (8 * k), "low m={m} k={k}");
                assert_eq!(hi & 0x1010_1010, 0x10 << (8 * k), "high m={m} k={k}");
            }
        }
    }
}
