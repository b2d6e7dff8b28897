//! The reference model's streamed forward pass (weights converted a block of rows at a time,
//! inside the matrix product) against the whole-layer one, on both paths and every scale
//! layout.

use crate::common;

use ndarray::Array2;
use ternary_bundle::model::reference::{bundle_layer, forward, forward_bundle, WeightPath};
use ternary_bundle::source::MemorySource;
use ternary_bundle::{write_bundle, Bundle, Encoding, Granularity, WriteOptions};

#[test]
fn streamed_forward_equals_the_whole_layer_forward() {
    let tmp = tempfile::tempdir().unwrap();
    // Wide enough that the products run in several blocks of rows on several threads.
    let (input, hidden, out, rows) = (128u64, 200u64, 10u64, 64usize);
    let src = MemorySource::new("wide.safetensors")
        .with(
            "fc1.weight",
            vec![hidden, input],
            common::values(1, (hidden * input) as usize),
        )
        .with("fc1.bias", vec![hidden], common::values(2, hidden as usize))
        .with("fc2.norm.weight", vec![hidden], vec![1.5; hidden as usize])
        .with(
            "fc2.weight",
            vec![out, hidden],
            common::values(3, (out * hidden) as usize),
        );
    let x = Array2::from_shape_vec(
        (rows, input as usize),
        common::values(4, rows * input as usize),
    )
    .unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for encoding in Encoding::ALL {
        for granularity in [
            Granularity::Tensor,
            Granularity::Channel,
            Granularity::Group(32),
        ] {
            let mut plan = common::two_layer_plan(input, hidden, out);
            plan.params.encoding = encoding;
            plan.params.granularity = granularity;
            let dest = tmp
                .path()
                .join(format!("{encoding}-{}", granularity.name()));
            write_bundle(&dest, &src, &plan, &WriteOptions::default()).unwrap();
            let b = Bundle::open(&dest).unwrap();
            for path in [WeightPath::Ternary, WeightPath::Fp16] {
                let streamed = pool.install(|| forward_bundle(&b, path, x.view())).unwrap();
                let layers: Vec<_> = (0..2).map(|i| bundle_layer(&b, i, path).unwrap()).collect();
                let whole = forward(&layers, x.view());
                let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = streamed
                    .iter()
                    .zip(&whole)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    scale > 0.0 && worst <= 1e-5 * scale,
                    "{encoding} {granularity:?} {path:?}: differs by {worst} (largest |logit| {scale})"
                );
            }
        }
    }
}
