//! # ternary-bundle
//!
//! Format, codecs and validation for *ternary bundles*: the handoff of a BitNet b1.58 model
//! (weights in {-1, 0, +1} with per-tensor, per-channel or per-group scales) from a quantizing
//! pipeline to a stage that needs gradients. A bundle is a directory holding the packed trits
//! (`ternary.safetensors`, about 1.6 bits per weight), their exact FP16 dequantization
//! (`fp16.safetensors`, a plain PyTorch state dict), the quantization metadata and SHA-256
//! checksums (`manifest.json`), and optionally a labelled validation set.
//!
//! The on-disk format is specified in `spec/FORMAT.md`; every check in this crate names the
//! numbered rule of that spec it enforces.
//!
//! Module map, in the order of the spec:
//! - [`manifest`]: `manifest.json` types, parsing and validation (rules 2.x);
//! - [`safetensors_file`]: the safetensors container (rules 3.x);
//! - [`encoding`]: the `trit5` and `trit2` codecs (rules 4.3, 4.4);
//! - [`quantize`](mod@quantize) and [`dequantize`]: the absmean quantizer and exact dequantization;
//! - [`checksum`]: SHA-256 (rules 7.x); [`le`]: little-endian element decoding;
//! - [`reader`]: opening a bundle (rules 1.x to 6.1) and borrowed tensor views;
//! - [`checks`]: the data rules that read every byte;
//! - [`writer`] and [`source`]: building a bundle atomically from a checkpoint;
//! - [`model`] and [`reference`](mod@reference): the architecture and the ndarray reference model;
//! - [`verify`], [`samples`], [`gradcheck`]: `bundle verify` and its model checks;
//! - [`demo`]: the built-in demo model;
//! - [`rules`], [`limits`], [`error`].

#![warn(missing_docs)]

pub mod arch;
pub mod checks;
pub mod checksum;
pub mod demo;
pub mod dequantize;
pub mod encoding;
pub mod error;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod gradcheck;
pub mod inspect;
pub mod le;
pub mod limits;
pub mod manifest;
pub mod mmap;
pub mod model;
pub mod names;
pub mod quantize;
pub mod reader;
pub mod reference;
pub mod requantize;
pub mod rules;
pub mod safetensors_file;
pub mod samples;
pub mod source;
pub mod verify;
pub mod writer;

pub use encoding::Encoding;
pub use error::{Error, Result, Violation};
pub use manifest::{FileRole, Manifest};
pub use quantize::{quantize, Granularity, QuantParams, QuantizedTensor};
pub use reader::{Bundle, OpenOptions};
pub use rules::Rule;
pub use writer::{write_bundle, write_bundle_with_progress, BundlePlan, WriteOptions, WriteReport};
