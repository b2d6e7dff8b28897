//! GGUF, llama.cpp's model file (gguf-py and `ggml/src/gguf.cpp` define it): a decoder bundle
//! exported with its ternary weights as the TQ1_0 or TQ2_0 blocks of ggml, exactly (every
//! dequantized weight equals the bundle's FP16 weight). One module per part: the container
//! ([`container`]), the ternary blocks ([`ternary`]), and the names, hyperparameters and the
//! export itself ([`export`]).

pub mod container;
pub mod export;
pub mod ternary;
