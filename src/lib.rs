//! tandem: LLM inference on your own hardware.
//!
//! The data path, one module per stage:
//! `catalog` (where model files come from) → `gguf` (the file) → `tokenizer`
//! (text ↔ ids, chat templates) → `kv` (paged cache blocks) → `model` (one file
//! per architecture, written against `backend`'s op set) → `sampler` →
//! `engine` (the generation loop, stop conditions) → `cli` (the edge).

pub mod backend;
pub mod bench;
pub mod catalog;
pub mod engine;
pub mod gguf;
pub mod kv;
pub mod model;
pub mod quant;
pub mod rng;
pub mod sampler;
pub mod server;
pub mod spec;
pub mod synth;
pub mod tokenizer;
pub mod vecmath;
