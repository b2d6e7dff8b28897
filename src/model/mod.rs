//! The models a bundle describes, as numbers: the reference model (spec section 16) that runs a
//! bundle's layers in f32 from either file or from a source checkpoint ([`reference`](mod@reference)), the f64
//! model with its analytic backward pass that the gradient checks use ([`gradcheck`]), and the
//! activation functions both share ([`activation`]). The architecture's vocabulary (layer specs,
//! activation names) belongs to the format: [`crate::format::manifest`],
//! [`crate::format::activation`].

pub mod activation;
pub mod chunks;
pub mod gradcheck;
pub mod reference;
