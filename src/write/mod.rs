//! Building bundles: the atomic writer ([`bundle`]), the architecture inferred from a checkpoint
//! ([`arch`]), the built-in demo models ([`demo`], the language model [`demo_lm`]), re-quantization after fine-tuning
//! ([`requantize`]) and the export of the dequantized weights ([`export`]).

pub mod arch;
pub mod bundle;
pub mod demo;
pub mod demo_lm;
pub mod export;
pub mod plan;
pub mod requantize;
pub mod safetensors;
pub(crate) mod staging;
