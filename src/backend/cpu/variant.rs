//! A switch for side-by-side experiments inside one process
//! (`examples/ab_decode.rs` flips it between blocks of tokens): code under
//! test reads [`get`] to choose between the old way (0) and the new (1).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static VARIANT: AtomicUsize = AtomicUsize::new(0);

pub fn set(v: usize) {
    VARIANT.store(v, Relaxed);
}

pub fn get() -> usize {
    VARIANT.load(Relaxed)
}
