//! The checks of `bundle verify`, as a type: their order, what each needs to have passed
//! first, and which spec rules a failure to open a bundle belongs to.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::rules::Rule;

macro_rules! checks {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, [$($pre:ident),*]; )*) => {
        /// A check of `bundle verify`, in the order they run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Check {
            $( $(#[$doc])* $variant, )*
        }

        impl Check {
            /// Every check, in the order they run.
            pub const ALL: &'static [Check] = &[$(Check::$variant,)*];

            /// The check's name (`--only`, `--skip`, the reports).
            pub fn name(self) -> &'static str {
                match self { $(Check::$variant => $name,)* }
            }

            /// The checks that must pass before this one can run.
            pub fn prerequisites(self) -> &'static [Check] {
                match self { $(Check::$variant => &[$(Check::$pre),*],)* }
            }
        }
    };
}

checks! {
    /// `manifest.json` parses; format and version understood (rules 2.x; 1.1 to 1.3 for it).
    Manifest = "manifest", [];
    /// Required files present and regular, sizes as declared (rules 1.x, 3.1).
    Files = "files", [Manifest];
    /// Whole-file and per-tensor SHA-256 (rules 7.1, 7.2).
    Checksums = "checksums", [Files];
    /// Headers valid and consistent with the manifest (3.2 to 3.7, 4.1, 4.2, 5.1, 6.1).
    Structure = "structure", [Files];
    /// Packed bytes valid and canonical, zero counts exact (4.3, 4.4, 4.6).
    Encoding = "encoding", [Structure];
    /// Scales finite, positive, representable in F16 (4.5, 4.6).
    Scales = "scales", [Encoding];
    /// FP16 values exactly the dequantized trits (4.7, 5.2, 5.3).
    Dequantization = "dequantization", [Encoding];
    /// `model.sig` made by a trusted key over exactly the bundle's files (9.1 to 9.4;
    /// `--trusted-key`, `--require-signature`).
    Signature = "signature", [];
    /// The ternary and FP16 paths compute the same model.
    Agreement = "agreement", [Encoding];
    /// The FP16 model keeps the original model's decisions (the handoff's criterion).
    Retention = "retention", [Structure];
    /// The FP16 model's distribution stays close to the original model's (KL divergence,
    /// perplexity).
    Fidelity = "fidelity", [Structure];
    /// Analytic gradients agree with central differences.
    GradientCheck = "gradient_check", [Structure];
    /// Every parameter tensor gets a finite, non-zero gradient.
    GradientFlow = "gradient_flow", [Structure];
    /// The original checkpoint, run again (`--reference`).
    Reference = "reference", [Structure];
}

impl Check {
    /// The check by name.
    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Checks named in a list (`--only a,b`), or an error naming the unknown one and every
    /// check there is.
    pub fn parse_list(names: &[String]) -> Result<Vec<Check>> {
        names
            .iter()
            .map(|n| {
                Check::from_name(n).ok_or_else(|| {
                    let all: Vec<&str> = Check::ALL.iter().map(|c| c.name()).collect();
                    Error::InvalidArgument(format!(
                        "unknown check {n:?}; the checks are: {}",
                        all.join(", ")
                    ))
                })
            })
            .collect()
    }

    /// The integrity checks, manifest to dequantization: they depend only on the bytes, so a
    /// bundle the writer produced always passes them.
    pub fn is_integrity(self) -> bool {
        self <= Check::Dequantization
    }

    /// Whether later checks need this one: it runs even when not selected (silently, unless it
    /// fails), so that the selected checks have what they need.
    pub fn gates_others(self) -> bool {
        matches!(
            self,
            Check::Manifest | Check::Files | Check::Structure | Check::Encoding
        )
    }

    /// The check a failure to open a bundle belongs to, by the rule it broke: the manifest's
    /// rules, the directory and file-size rules, or the rest of the structure.
    pub fn for_open_error(rule: Option<Rule>) -> Check {
        use Rule::*;
        match rule {
            Some(
                ManifestSize | ManifestJson | FormatName | FormatVersion | ManifestSchema | Names
                | TensorList | Quantization | Model | FileTable | Provenance | Extensions
                | ManifestDigest | QuantizationSource | OriginalModel | Assets,
            ) => Check::Manifest,
            Some(
                BundleIsDirectory
                | RequiredFiles
                | RegularFile
                | ValidationFilePresence
                | ExtraFiles
                | AssetFiles
                | FileSize,
            ) => Check::Files,
            _ => Check::Structure,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for Check {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl PartialEq<&str> for Check {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl PartialEq<str> for Check {
    fn eq(&self, other: &str) -> bool {
        self.name() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prerequisites_run_before_the_checks_that_need_them() {
        for &c in Check::ALL {
            for &p in c.prerequisites() {
                assert!(p < c, "{c} needs {p}, which runs later");
                assert!(
                    p.gates_others(),
                    "{p} gates {c} but does not run unselected"
                );
            }
        }
        assert_eq!(Check::from_name("gradient_flow"), Some(Check::GradientFlow));
        assert_eq!(Check::ALL.iter().filter(|c| c.is_integrity()).count(), 7);
    }

    #[test]
    fn open_errors_belong_to_the_check_of_their_rule() {
        assert_eq!(
            Check::for_open_error(Some(Rule::FormatVersion)),
            Check::Manifest
        );
        assert_eq!(Check::for_open_error(Some(Rule::FileSize)), Check::Files);
        assert_eq!(Check::for_open_error(Some(Rule::RegularFile)), Check::Files);
        assert_eq!(
            Check::for_open_error(Some(Rule::DataOffsets)),
            Check::Structure
        );
        assert_eq!(Check::for_open_error(None), Check::Structure);
        assert!(Check::parse_list(&["nonsense".into()])
            .unwrap_err()
            .to_string()
            .contains("the checks are: manifest, files"));
    }
}
