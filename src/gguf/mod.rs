//! GGUF, llama.cpp's model file (gguf-py and `ggml/src/gguf.cpp` define it; bitnet.cpp adds
//! I2_S), both ways (spec section 18.6): a decoder bundle exported with its ternary weights as
//! TQ1_0, TQ2_0 or I2_S exactly (every dequantized weight equals the bundle's FP16 weight), and
//! a GGUF file read back into given trits and scales. One module per part: the container
//! writer and its values ([`container`]), the untrusted reader ([`read`]), the tensor types
//! ([`types`]), the ternary blocks ([`ternary`]), the export ([`export`]) and the import
//! ([`import`]).

pub mod container;
pub mod export;
pub mod import;
pub mod read;
pub mod ternary;
pub mod tokenizer;
pub mod types;
