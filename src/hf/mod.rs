//! Hugging Face's formats, in and out (spec section 18): packed BitNet checkpoints and
//! online-quantized master weights read without re-quantizing them, tokenizers carried with the
//! model, and model directories that transformers loads written back from a bundle. Each format
//! is a module; they share the model-directory reader of [`crate::source::hf`] and the writer of
//! [`crate::write`].

pub mod bitnet;
pub mod export;
pub mod tokenizer;
