//! `bundle run`: the reference model on a file of inputs, logits and predictions written out;
//! inputs that do not fit the model are refused naming the file, the tensor and the shape.

use crate::common;

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use safetensors::tensor::{serialize_to_file, Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use ternary_bundle::model::reference::{argmax_rows, forward_bundle, WeightPath};
use ternary_bundle::Bundle;

fn write_inputs(path: &Path, name: &str, shape: &[usize], values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(StDtype::F32, shape.to_vec(), &bytes).unwrap();
    serialize_to_file(vec![(name, view)], None, path).unwrap();
}

fn run(args: &[&Path]) -> std::process::Output {
    let mut c = Command::cargo_bin("bundle").unwrap();
    c.arg("run");
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

#[test]
fn run_writes_the_reference_models_logits_on_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::bundle(&tmp);
    let b = Bundle::open(&dir).unwrap();
    let rows = 9;
    let x = common::values(11, rows * 7);
    let input = tmp.path().join("x.safetensors");
    write_inputs(&input, "inputs", &[rows, 7], &x);
    for (flag, path) in [("fp16", WeightPath::Fp16), ("ternary", WeightPath::Ternary)] {
        let out = tmp.path().join(format!("y-{flag}.safetensors"));
        let o = Command::cargo_bin("bundle")
            .unwrap()
            .args(["run", "--path", flag, "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let logits = st.tensor("logits").unwrap();
        assert_eq!(
            (logits.dtype(), logits.shape()),
            (StDtype::F32, &[rows, 5][..])
        );
        let got: Vec<f32> = logits
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let xs = ndarray::ArrayView2::from_shape((rows, 7), &x[..]).unwrap();
        let want = forward_bundle(&b, path, xs).unwrap();
        assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "{flag}");
        let preds = st.tensor("predictions").unwrap();
        assert_eq!((preds.dtype(), preds.shape()), (StDtype::I64, &[rows][..]));
        let got: Vec<usize> = preds
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
            .collect();
        assert_eq!(got, argmax_rows(&want), "{flag}");
    }
}

#[test]
fn run_refuses_inputs_that_do_not_fit_and_keeps_an_existing_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::bundle(&tmp);
    let out = tmp.path().join("y.safetensors");
    // (label, tensor name, shape, values, words the error must hold)
    type Case = (
        &'static str,
        &'static str,
        Vec<usize>,
        Vec<f32>,
        &'static str,
    );
    let cases: [Case; 3] = [
        (
            "wide",
            "inputs",
            vec![2, 8],
            vec![0.5; 16],
            "expected shape [N, 7]",
        ),
        (
            "rank",
            "inputs",
            vec![7],
            vec![0.5; 7],
            "expected shape [N, 7]",
        ),
        (
            "nan",
            "x",
            vec![1, 7],
            vec![0.0, 1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0],
            "NaN at row 0, column 2",
        ),
    ];
    for (label, name, shape, values, words) in cases {
        let input = tmp.path().join(format!("{label}.safetensors"));
        write_inputs(&input, name, &shape, &values);
        let o = run(&[&dir, Path::new("--input"), &input, Path::new("--out"), &out]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{label}: {err}");
        assert!(
            err.contains(words) && err.contains(&*input.to_string_lossy()),
            "{label}: {err}"
        );
        assert!(!out.exists(), "{label}: an output was written");
    }
    // An existing output is kept without --force.
    let input = tmp.path().join("ok.safetensors");
    write_inputs(&input, "inputs", &[1, 7], &[0.25; 7]);
    std::fs::write(&out, b"keep").unwrap();
    let o = run(&[&dir, Path::new("--input"), &input, Path::new("--out"), &out]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}
