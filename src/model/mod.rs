//! The models a bundle describes, as numbers: the reference model (spec section 16) that runs a
//! bundle's layers in f32 from either file or from a source checkpoint ([`reference`](mod@reference)), the f64
//! model with its analytic backward pass ([`model64`]), the numeric gradient check on it
//! ([`gradcheck`], its perturbed losses computed together by `perturbed`), and the
//! activation functions they share ([`activation`]). [`decoder`] is the reference model of the
//! decoder-only language models (Llama, BitNet b1.58, format 3.0), [`decoder64`] its f64 twin
//! with the backward pass, [`bundle_decoder`] a bundle's decoder along one weight path,
//! [`original`] the original model whose decisions a handoff must keep, [`distribution`] its
//! stored distributions and the KL divergence and cross-entropy of a path against them. The architecture's vocabulary (layer specs,
//! activation names) belongs to the format: [`crate::format::manifest`],
//! [`crate::format::activation`].

pub mod activation;
pub mod bundle_decoder;
pub mod chunks;
pub mod decoder;
pub mod decoder64;
pub mod decoder_stream;
pub(crate) mod direction;
pub mod distribution;
pub mod gradcheck;
pub mod matmul;
pub mod model64;
pub mod original;
pub(crate) mod perturbed;
pub mod reference;
