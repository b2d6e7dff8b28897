//! The numbered validation rules of `spec/FORMAT.md`.
//!
//! Every check in the crate reports the rule it enforces, so an error message can be looked up
//! in the spec and a test can assert that exactly the intended rule fired.

macro_rules! rules {
    ($( $(#[$doc:meta])* $variant:ident = $number:literal, $summary:literal; )*) => {
        /// A numbered rule of `spec/FORMAT.md`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Rule {
            $( $(#[$doc])* $variant, )*
        }

        impl Rule {
            /// Every rule, in spec order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)*];

            /// The rule's number in the spec, e.g. `"4.4"`.
            pub fn number(self) -> &'static str {
                match self { $(Rule::$variant => $number,)* }
            }

            /// A short description of what the rule requires.
            pub fn summary(self) -> &'static str {
                match self { $(Rule::$variant => $summary,)* }
            }
        }
    };
}

rules! {
    /// 1.1: the bundle path is a directory.
    BundleIsDirectory = "1.1", "bundle path must be a directory";
    /// 1.2: manifest.json, ternary.safetensors and fp16.safetensors are present.
    RequiredFiles = "1.2", "required bundle file missing";
    /// 1.3: bundle files are regular files, never symlinks.
    RegularFile = "1.3", "bundle file must be a regular file, not a symlink";
    /// 1.4: validation.safetensors exists exactly when the manifest declares it.
    ValidationFilePresence = "1.4", "validation file presence must match the manifest";
    /// 1.5: undeclared directory entries (reported, fatal only in strict mode).
    ExtraFiles = "1.5", "undeclared file in bundle";
    /// 1.6: every listed asset file is present, regular, of the listed size (format 4.0).
    AssetFiles = "1.6", "asset file missing or of the wrong size";
    /// 2.1: manifest size limit.
    ManifestSize = "2.1", "manifest too large";
    /// 2.2: manifest is a UTF-8 JSON object without duplicate keys.
    ManifestJson = "2.2", "manifest is not valid JSON";
    /// 2.3: `format` is "ternary-bundle".
    FormatName = "2.3", "unknown format";
    /// 2.4: `format_version` is MAJOR.MINOR with a supported MAJOR.
    FormatVersion = "2.4", "unsupported format version";
    /// 2.5: required keys present with the right types.
    ManifestSchema = "2.5", "manifest field missing or of the wrong type";
    /// 2.6: names are short, printable and unique.
    Names = "2.6", "invalid name";
    /// 2.7: the tensor list (shapes, limits, stats).
    TensorList = "2.7", "invalid tensor declaration";
    /// 2.8: the quantization block.
    Quantization = "2.8", "invalid quantization settings";
    /// 2.9: the model architecture.
    Model = "2.9", "invalid model architecture";
    /// 2.10: the file table.
    FileTable = "2.10", "invalid file table";
    /// 2.11: provenance.
    Provenance = "2.11", "invalid provenance";
    /// 2.12: extensions is an object.
    Extensions = "2.12", "invalid extensions";
    /// 2.13: the decoder model (format 3.0).
    DecoderModel = "2.13", "invalid decoder model";
    /// 2.14: a decoder's tensors are exactly those its config names, with their shapes.
    DecoderTensors = "2.14", "decoder tensors differ from the model's";
    /// 2.15: `quantization.source`, required exactly for method `given` (format 4.0).
    QuantizationSource = "2.15", "invalid quantization source";
    /// 2.16: `provenance.original`, the model of the original predictions (format 4.0).
    OriginalModel = "2.16", "invalid original model";
    /// 2.17: `files.assets` (format 4.0).
    Assets = "2.17", "invalid asset table";
    /// 3.1: file size matches the manifest.
    FileSize = "3.1", "file size differs from the manifest";
    /// 3.2: safetensors header length is sane.
    HeaderLength = "3.2", "invalid safetensors header length";
    /// 3.3: safetensors header is a JSON object of tensor entries.
    HeaderJson = "3.3", "invalid safetensors header";
    /// 3.4: tensor count, names, rank and dtype limits.
    HeaderEntries = "3.4", "invalid safetensors tensor entry";
    /// 3.5: element count and byte length agree.
    TensorByteLength = "3.5", "tensor byte length does not match dtype and shape";
    /// 3.6: data offsets tile the data buffer exactly.
    DataOffsets = "3.6", "tensor data offsets do not tile the data buffer";
    /// 3.7: header tensors equal the manifest's file listing.
    HeaderMatchesManifest = "3.7", "tensors in file differ from the manifest's listing";
    /// 4.1: ternary.safetensors holds exactly the expected tensors.
    TernaryTensorSet = "4.1", "unexpected tensor set in ternary file";
    /// 4.2: packed, scale and passthrough shapes and dtypes.
    TernaryShapes = "4.2", "ternary tensor has the wrong dtype or shape";
    /// 4.3: every packed byte is a valid code.
    PackedByteValid = "4.3", "invalid packed trit byte";
    /// 4.4: unused trailing positions are zero.
    CanonicalPadding = "4.4", "non-canonical padding in packed row";
    /// 4.5: scales are finite, positive and representable in F16.
    ScaleValid = "4.5", "invalid scale";
    /// 4.6: the manifest's per-tensor statistics are exact.
    TensorStats = "4.6", "tensor statistics differ from the data";
    /// 4.7: passthrough values are finite and fit F16.
    PassthroughRange = "4.7", "passthrough value not finite or outside F16 range";
    /// 5.1: fp16.safetensors holds every tensor as F16 with its shape.
    Fp16TensorSet = "5.1", "unexpected tensor, dtype or shape in fp16 file";
    /// 5.2: FP16 weights equal the dequantized trits bit for bit.
    DequantizationExact = "5.2", "fp16 value differs from the dequantized trit";
    /// 5.3: FP16 passthrough values equal f16 of the F32 values.
    PassthroughExact = "5.3", "fp16 value differs from the f32 passthrough value";
    /// 6.1: validation set tensors and shapes.
    ValidationTensors = "6.1", "invalid validation set layout";
    /// 6.2: validation inputs finite and labels in range.
    ValidationValues = "6.2", "invalid validation set value";
    /// 6.3: original predictions index the last layer's outputs.
    OriginalPredictions = "6.3", "invalid original prediction";
    /// 6.4: stored original distributions are finite log-probabilities, normalized, sorted,
    /// their ids in range and their first the original prediction (format 5.0).
    OriginalDistributions = "6.4", "invalid original distribution";
    /// 7.1: whole-file SHA-256.
    FileDigest = "7.1", "file checksum mismatch";
    /// 7.2: per-tensor SHA-256.
    TensorDigest = "7.2", "tensor checksum mismatch";
    /// 7.3: the manifest's own SHA-256.
    ManifestDigest = "7.3", "manifest checksum mismatch";
    /// 7.4: the SHA-256 of each asset file (format 4.0).
    AssetDigest = "7.4", "asset checksum mismatch";
    /// 8.1: quantizer input weights are finite.
    SourceWeights = "8.1", "source weights must be finite";
    /// 8.2: a source checkpoint tensor has a supported dtype (F32, F16, BF16).
    SourceDtype = "8.2", "unsupported source tensor dtype";
    /// 8.3: given trits are trits, their scales valid and present, zero points 0.
    GivenTrits = "8.3", "invalid given trits or scales";
    /// 8.4: a GGUF file's header, key-values and tensor infos are well formed and in bounds.
    GgufContainer = "8.4", "malformed GGUF file";
    /// 8.5: a GGUF tensor has a type the reader takes (F32, F16, BF16, TQ1_0, TQ2_0, I2_S)
    /// whose blocks divide it, and valid codes and scales.
    GgufTensor = "8.5", "GGUF tensor of an unsupported type or with invalid blocks";
    /// 8.6: a GGUF file's architecture, hyperparameters, tensor names and shapes and
    /// `bundle.*` keys describe a decoder of section 16.2.
    GgufModel = "8.6", "GGUF metadata that describes no decoder the reader takes";
    /// 9.1: `model.sig` is a regular file holding one Sigstore bundle of the OpenSSF Model
    /// Signing `key` method, exactly of the shape of spec section 10.1.
    SignatureFile = "9.1", "malformed signature file";
    /// 9.2: the signed payload is an in-toto statement of the model_signing predicate whose
    /// resources are relative file names with SHA-256 digests and whose subject digest covers
    /// them.
    SignatureStatement = "9.2", "malformed signed statement";
    /// 9.3: the signature is an ECDSA signature by a trusted key over the DSSE encoding of the
    /// payload.
    SignatureKey = "9.3", "signature not made by a trusted key";
    /// 9.4: the directory's files are exactly the signed resources, with their digests.
    SignedFiles = "9.4", "files differ from the signed ones";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_numbers_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Rule::ALL {
            assert!(
                seen.insert(r.number()),
                "duplicate rule number {}",
                r.number()
            );
        }
    }
}
