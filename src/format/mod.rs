//! The on-disk format of spec/FORMAT.md, without I/O: the numbered rules ([`rules`]) and limits,
//! names, little-endian decoding, SHA-256, the trit encodings (section 5), the safetensors
//! container (section 4) and the manifest (section 3). Readers and writers build on this module;
//! it depends on nothing else in the crate but the error type.

pub mod activation;
pub mod checksum;
pub mod decoder;
pub mod distribution;
pub mod encoding;
pub mod layout;
pub mod le;
pub mod limits;
pub mod manifest;
pub mod names;
pub mod quantization;
pub mod rfc3339;
pub mod rules;
pub mod safetensors;
