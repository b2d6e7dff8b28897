//! # ternary-bundle
//!
//! Format, codecs and validation for *ternary bundles*: the handoff of a BitNet b1.58 model
//! (weights in {-1, 0, +1} with per-tensor, per-channel or per-group scales) from a quantizing
//! pipeline to a stage that needs gradients. A bundle is a directory holding the packed trits
//! (`ternary.safetensors`, about 1.6 bits per weight), their exact FP16 dequantization
//! (`fp16.safetensors`, a plain PyTorch state dict), the quantization metadata and SHA-256
//! checksums (`manifest.json`), and optionally a labelled validation set with the original
//! model's predictions.
//!
//! The on-disk format is specified in `spec/FORMAT.md`; every check in this crate names the
//! numbered rule of that spec it enforces. The modules follow the pipeline:
//! - [`format`](mod@format): what the spec defines, and nothing that does I/O: the numbered rules, limits,
//!   names, the manifest, the safetensors container, the trit encodings, checksums and the
//!   tensor layouts every file must have;
//! - [`quant`]: the absmean quantizer and exact dequantization (spec sections 7 and 8);
//! - [`read`]: opening a bundle (the validation order of spec section 11), borrowed tensor views,
//!   the data checks that read every byte, and `inspect`;
//! - [`source`]: where `create` takes weights and labelled data from;
//! - [`model`]: the architecture vocabulary, the reference model and its f64 backward pass;
//! - [`write`](mod@write): building bundles atomically (`create`, the demo, `requantize`, `export`);
//! - [`create`]: what `bundle create` reads, decided in one place (which source, settings,
//!   original model, carried files, validation set);
//! - [`hf`]: Hugging Face's formats, in and out: packed BitNet checkpoints, online-quantized
//!   master weights, tokenizers, and model directories that transformers loads (spec section 18);
//! - [`gguf`]: llama.cpp's GGUF files written from a decoder bundle (TQ1_0 / TQ2_0 exactly);
//! - [`verify`]: `bundle verify`, the CI gate;
//! - [`assess`]: `bundle assess`, the receiving stage's edge-of-chaos assessment;
//! - [`report`]: `bundle report`, one self-contained HTML page of all of it;
//! - [`error`]: the error type every module returns.
//!
//! The `bundle` binary (`src/main.rs`, `src/cli/`) only parses arguments and prints.
//! `ARCHITECTURE.md` has the module tree, the data flow of `create` and `verify`, and where to
//! add a model family, an encoding or a check.

#![warn(missing_docs)]

pub mod assess;
pub mod create;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod gguf;
pub mod hf;
pub mod model;
pub mod quant;
pub mod read;
pub mod report;
pub mod run;
pub mod signing;
pub mod source;
pub mod verify;
pub mod write;

pub use error::{Error, Result, Violation};
pub use format::encoding::Encoding;
pub use format::manifest::{FileRole, Manifest};
pub use format::quantization::{Granularity, QuantParams};
pub use format::rules::Rule;
pub use quant::quantize::{quantize, QuantizedTensor};
pub use read::{Bundle, OpenOptions};
pub use write::bundle::{
    write_bundle, write_bundle_qat, write_bundle_with_progress, WriteOptions, WriteReport,
};
pub use write::plan::BundlePlan;
