//! Rules 8.4 to 8.6: a GGUF source (spec section 18.6). The many hostile variants are in
//! tests/gguf_hostile.rs; here one input per rule, through the reader and the import.

use std::path::Path;

use ternary_bundle::gguf::container::{zeroed_file, Array, TensorInfo, Value};
use ternary_bundle::gguf::import::GgufModel;
use ternary_bundle::gguf::read::Header;
use ternary_bundle::Rule;

fn file(kvs: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
    zeroed_file(kvs, tensors)
}

fn parse_rule(bytes: &[u8]) -> Rule {
    Header::parse(Path::new("r.gguf"), bytes)
        .unwrap_err()
        .rule()
        .expect("a rule violation")
}

#[test]
fn rule_8_4_container_refusals() {
    let good = file(
        &[("k".into(), Value::Array(Array::Str(vec!["a".into()])))],
        &[TensorInfo::new("t", &[4], 0, 16)],
    );
    assert!(Header::parse(Path::new("r.gguf"), &good).is_ok());
    // Truncated in the tensor infos; 10^9 tensors; a duplicate key.
    assert_eq!(parse_rule(&good[..good.len() - 40]), Rule::GgufContainer);
    let mut many = good.clone();
    many[8..16].copy_from_slice(&1_000_000_000u64.to_le_bytes());
    assert_eq!(parse_rule(&many), Rule::GgufContainer);
    let kv = ("k".to_string(), Value::U8(1));
    assert_eq!(
        parse_rule(&file(&[kv.clone(), kv], &[])),
        Rule::GgufContainer
    );
}

#[test]
fn rule_8_5_tensor_types_and_blocks() {
    // Q4_K is not read; TQ2_0 rows of 96 values are not whole blocks.
    let q4k = file(&[], &[TensorInfo::new("w", &[256, 1], 12, 144)]);
    assert_eq!(parse_rule(&q4k), Rule::GgufTensor);
    let e = Header::parse(Path::new("r.gguf"), &q4k).unwrap_err();
    assert!(e.to_string().contains("Q4_K"), "{e}");
    assert_eq!(
        parse_rule(&file(&[], &[TensorInfo::new("w", &[96, 2], 35, 66)])),
        Rule::GgufTensor
    );
}

#[test]
fn rule_8_6_an_architecture_that_is_no_decoder() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("gpt2.gguf");
    let kvs = vec![(
        "general.architecture".to_string(),
        Value::Str("gpt2".into()),
    )];
    std::fs::write(
        &path,
        file(
            &kvs,
            &[TensorInfo::new("token_embd.weight", &[4, 8], 0, 128)],
        ),
    )
    .unwrap();
    let e = GgufModel::open(&path).err().expect("refused");
    assert_eq!(e.rule(), Some(Rule::GgufModel), "{e}");
    assert!(e.to_string().contains("\"gpt2\""), "{e}");
}
