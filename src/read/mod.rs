//! Reading bundles: opening them (the validation order of spec section 11: rules 1.1 to 6.1,
//! headers only, in [`open`]), the structural rules that relate files to the manifest
//! (`structure`), zero-copy views of an open bundle ([`Bundle`], in [`bundle`](mod@bundle)),
//! the data rules that read every byte ([`checks`]), what `bundle inspect` shows ([`inspect`])
//! and how file contents reach memory ([`mmap`], the crate's only `unsafe`).

pub mod bundle;
pub mod checks;
pub mod inspect;
pub mod mmap;
pub mod open;
mod structure;

pub use bundle::{
    AssetData, Bundle, DataFile, DistributionView, ListedTensor, PackedTensor, Stored, TensorView,
    ValidationView,
};
pub use open::{open_data_file_raw, open_manifest};

use mmap::Backing;

/// Options for [`Bundle::open_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Map the files (default) or read them into memory.
    pub backing: Backing,
}
