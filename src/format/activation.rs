//! The activations a layer may declare (manifest `activation`, rule 2.9; their math is defined in
//! spec section 16 and implemented in [`crate::model::activation`]).

use std::fmt;

/// Activation applied after a layer's affine map (spec section "Reference model").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `x * Phi(x)` with the exact (erf) normal CDF.
    Gelu,
    /// `x * sigmoid(x)`.
    Silu,
    /// `tanh(x)`.
    Tanh,
    /// `x` (used for the logits layer).
    Identity,
}

impl Activation {
    /// Every activation.
    pub const ALL: [Activation; 5] = [
        Activation::Relu,
        Activation::Gelu,
        Activation::Silu,
        Activation::Tanh,
        Activation::Identity,
    ];

    /// The manifest name (`"relu"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::Tanh => "tanh",
            Activation::Identity => "identity",
        }
    }

    /// Parses a manifest name.
    pub fn from_name(name: &str) -> Option<Self> {
        Activation::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
