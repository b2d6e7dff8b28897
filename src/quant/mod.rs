//! Quantization (spec section 7: the absmean quantizer) and dequantization (section 8: the exact
//! FP16 values a bundle must hold).

pub mod dequantize;
pub mod quantize;
