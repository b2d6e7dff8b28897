//! The decoder reference model (src/model/decoder.rs) on a Hugging Face model directory, for
//! the independent numpy check of the decoder math on checkpoints (bundles are checked by
//! scripts/decoder_bundle_numpy.py):
//!
//!     cargo run --release --example decoder_logits -- MODEL_DIR IDS.safetensors OUT.safetensors [--original-only]
//!
//! IDS.safetensors holds `input_ids` I64 [N, T]; OUT.safetensors gets `logits` F32 [N, T, V]
//! from the original weights, and `logits_ternary` and `logits_fp16` from the model quantized
//! as a bundle holds it (default settings). `scripts/decoder_numpy.py check` recomputes all
//! three. `--original-only` skips the quantized paths (they hold the model in memory twice: for
//! small models only), as `benches/decoder_scale.sh` runs it.

use std::path::Path;

use ndarray::Array2;
use ternary_bundle::format::safetensors::Dtype;
use ternary_bundle::model::decoder::{forward, QuantizedDecoder, SourceWeights};
use ternary_bundle::model::reference::WeightPath;
use ternary_bundle::source::hf::HfModel;
use ternary_bundle::source::CheckpointSource;
use ternary_bundle::write::safetensors::write_safetensors_file;
use ternary_bundle::{QuantParams, Result};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let original_only = args.len() == 4 && args[3] == "--original-only";
    if args.len() != 3 && !original_only {
        eprintln!(
            "usage: decoder_logits MODEL_DIR IDS.safetensors OUT.safetensors [--original-only]"
        );
        std::process::exit(2);
    }
    let (dir, ids, out) = (
        Path::new(&args[0]),
        Path::new(&args[1]),
        Path::new(&args[2]),
    );
    if let Err(e) = run(dir, ids, out, original_only) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(dir: &Path, ids_path: &Path, out: &Path, original_only: bool) -> Result<()> {
    let model = HfModel::open(dir)?;
    let spec = model.spec().clone();
    let ids_file = CheckpointSource::open(ids_path)?;
    let e = ids_file
        .header()
        .get("input_ids")
        .filter(|e| e.dtype == Dtype::I64 && e.shape.len() == 2)
        .ok_or_else(|| {
            ternary_bundle::Error::InvalidArgument(format!(
                "{}: expected input_ids I64 [N, T]",
                ids_path.display()
            ))
        })?;
    let (n, t) = (e.shape[0] as usize, e.shape[1] as usize);
    let bytes = ids_file.tensor_bytes("input_ids").expect("checked above");
    let ids: Vec<i64> = ternary_bundle::format::le::i64s(bytes).collect();
    let ids = Array2::from_shape_vec((n, t), ids).expect("n * t ids");
    let start = std::time::Instant::now();
    let original = forward(&spec, &SourceWeights::new(&spec, &model)?, ids.view())?;
    eprintln!(
        "original weights: forward in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let mut outputs = vec![("logits", original)];
    if !original_only {
        let quantized = QuantizedDecoder::new(&spec, &model, &QuantParams::default())?;
        outputs.push((
            "logits_fp16",
            forward(&spec, &quantized.path(WeightPath::Fp16), ids.view())?,
        ));
        outputs.push((
            "logits_ternary",
            forward(&spec, &quantized.path(WeightPath::Ternary), ids.view())?,
        ));
    }
    let shape = vec![n as u64, t as u64, spec.vocab_size as u64];
    let tensors = outputs
        .iter()
        .map(|(name, _)| (name.to_string(), Dtype::F32, shape.clone()))
        .collect();
    write_safetensors_file(out, tensors, &[], true, |name| {
        let (_, a) = outputs
            .iter()
            .find(|(n, _)| *n == name)
            .expect("planned from the same list");
        Ok(a.iter().flat_map(|v| v.to_le_bytes()).collect())
    })?;
    println!(
        "{}: logits [{n}, {t}, {}] of {} weight path(s)",
        out.display(),
        spec.vocab_size,
        outputs.len()
    );
    Ok(())
}
