//! Finding the architecture of a checkpoint: read it from an `--arch` JSON file (the manifest's
//! `model` object) or infer a chain of linear layers from tensor names and shapes.
//!
//! Inference takes every 2-D `<prefix>.weight`, orders the prefixes naturally (`layers.2`
//! before `layers.10`), pairs each with a 1-D `<prefix>.bias` of matching length when present,
//! and requires the shapes to chain. It never guesses around a break: the error names the two
//! layers that do not connect, so the user can pass `--arch`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;

use crate::error::{escape_name, Error, Result};
use crate::format::activation::Activation;
use crate::format::manifest::{LayerSpec, ModelSpec};
use crate::source::SourceTensor;

/// Reads an architecture file: a JSON object shaped like the manifest's `model`.
pub fn load_arch(path: &Path) -> Result<ModelSpec> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: not an architecture file (the manifest's \"model\" object): {e}",
            path.display()
        ))
    })
}

/// Compares names so that embedded numbers sort by value: `a.2 < a.10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
                let (tx, ty) = (&dx[strip(dx)..], &dy[strip(dy)..]);
                let ord = tx
                    .len()
                    .cmp(&ty.len())
                    .then_with(|| tx.cmp(ty))
                    .then_with(|| nx.cmp(&ny));
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Infers a chain of linear layers from `tensors` (ReLU between layers, `last_activation` on
/// the last one). `origin` names the checkpoint in errors.
pub fn infer_arch(
    tensors: &[SourceTensor],
    origin: &Path,
    last_activation: Activation,
) -> Result<ModelSpec> {
    let by_name: HashMap<&str, &SourceTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut weights: Vec<&SourceTensor> = tensors
        .iter()
        .filter(|t| {
            t.shape.len() == 2 && t.name.ends_with(".weight") && t.name.len() > ".weight".len()
        })
        .collect();
    if weights.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: cannot infer an architecture: no 2-D tensor named <layer>.weight; pass --arch",
            origin.display()
        )));
    }
    weights.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    let n = weights.len();
    let mut layers = Vec::with_capacity(n);
    for (i, w) in weights.iter().enumerate() {
        let prefix = &w.name[..w.name.len() - ".weight".len()];
        let (out, inp) = (w.shape[0], w.shape[1]);
        if let Some(prev) = layers.last().map(|l: &LayerSpec| l) {
            if prev.out_features != inp {
                return Err(Error::InvalidArgument(format!(
                    "{}: cannot infer an architecture: layer {} has out_features {} but the next layer {} has in_features {inp}; pass --arch",
                    origin.display(),
                    escape_name(&prev.weight),
                    prev.out_features,
                    escape_name(&w.name)
                )));
            }
        }
        let bias_name = format!("{prefix}.bias");
        let bias = by_name
            .get(bias_name.as_str())
            .filter(|b| b.shape == [out])
            .map(|_| bias_name);
        let activation = if i + 1 == n {
            last_activation
        } else {
            Activation::Relu
        };
        layers.push(LayerSpec {
            name: prefix.to_string(),
            weight: w.name.clone(),
            bias,
            in_features: inp,
            out_features: out,
            activation: activation.name().into(),
            rmsnorm: None,
        });
    }
    Ok(ModelSpec {
        input_dim: layers[0].in_features,
        layers,
        decoder: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::safetensors::Dtype;

    fn t(name: &str, shape: &[u64]) -> SourceTensor {
        SourceTensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: Dtype::F32,
        }
    }

    #[test]
    fn natural_order_sorts_numbers_by_value() {
        let mut v = vec!["layers.10.weight", "layers.2.weight", "layers.1.weight"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["layers.1.weight", "layers.2.weight", "layers.10.weight"]
        );
    }

    #[test]
    fn infers_a_chain_with_biases() {
        let ts = [
            t("net.2.weight", &[3, 5]),
            t("net.0.weight", &[5, 4]),
            t("net.0.bias", &[5]),
            t("net.2.bias", &[7]),
        ];
        let m = infer_arch(&ts, Path::new("c.safetensors"), Activation::Identity).unwrap();
        assert_eq!(m.input_dim, 4);
        assert_eq!(m.layers[0].bias.as_deref(), Some("net.0.bias"));
        assert_eq!(
            m.layers[1].bias, None,
            "a bias of the wrong length is not attached"
        );
        assert_eq!(m.layers[1].activation, "identity");
    }

    #[test]
    fn a_break_in_the_chain_names_both_layers() {
        let ts = [t("a.weight", &[5, 4]), t("b.weight", &[3, 6])];
        let e = infer_arch(&ts, Path::new("c.safetensors"), Activation::Identity)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"a.weight\"") && e.contains("\"b.weight\"") && e.contains("--arch"),
            "{e}"
        );
    }
}
