//! The activation functions of spec section 16, written once for both precisions the crate runs
//! models in: f32 (forward passes of the reference model) and f64 (the gradient checks).

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::format::activation::Activation;

/// A float type a model runs in (implemented for `f32` and `f64`).
pub trait Real:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// 0.5.
    const HALF: Self;
    /// sqrt(2).
    const SQRT_2: Self;
    /// sqrt(2 pi).
    const SQRT_2PI: Self;
    /// e^self.
    fn exp(self) -> Self;
    /// tanh(self).
    fn tanh(self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const HALF: f32 = 0.5;
    const SQRT_2: f32 = std::f32::consts::SQRT_2;
    const SQRT_2PI: f32 = 2.506_628_3;
    fn exp(self) -> f32 {
        f32::exp(self)
    }
    fn tanh(self) -> f32 {
        f32::tanh(self)
    }
    fn erf(self) -> f32 {
        libm::erff(self)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const HALF: f64 = 0.5;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    const SQRT_2PI: f64 = 2.506_628_274_631_000_2;
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}

impl Activation {
    /// act(x) as spec section 16 defines it (GELU exact, with erf).
    pub fn apply<T: Real>(self, x: T) -> T {
        match self {
            Activation::Relu => {
                if x > T::ZERO {
                    x
                } else {
                    T::ZERO
                }
            }
            Activation::Gelu => T::HALF * x * (T::ONE + (x / T::SQRT_2).erf()),
            Activation::Silu => x / (T::ONE + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Identity => x,
        }
    }

    /// d act(x) / dx (ReLU: 0 at 0).
    pub fn derivative<T: Real>(self, x: T) -> T {
        match self {
            Activation::Relu => {
                if x > T::ZERO {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            Activation::Gelu => {
                let cdf = T::HALF * (T::ONE + (x / T::SQRT_2).erf());
                let pdf = (-(T::HALF * x * x)).exp() / T::SQRT_2PI;
                cdf + x * pdf
            }
            Activation::Silu => {
                let s = T::ONE / (T::ONE + (-x).exp());
                s * (T::ONE + x * (T::ONE - s))
            }
            Activation::Tanh => {
                let t = x.tanh();
                T::ONE - t * t
            }
            Activation::Identity => T::ONE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_central_differences_in_f64_and_f32_agrees_with_f64() {
        for act in Activation::ALL {
            for x in [-3.0f64, -0.7, -0.1, 0.3, 1.2, 4.0] {
                let h = 1e-6;
                let numeric = (act.apply(x + h) - act.apply(x - h)) / (2.0 * h);
                let analytic = act.derivative(x);
                assert!(
                    (numeric - analytic).abs() < 1e-6,
                    "{act} at {x}: {analytic} vs {numeric}"
                );
                let (y32, y64) = (act.apply(x as f32), act.apply(x));
                assert!(
                    (y32 as f64 - y64).abs() <= 1e-6 * y64.abs().max(1.0),
                    "{act} at {x}"
                );
            }
        }
        assert_eq!(f64::SQRT_2PI, (2.0 * std::f64::consts::PI).sqrt());
        assert_eq!(f32::SQRT_2PI, (2.0 * std::f32::consts::PI).sqrt());
        assert_eq!(Activation::Relu.apply(-2.0f32), 0.0);
        assert_eq!(Activation::Relu.derivative(0.0f64), 0.0);
    }
}
