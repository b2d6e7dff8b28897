//! Limits of format 1.0 (spec section "Limits"), enforced before anything is allocated.

/// Largest accepted `manifest.json`, in bytes (rule 2.1).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
/// Largest accepted safetensors JSON header, in bytes (rule 3.2; the safetensors crate's limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Most tensors in one safetensors file (rule 3.4).
pub const MAX_FILE_TENSORS: usize = 65_536;
/// Most tensors declared in the manifest (rule 2.7).
pub const MAX_MANIFEST_TENSORS: usize = 32_768;
/// Most layers in the model (rule 2.9).
pub const MAX_LAYERS: usize = 4_096;
/// Highest tensor rank (rules 2.7, 3.4).
pub const MAX_RANK: usize = 8;
/// Longest name, in bytes of UTF-8 (rule 2.6).
pub const MAX_NAME_BYTES: usize = 512;
/// Most elements in one tensor (rules 2.7, 3.5).
pub const MAX_ELEMENTS: u64 = 1 << 40;
/// Deepest JSON nesting accepted in the manifest (rule 2.2; serde_json's recursion limit).
pub const MAX_JSON_DEPTH: usize = 127;
/// Longest name of a quantized tensor: its scale tensor `<name>.scale` must obey rule 2.6.
pub const MAX_QUANTIZED_NAME_BYTES: usize = MAX_NAME_BYTES - ".scale".len();
/// Largest group size (rule 2.8).
pub const MAX_GROUP_SIZE: u64 = u32::MAX as u64;
