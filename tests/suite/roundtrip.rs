//! Writing a bundle and reading it back: round trips, determinism, every data check passing.

use crate::common;

use ternary_bundle::read::checks::check_all;
use ternary_bundle::read::mmap::Backing;
use ternary_bundle::{
    write_bundle, Bundle, Encoding, Error, Granularity, OpenOptions, WriteOptions,
};

#[test]
fn every_encoding_and_granularity_roundtrips_and_passes_all_checks() {
    let tmp = tempfile::tempdir().unwrap();
    for encoding in Encoding::ALL {
        for granularity in [
            Granularity::Tensor,
            Granularity::Channel,
            Granularity::Group(3),
            Granularity::Group(64),
        ] {
            let (src, mut plan) = common::tiny_model(7);
            plan.params.encoding = encoding;
            plan.params.granularity = granularity;
            let dest = tmp.path().join(format!(
                "{encoding}-{}-{:?}",
                granularity.name(),
                granularity.group_size()
            ));
            let report = write_bundle(&dest, &src, &plan, &WriteOptions::default()).unwrap();
            for backing in [Backing::Map, Backing::Read] {
                let b = Bundle::open_with(&dest, &OpenOptions { backing }).unwrap();
                assert_eq!(b.manifest(), &report.manifest);
                check_all(&b).unwrap();
                let p = b.packed("fc1.weight").unwrap();
                let q = ternary_bundle::quantize(&common::values(7, 91), &[13, 7], &plan.params)
                    .unwrap();
                assert_eq!(p.packed, &q.packed[..]);
                assert_eq!(p.scales(), q.scales);
            }
        }
    }
}

#[test]
fn same_inputs_give_byte_identical_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(3);
    write_bundle(&tmp.path().join("a"), &src, &plan, &WriteOptions::default()).unwrap();
    write_bundle(&tmp.path().join("b"), &src, &plan, &WriteOptions::default()).unwrap();
    assert_eq!(
        common::read_dir_files(&tmp.path().join("a")),
        common::read_dir_files(&tmp.path().join("b"))
    );
}

#[test]
fn existing_destination_is_refused_without_force_and_replaced_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("b");
    let (src, plan) = common::tiny_model(1);
    write_bundle(&dest, &src, &plan, &WriteOptions::default()).unwrap();
    let before = common::read_dir_files(&dest);
    let (src2, plan2) = common::tiny_model(2);
    let err = write_bundle(&dest, &src2, &plan2, &WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DestinationExists { .. }), "{err}");
    assert_eq!(
        common::read_dir_files(&dest),
        before,
        "refused write must not touch the bundle"
    );
    write_bundle(
        &dest,
        &src2,
        &plan2,
        &WriteOptions {
            force: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(common::read_dir_files(&dest), before);
    check_all(&Bundle::open(&dest).unwrap()).unwrap();
    // Nothing but the bundle is left in the parent: no staging or old directories.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("b")]);
}

#[test]
fn empty_and_scalar_passthrough_tensors_roundtrip() {
    // The spec allows empty and rank-0 tensors that are not quantized (rule 2.7).
    let tmp = tempfile::tempdir().unwrap();
    let (mut src, plan) = common::tiny_model(5);
    src.push("buffers.empty", vec![0, 4], vec![]).unwrap();
    src.push("buffers.scalar", vec![], vec![0.25]).unwrap();
    let dest = tmp.path().join("b");
    write_bundle(&dest, &src, &plan, &WriteOptions::default()).unwrap();
    let b = Bundle::open(&dest).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.fp16_bytes("buffers.empty").unwrap().len(), 0);
    assert_eq!(
        b.fp16_bytes("buffers.scalar").unwrap(),
        half::f16::from_f32(0.25).to_le_bytes()
    );
    assert_eq!(
        b.manifest().tensor("buffers.scalar").unwrap().shape,
        Vec::<u64>::new()
    );
}
