//! Every numbered validation rule of the spec has a test that breaks it and checks the error:
//! the rule reported (`Error::rule`) and the message (the file, and the tensor when one is
//! concerned).
//!
//! Each test writes a valid bundle with `write_bundle`, breaks exactly one rule with the
//! surgery helpers of `tests/common/surgery.rs` (rehashing the manifest when the rules checked
//! before the target must keep passing), and asserts the violation. Data rules (4.3 to 4.7,
//! 5.2, 5.3, 6.2, 7.1, 7.2) are checked through the matching function of
//! `ternary_bundle::read::checks` and through `check_all`.

mod common;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::surgery::{
    edit_manifest, edit_manifest_text, edit_st, edit_tensor, manifest, rehash, replace_once,
    tensor_entry, St, FP16, MANIFEST, TERNARY, VALIDATION,
};
use common::{
    bundle, f32_at, row_trits, row_with_nonzero_trit, set_f32, set_u16, t, tiny_bundle, u16_at,
};
use half::f16;
use serde_json::{json, Value};
use ternary_bundle::format::checksum::sha256_hex;
use ternary_bundle::format::manifest::FormatVersion;
use ternary_bundle::read::checks::{
    check_all, check_dequantization, check_digests, check_encoding, check_passthrough,
    check_scales, check_validation_values,
};
use ternary_bundle::source::ValidationSet;
use ternary_bundle::source::{CheckpointSource, MemorySource, TensorSource};
use ternary_bundle::{write_bundle, Bundle, Encoding, Error, Result, Rule, WriteOptions};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// 4 samples of the tiny model's 7 inputs, labels in 0..5, with a difficulty.
fn validation_set() -> ValidationSet {
    ValidationSet {
        origin: PathBuf::from("val.safetensors"),
        inputs: common::values(9, 28),
        labels: vec![0, 1, 2, 4],
        difficulty: Some(vec![0, 1, 2, 3]),
    }
}

/// A valid bundle with a validation set.
fn bundle_with_validation(tmp: &tempfile::TempDir) -> PathBuf {
    tiny_bundle(tmp, "v", |_, o| o.validation = Some(validation_set()))
}

/// Asserts that `result` is a violation of `rule` whose message contains every one of
/// `parts` (and the rule number); returns the message.
#[track_caller]
fn expect_violation<T: Debug>(result: Result<T>, rule: Rule, parts: &[&str]) -> String {
    let err: Error = match result {
        Ok(v) => panic!(
            "expected a violation of rule {} ({rule:?}), got Ok({v:?})",
            rule.number()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert_eq!(err.rule(), Some(rule), "wrong rule; message: {msg}");
    let number = format!("(rule {})", rule.number());
    assert!(msg.contains(&number), "message lacks {number:?}: {msg}");
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
    msg
}

/// Opening `dir` fails with `rule`; returns the message.
#[track_caller]
fn open_violation(dir: &Path, rule: Rule, parts: &[&str]) -> String {
    expect_violation(Bundle::open(dir), rule, parts)
}

/// `dir` opens, `check` reports `rule`, and so does `check_all` (every earlier check passes).
#[track_caller]
fn data_violation(
    dir: &Path,
    check: fn(&Bundle) -> Result<()>,
    rule: Rule,
    parts: &[&str],
) -> String {
    let b = Bundle::open(dir).unwrap_or_else(|e| panic!("bundle should open: {e}"));
    let msg = expect_violation(check(&b), rule, parts);
    let all = expect_violation(check_all(&b), rule, parts);
    assert_eq!(all, msg, "check_all must report the same first violation");
    msg
}

fn files_entry<'a>(m: &'a mut Value, role: &str) -> &'a mut Value {
    &mut m["files"][role]
}

/// Removes the listing of `name` from `files.<role>.tensors`.
fn unlist(m: &mut Value, role: &str, name: &str) {
    let list = files_entry(m, role)["tensors"].as_array_mut().unwrap();
    let before = list.len();
    list.retain(|t| t["name"] != name);
    assert_eq!(list.len(), before - 1, "{name} was listed once");
}

// ---------------------------------------------------------------------------------------------
// Completeness: every rule of src/rules.rs has a test in this file.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_rule_has_a_test_in_this_file() {
    let src = include_str!("rules.rs");
    for rule in Rule::ALL {
        let prefix = format!("fn rule_{}_", rule.number().replace('.', "_"));
        assert!(
            src.contains(&prefix),
            "no test for rule {} ({rule:?}): add a `{prefix}...` test",
            rule.number()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// R1 layout
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_1_1_path_is_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("not-a-dir");
    std::fs::write(&path, b"hello").unwrap();
    open_violation(
        &path,
        Rule::BundleIsDirectory,
        &["not-a-dir", "not a directory"],
    );
}

#[test]
fn rule_1_1_path_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nowhere");
    open_violation(
        &path,
        Rule::BundleIsDirectory,
        &["nowhere", "nothing at this path"],
    );
}

#[test]
fn rule_1_1_symlink_to_a_bundle_directory_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let b = Bundle::open(&link).unwrap();
    check_all(&b).unwrap();
}

#[test]
fn rule_1_2_fp16_file_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::remove_file(dir.join(FP16)).unwrap();
    open_violation(&dir, Rule::RequiredFiles, &[FP16, "no such file"]);
}

#[test]
fn rule_1_2_manifest_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::remove_file(dir.join(MANIFEST)).unwrap();
    open_violation(&dir, Rule::RequiredFiles, &[MANIFEST]);
}

#[test]
fn rule_1_2_ternary_file_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::remove_file(dir.join(TERNARY)).unwrap();
    open_violation(&dir, Rule::RequiredFiles, &[TERNARY]);
}

#[test]
fn rule_1_3_ternary_is_a_symlink_to_a_valid_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let copy = tmp.path().join("copy.safetensors");
    std::fs::rename(dir.join(TERNARY), &copy).unwrap();
    std::os::unix::fs::symlink(&copy, dir.join(TERNARY)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[TERNARY, "symbolic link"]);
}

#[test]
fn rule_1_3_dangling_symlink_is_a_type_error_not_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::remove_file(dir.join(FP16)).unwrap();
    std::os::unix::fs::symlink("nowhere.safetensors", dir.join(FP16)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[FP16, "symbolic link"]);
}

#[test]
fn rule_1_3_manifest_is_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let copy = tmp.path().join("copy.json");
    std::fs::rename(dir.join(MANIFEST), &copy).unwrap();
    std::os::unix::fs::symlink(&copy, dir.join(MANIFEST)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[MANIFEST, "symbolic link"]);
}

#[test]
fn rule_1_3_ternary_is_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::remove_file(dir.join(TERNARY)).unwrap();
    std::fs::create_dir(dir.join(TERNARY)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[TERNARY, "a directory"]);
}

#[test]
fn rule_1_3_fifo_is_refused_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::remove_file(dir.join(FP16)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join(FP16),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    // Opening must not block on the FIFO (no writer ever comes): run it on a thread with a
    // deadline so a regression fails instead of hanging the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Bundle::open(&d).map(|_| ()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("opening a bundle with a FIFO hung");
    expect_violation(result, Rule::RegularFile, &[FP16, "a FIFO"]);
}

#[test]
fn rule_1_4_declared_validation_file_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    std::fs::remove_file(dir.join(VALIDATION)).unwrap();
    open_violation(
        &dir,
        Rule::ValidationFilePresence,
        &[VALIDATION, "no such file"],
    );
}

#[test]
fn rule_1_4_undeclared_validation_file_present() {
    let tmp = tempfile::tempdir().unwrap();
    let with = bundle_with_validation(&tmp);
    let dir = bundle(&tmp);
    std::fs::copy(with.join(VALIDATION), dir.join(VALIDATION)).unwrap();
    open_violation(
        &dir,
        Rule::ValidationFilePresence,
        &[VALIDATION, "undeclared"],
    );
}

#[test]
fn rule_1_4_validation_null_in_manifest_means_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        assert!(m["files"]["validation"].is_null());
        m["files"].as_object_mut().unwrap().remove("validation");
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

/// Spec section 11: rule 1.4 is checked (step 4) before rule 1.3 for validation.safetensors.
/// An undeclared validation.safetensors that is a symbolic link is therefore a 1.4 violation;
/// the reader opens it (with O_NOFOLLOW) before reading the manifest and reports 1.3.
#[test]
fn rule_1_4_checked_before_rule_1_3_for_the_validation_file() {
    let tmp = tempfile::tempdir().unwrap();
    let with = bundle_with_validation(&tmp);
    let dir = bundle(&tmp);
    std::os::unix::fs::symlink(with.join(VALIDATION), dir.join(VALIDATION)).unwrap();
    open_violation(&dir, Rule::ValidationFilePresence, &[VALIDATION]);
}

#[test]
fn rule_1_3_validation_file_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    let copy = tmp.path().join("copy.safetensors");
    std::fs::rename(dir.join(VALIDATION), &copy).unwrap();
    std::os::unix::fs::symlink(&copy, dir.join(VALIDATION)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[VALIDATION, "symbolic link"]);
}

/// Rule 1.5 is informational: extra entries are listed, never fatal for a reader.
#[test]
fn rule_1_5_extra_files_are_listed_and_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::write(dir.join("notes.txt"), b"hi").unwrap();
    std::fs::create_dir(dir.join(".cache")).unwrap();
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.extras(), [".cache".to_string(), "notes.txt".to_string()]);
    check_all(&b).unwrap();
}

// ---------------------------------------------------------------------------------------------
// R2 manifest
// ---------------------------------------------------------------------------------------------

/// Pads the manifest of `dir` with trailing spaces to exactly `size` bytes.
fn pad_manifest_to(dir: &Path, size: usize) {
    // Trailing whitespace is still JSON; the padded manifest is resealed (rule 7.3).
    edit_manifest_text(dir, |t| {
        assert!(t.len() <= size);
        t.extend(std::iter::repeat_n(' ', size - t.len()));
    });
}

#[test]
fn rule_2_1_manifest_over_16_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    pad_manifest_to(&dir, 16 * 1024 * 1024 + 1);
    open_violation(
        &dir,
        Rule::ManifestSize,
        &[MANIFEST, "16777216", "16777217 bytes"],
    );
}

#[test]
fn rule_2_1_manifest_of_exactly_16_mib_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    pad_manifest_to(&dir, 16 * 1024 * 1024);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_2_duplicate_top_level_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"format\": \"ternary-bundle\",",
            "\"format\": \"ternary-bundle\",\n  \"format\": \"ternary-bundle\",",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "duplicate key"]);
}

#[test]
fn rule_2_2_duplicate_key_deep_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"zero_point\": 0",
            "\"zero_point\": 0, \"zero_point\": 0",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "zero_point"]);
}

#[test]
fn rule_2_2_nan_literal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"sparsity_threshold\": 0.5",
            "\"sparsity_threshold\": NaN",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_infinity_literal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"sparsity_threshold\": 0.5",
            "\"sparsity_threshold\": Infinity",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

/// `"extensions": {}` replaced by `levels` nested values (`[[...]]` or `{"a":{...}}`).
fn nest_extensions(dir: &Path, levels: usize, objects: bool) {
    let (open, close) = if objects {
        ("{\"a\":", "}")
    } else {
        ("[", "]")
    };
    let inner = if objects { "{}" } else { "[]" };
    let nested = format!(
        "{}{inner}{}",
        open.repeat(levels - 1),
        close.repeat(levels - 1)
    );
    edit_manifest_text(dir, |s| {
        replace_once(
            s,
            "\"extensions\": {}",
            &format!("\"extensions\": {nested}"),
        )
    });
}

#[test]
fn rule_2_2_extensions_nested_10000_levels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    nest_extensions(&dir, 10_000, false);
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "recursion limit"]);
}

/// Spec rule 2.2: the top-level object has depth 1; depth 127 is the deepest accepted.
#[test]
fn rule_2_2_nesting_depth_128_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // Depth 1 (top-level object) + 127 levels of extensions = 128.
    nest_extensions(&dir, 127, true);
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "recursion limit"]);
}

#[test]
fn rule_2_2_nesting_depth_127_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // Depth 1 + 126 levels of extensions (objects) = 127.
    nest_extensions(&dir, 126, true);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
    // The same depth with arrays.
    let dir = tiny_bundle(&tmp, "arrays", |_, _| {});
    nest_extensions(&dir, 126, false);
    edit_manifest_text(&dir, |s| {
        replace_once(s, "\"extensions\": [", "\"extensions\": {\"x\": [");
        s.truncate(s.trim_end().len() - 1);
        s.push_str("}}\n");
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "recursion limit"]);
}

#[test]
fn rule_2_2_keys_are_compared_after_unescaping() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"extensions\": {}",
            "\"extensions\": {\"ab\": 1, \"a\\u0062\": 2}",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "duplicate key"]);
}

#[test]
fn rule_2_2_unpaired_surrogate_escape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"extensions\": {}",
            "\"extensions\": {\"note\": \"\\ud800\"}",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_byte_order_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| s.insert(0, '\u{feff}'));
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_trailing_comma() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(s, "\"extensions\": {}", "\"extensions\": {\"a\": 1,}")
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_top_level_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let m = manifest(&dir);
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&json!([m])).unwrap()).unwrap();
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "not an object"]);
}

#[test]
fn rule_2_2_invalid_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(MANIFEST);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"relu\"").unwrap();
    bytes[at] = 0xFF;
    std::fs::write(&path, bytes).unwrap();
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "invalid UTF-8"]);
}

#[test]
fn rule_2_3_format_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["format"] = json!("x"));
    open_violation(
        &dir,
        Rule::FormatName,
        &[MANIFEST, "ternary-bundle", "\"x\""],
    );
}

/// Spec rule 2.4: "A missing or non-string `format` breaks rule 2.3".
#[test]
fn rule_2_3_format_missing_or_not_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_manifest(&dir, |m| {
        m.as_object_mut().unwrap().remove("format").unwrap();
    });
    open_violation(&dir, Rule::FormatName, &[MANIFEST]);
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_manifest(&dir, |m| m["format"] = json!(["ternary-bundle"]));
    open_violation(&dir, Rule::FormatName, &[MANIFEST]);
}

/// Spec rule 2.4: "a missing, non-string or malformed `format_version` breaks rule 2.4".
#[test]
fn rule_2_4_format_version_missing_or_not_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_manifest(&dir, |m| {
        m.as_object_mut().unwrap().remove("format_version").unwrap();
    });
    open_violation(&dir, Rule::FormatVersion, &[MANIFEST]);
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_manifest(&dir, |m| m["format_version"] = json!(1.0));
    open_violation(&dir, Rule::FormatVersion, &[MANIFEST]);
}

#[test]
fn rule_2_4_major_3_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["format_version"] = json!("3.0"));
    open_violation(&dir, Rule::FormatVersion, &[MANIFEST, "3.0", "1.0", "2.0"]);
}

#[test]
fn rule_2_4_majors_1_and_2_are_both_read() {
    // A 2.x reader opens 1.x bundles, and a bundle that meets the 1.0 rules is also a valid
    // 2.0 bundle (2.0 only adds an optional tensor).
    let tmp = tempfile::tempdir().unwrap();
    for v in ["1.0", "2.0", "2.3"] {
        let dir = tiny_bundle(&tmp, v, |_, _| {});
        edit_manifest(&dir, |m| m["format_version"] = json!(v));
        let b = Bundle::open(&dir).unwrap();
        assert_eq!(b.facts().version.to_string(), v);
        check_all(&b).unwrap();
    }
}

#[test]
fn rule_2_4_major_3_with_a_different_structure_is_a_version_error() {
    // A future MAJOR may change the structure: the version is reported, not a missing field.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["format_version"] = json!("3.0");
        m.as_object_mut().unwrap().remove("files");
        m["model"] = json!("a graph");
    });
    open_violation(&dir, Rule::FormatVersion, &[MANIFEST, "3.0", "2.0"]);
}

#[test]
fn rule_2_4_malformed_versions() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, v) in [
        "1",
        "01.0",
        "1.00",
        "1.01",
        "1.0.0",
        "+1.0",
        "-1.0",
        " 1.0",
        "1.",
        ".0",
        "",
        "1,0",
        "1.0a",
        "１.0",
        "1234567890.0",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["format_version"] = json!(v));
        open_violation(&dir, Rule::FormatVersion, &[MANIFEST]);
    }
}

#[test]
fn rule_2_4_other_majors_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, v) in ["0.9", "0.0", "3.1", "999999999.0"].into_iter().enumerate() {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["format_version"] = json!(v));
        open_violation(&dir, Rule::FormatVersion, &[MANIFEST, v, "1.0", "2.0"]);
    }
}

#[test]
fn rule_2_5_files_key_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m.as_object_mut().unwrap().remove("files").unwrap();
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "files"]);
}

#[test]
fn rule_2_5_field_of_the_wrong_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["input_dim"] = json!("7"));
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
}

#[test]
fn rule_2_4_format_version_as_a_number_is_a_version_error() {
    // Rules 2.3 and 2.4 come before the schema rule 2.5, whatever the JSON type.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["format_version"] = json!(1.0));
    let err = Bundle::open(&dir).unwrap_err();
    assert!(err.rule() == Some(Rule::FormatVersion), "{err}");
    assert!(
        err.to_string().contains(MANIFEST) && err.to_string().contains("a number"),
        "{err}"
    );
}

#[test]
fn rule_2_5_integer_written_with_a_fraction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(s, "\"input_dim\": 7,", "\"input_dim\": 7.0,")
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
}

#[test]
fn rule_2_5_required_nullable_key_missing() {
    // `bias` is "name or null" and required: omitting the key is not the same as null.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let layer = m["model"]["layers"][1].as_object_mut().unwrap();
        assert!(layer.remove("bias").unwrap().is_null());
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "bias"]);
}

/// Spec 3.2: an f32 field's value is the f32 nearest to the exact decimal. The decimal below
/// lies just above the midpoint between 1.0 and 1.0000001 (0x3F800001), so its nearest f32 is
/// 1.0000001; parsing it to f64 first lands exactly on the midpoint, which then rounds to even
/// (1.0): a double rounding.
#[test]
fn rule_2_8_f32_fields_round_the_exact_decimal_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        let at = s.find("\"epsilon\": ").unwrap() + "\"epsilon\": ".len();
        let end = at + s[at..].find(',').unwrap();
        s.replace_range(at..end, "1.0000000596046447754");
    });
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.params().epsilon.to_bits(), 0x3F80_0001);
}

#[test]
fn rule_2_6_name_with_terminal_escape_is_refused_and_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.bias")["name"] = json!("fc1\u{1b}[2J");
    });
    let msg = open_violation(
        &dir,
        Rule::Names,
        &[MANIFEST, "tensor \"fc1\\u{1b}[2J\"", "control characters"],
    );
    assert!(
        !msg.contains('\u{1b}'),
        "raw escape reached the message: {msg:?}"
    );
}

#[test]
fn rule_2_6_duplicate_tensor_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let dup = tensor_entry(m, "fc1.bias").clone();
        m["tensors"].as_array_mut().unwrap().push(dup);
    });
    open_violation(&dir, Rule::Names, &[MANIFEST, &t("fc1.bias"), "duplicate"]);
}

#[test]
fn rule_2_6_duplicate_layer_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["layers"][1]["name"] = json!("fc1"));
    open_violation(&dir, Rule::Names, &[MANIFEST, "\"fc1\" twice"]);
}

#[test]
fn rule_2_6_duplicate_names_in_a_file_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let list = m["files"]["fp16"]["tensors"].as_array_mut().unwrap();
        let dup = list[0].clone();
        list.push(dup);
    });
    open_violation(&dir, Rule::Names, &[MANIFEST, "files.fp16.tensors"]);
}

#[test]
fn rule_2_6_reserved_empty_and_long_names() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "x".repeat(513);
    for (i, (name, what)) in [
        ("__metadata__", "reserved"),
        ("", "empty"),
        (long.as_str(), "513 bytes"),
        ("fc1\u{85}bias", "control"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["model"]["layers"][0]["name"] = json!(name));
        open_violation(&dir, Rule::Names, &[MANIFEST, what]);
    }
    // 512 bytes is allowed.
    let dir = tiny_bundle(&tmp, "ok", |_, _| {});
    edit_manifest(&dir, |m| {
        m["model"]["layers"][0]["name"] = json!("é".repeat(256));
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_6_quantized_tensor_name_over_506_bytes() {
    // Its scale tensor `<name>.scale` would exceed 512 bytes.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let long = "w".repeat(507);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc2.weight")["name"] = json!(long)
    });
    open_violation(&dir, Rule::Names, &[MANIFEST, "506", "507 bytes"]);
}

#[test]
fn rule_2_7_manifest_shape_of_rank_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.bias")["shape"] = json!([13, 1, 1, 1, 1, 1, 1, 1, 1]);
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, "rank"]);
}

#[test]
fn rule_2_7_manifest_shape_of_rank_9_is_refused() {
    // However deep the shape, it is refused without storing more than MAX_RANK + 1 dims.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.bias")["shape"] = json!([13, 1, 1, 1, 1, 1, 1, 1, 1]);
    });
    let err = Bundle::open(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err.rule(), Some(Rule::TensorList | Rule::ManifestSchema)),
        "{msg}"
    );
    assert!(msg.contains(MANIFEST) && msg.contains("rank"), "{msg}");
}

#[test]
fn rule_2_7_quantized_tensor_missing_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.weight")
            .as_object_mut()
            .unwrap()
            .remove("zeros")
            .unwrap();
    });
    open_violation(
        &dir,
        Rule::TensorList,
        &[MANIFEST, &t("fc1.weight"), "zeros"],
    );
}

#[test]
fn rule_2_7_zeros_above_element_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| tensor_entry(m, "fc1.weight")["zeros"] = json!(92));
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc1.weight"), "91"]);
}

#[test]
fn rule_2_7_scale_min_above_scale_max() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc2.weight");
        let max = e["scale_max"].clone();
        e["scale_min"] = json!(max.as_f64().unwrap() * 2.0);
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc2.weight")]);
}

#[test]
fn rule_2_7_non_positive_scale_min() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc2.weight")["scale_min"] = json!(0)
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc2.weight")]);
}

#[test]
fn rule_2_7_stats_on_a_tensor_that_is_not_quantized() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| tensor_entry(m, "fc1.bias")["zeros"] = json!(0));
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc1.bias")]);
}

#[test]
fn rule_2_7_null_stats_on_a_tensor_that_is_not_quantized_are_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.bias");
        e["zeros"] = Value::Null;
        e["scale_min"] = Value::Null;
        e["scale_max"] = Value::Null;
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_7_tensor_named_like_a_scale_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["tensors"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "fc1.weight.scale", "shape": [13], "quantized": false}));
    });
    open_violation(
        &dir,
        Rule::TensorList,
        &[MANIFEST, &t("fc1.weight.scale"), "collision"],
    );
}

#[test]
fn rule_2_7_empty_tensor_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["tensors"] = json!([]));
    open_violation(&dir, Rule::TensorList, &[MANIFEST, "1..=32768 tensors"]);
}

#[test]
fn rule_2_7_quantized_tensor_without_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["tensors"].as_array_mut().unwrap().push(json!({
            "name": "empty", "shape": [3, 0], "quantized": true,
            "zeros": 0, "scale_min": 1.0, "scale_max": 1.0
        }));
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("empty"), "[3, 0]"]);
}

#[test]
fn rule_2_7_element_count_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["tensors"].as_array_mut().unwrap().push(json!({
            "name": "huge", "shape": [1u64 << 20, 1u64 << 20, 2], "quantized": false
        }));
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("huge"), "elements"]);
}

#[test]
fn rule_2_8_encoding_trit3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["encoding"] = json!("trit3"));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "trit3"]);
}

#[test]
fn rule_2_8_method_not_absmean() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["method"] = json!("absmax"));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "absmax"]);
}

#[test]
fn rule_2_8_group_size_with_channel_granularity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["group_size"] = json!(4));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "group_size"]);
}

#[test]
fn rule_2_8_group_granularity_without_valid_group_size() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, g) in [Value::Null, json!(0), json!(4_294_967_296u64)]
        .into_iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| {
            m["quantization"]["granularity"] = json!("group");
            m["quantization"]["group_size"] = g;
        });
        open_violation(&dir, Rule::Quantization, &[MANIFEST, "group_size"]);
    }
}

#[test]
fn rule_2_8_unknown_granularity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["granularity"] = json!("row"));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "\"row\""]);
}

#[test]
fn rule_2_8_epsilon_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["epsilon"] = json!(0));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "epsilon"]);
}

#[test]
fn rule_2_8_epsilon_overflowing_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["epsilon"] = json!(1e300));
    let err = Bundle::open(&dir).unwrap_err();
    // An f32 field holding a number beyond f32 is refused (as a quantization or schema error).
    assert!(
        matches!(err.rule(), Some(Rule::Quantization | Rule::ManifestSchema)),
        "{err}"
    );
}

#[test]
fn rule_2_8_threshold_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, thr) in [json!(1.0), json!(-0.1), json!(0.99999999)]
        .into_iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["quantization"]["sparsity_threshold"] = thr);
        open_violation(&dir, Rule::Quantization, &[MANIFEST, "sparsity_threshold"]);
    }
}

#[test]
fn rule_2_8_zero_point_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["zero_point"] = json!(1));
    open_violation(
        &dir,
        Rule::Quantization,
        &[MANIFEST, "zero_point 0", "found 1"],
    );
}

#[test]
fn rule_2_9_model_chain_break() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["layers"][1]["in_features"] = json!(12));
    open_violation(
        &dir,
        Rule::Model,
        &[MANIFEST, "layer 1", "in_features 13", "found 12"],
    );
}

#[test]
fn rule_2_9_first_layer_does_not_take_input_dim() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["input_dim"] = json!(8));
    open_violation(&dir, Rule::Model, &[MANIFEST, "layer 0", "input_dim"]);
}

#[test]
fn rule_2_9_activation_swish() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["model"]["layers"][0]["activation"] = json!("swish")
    });
    open_violation(&dir, Rule::Model, &[MANIFEST, "swish", "\"fc1\""]);
}

#[test]
fn rule_2_9_weight_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // fc2.norm.weight has shape [13], not [13, 7].
    edit_manifest(&dir, |m| {
        m["model"]["layers"][0]["weight"] = json!("fc2.norm.weight")
    });
    open_violation(
        &dir,
        Rule::Model,
        &[MANIFEST, "\"fc2.norm.weight\"", "[13, 7]"],
    );
}

#[test]
fn rule_2_9_undeclared_tensor_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["layers"][0]["bias"] = json!("fc1.b"));
    open_violation(
        &dir,
        Rule::Model,
        &[MANIFEST, "\"fc1.b\"", "no such tensor"],
    );
}

#[test]
fn rule_2_9_rmsnorm_eps_not_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["model"]["layers"][1]["rmsnorm"]["eps"] = json!(0)
    });
    open_violation(&dir, Rule::Model, &[MANIFEST, "rmsnorm eps"]);
}

#[test]
fn rule_2_9_input_dim_zero_and_no_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_manifest(&dir, |m| m["model"]["input_dim"] = json!(0));
    open_violation(&dir, Rule::Model, &[MANIFEST, "input_dim >= 1"]);
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_manifest(&dir, |m| m["model"]["layers"] = json!([]));
    open_violation(&dir, Rule::Model, &[MANIFEST, "layers"]);
}

#[test]
fn rule_2_10_file_sha256_not_lowercase_hex() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let s = m["files"]["ternary"]["sha256"]
            .as_str()
            .unwrap()
            .to_uppercase();
        m["files"]["ternary"]["sha256"] = json!(s);
    });
    open_violation(
        &dir,
        Rule::FileTable,
        &[MANIFEST, "files.ternary", "sha256"],
    );
}

#[test]
fn rule_2_10_tensor_sha256_too_short() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let list = m["files"]["fp16"]["tensors"].as_array_mut().unwrap();
        let e = list.iter_mut().find(|e| e["name"] == "fc2.weight").unwrap();
        e["sha256"] = json!("abc");
    });
    open_violation(
        &dir,
        Rule::FileTable,
        &[MANIFEST, &t("fc2.weight"), "\"abc\""],
    );
}

#[test]
fn rule_2_11_source_sha256_xyz() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["provenance"]["source_sha256"] = json!("xyz"));
    open_violation(
        &dir,
        Rule::Provenance,
        &[MANIFEST, "source_sha256", "\"xyz\""],
    );
}

#[test]
fn rule_2_11_created_not_an_rfc3339_utc_date_time() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, created) in [
        "yesterday",
        "2024-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00+00:00",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00.Z",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["provenance"]["created"] = json!(created));
        open_violation(&dir, Rule::Provenance, &[MANIFEST, "created"]);
    }
    for (i, created) in ["2024-02-29T23:59:60Z", "2024-01-01T00:00:00.123456Z"]
        .into_iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("ok{i}"), |_, o| {
            o.created = Some(created.to_string())
        });
        let b = Bundle::open(&dir).unwrap();
        assert_eq!(b.manifest().provenance.created.as_deref(), Some(created));
    }
}

#[test]
fn rule_2_11_valid_source_sha256_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = sha256_hex(b"checkpoint");
    let d = digest.clone();
    let dir = tiny_bundle(&tmp, "b", move |_, o| o.source_sha256 = Some(d));
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.manifest().provenance.source_sha256, Some(digest));
}

#[test]
fn rule_2_12_extensions_is_a_number() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["extensions"] = json!(5));
    open_violation(&dir, Rule::Extensions, &[MANIFEST, "an object", "a number"]);
}

#[test]
fn rule_2_12_extensions_with_content_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["extensions"] = json!({"org.example": {"notes": [1, 2, {"x": null}]}})
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn newer_minor_manifest_with_unknown_keys_opens_and_passes_all_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The bundle holds original predictions, so it is 2.0: its newer minor is 2.7.
    edit_manifest(&dir, |m| {
        m["format_version"] = json!("2.7");
        m["new_top_level_key"] = json!({"anything": [1, 2, 3]});
        tensor_entry(m, "fc1.weight")["new_tensor_key"] = json!("outlier-aware");
        tensor_entry(m, "fc1.bias")["new_tensor_key"] = json!(null);
        m["quantization"]["new_quantization_key"] = json!(0.25);
        m["model"]["layers"][0]["new_layer_key"] = json!(true);
        m["files"]["ternary"]["new_file_key"] = json!(1);
        m["files"]["fp16"]["tensors"][0]["new_digest_key"] = json!("x");
        m["provenance"]["new_provenance_key"] = json!({});
    });
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.facts().version, FormatVersion { major: 2, minor: 7 });
    check_all(&b).unwrap();
}

// ---------------------------------------------------------------------------------------------
// R3 safetensors container (on ternary.safetensors unless stated)
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_3_1_byte_appended_to_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(TERNARY);
    let mut bytes = std::fs::read(&path).unwrap();
    let size = bytes.len();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    open_violation(
        &dir,
        Rule::FileSize,
        &[
            TERNARY,
            &format!("{size} bytes (manifest files.ternary)"),
            &format!("found {} bytes", size + 1),
        ],
    );
}

#[test]
fn rule_3_1_fp16_file_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(FP16);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
    open_violation(&dir, Rule::FileSize, &[FP16, "files.fp16"]);
}

/// Overwrites the 8-byte header length of `file` with `n` (size unchanged, manifest rehashed).
fn set_header_len(dir: &Path, file: &str, n: u64) {
    let path = dir.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    rehash(dir);
}

#[test]
fn rule_3_2_header_length_beyond_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let size = std::fs::metadata(dir.join(TERNARY)).unwrap().len();
    set_header_len(&dir, TERNARY, size - 7);
    open_violation(
        &dir,
        Rule::HeaderLength,
        &[TERNARY, &format!("{}", size - 7)],
    );
}

#[test]
fn rule_3_2_header_length_near_u64_max() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_header_len(&dir, FP16, u64::MAX - 3);
    open_violation(&dir, Rule::HeaderLength, &[FP16]);
}

#[test]
fn rule_3_2_header_length_above_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_header_len(&dir, TERNARY, 100_000_001);
    open_violation(
        &dir,
        Rule::HeaderLength,
        &[TERNARY, "100000000", "100000001"],
    );
}

#[test]
fn rule_3_2_file_shorter_than_8_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::write(dir.join(TERNARY), [1, 2, 3]).unwrap();
    rehash(&dir);
    open_violation(&dir, Rule::HeaderLength, &[TERNARY, "3 bytes"]);
}

#[test]
fn rule_3_3_duplicate_tensor_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let entry = st.entry_text("fc1.bias");
        let text = st.header_text().replacen('{', &format!("{{{entry},"), 1);
        st.set_header_text(&text);
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::HeaderJson,
        &[TERNARY, "duplicate key", "fc1.bias"],
    );
}

#[test]
fn rule_3_3_duplicate_field_in_an_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let text = st.header_text().replacen(
            "\"dtype\":\"F32\"",
            "\"dtype\":\"F32\",\"dtype\":\"F32\"",
            1,
        );
        st.set_header_text(&text);
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY, "dtype"]);
}

#[test]
fn rule_3_3_invalid_json_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let text = st.header_text();
        st.set_header_text(&text.trim_end()[..text.trim_end().len() - 1]);
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY]);
}

#[test]
fn rule_3_3_header_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| st.set_header_text("[1, 2]"));
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY]);
}

#[test]
fn rule_3_3_header_invalid_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let at = st.header.iter().position(|&b| b == b'F').unwrap();
        st.header[at] = 0xC0;
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY, "UTF-8"]);
}

#[test]
fn rule_3_3_metadata_not_a_string_map() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        let text = st.header_text().replacen("\"pt\"", "1", 1);
        st.set_header_text(&text);
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[FP16]);
}

#[test]
fn rule_3_3_header_with_trailing_spaces_and_reordered_keys_is_fine() {
    // Readers accept any valid layout: re-serialize the header (sorted keys), pad it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let v = st.json();
        st.set_json(&v);
        st.header.extend_from_slice(b"     ");
    });
    rehash(&dir);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_3_4_shape_of_rank_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["shape"] = json!([13, 1, 1, 1, 1, 1, 1, 1, 1]))
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderEntries, &[TERNARY, "rank"]);
}

#[test]
fn rule_3_4_unknown_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["dtype"] = json!("Q4"))
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderEntries, &[TERNARY, &t("fc1.bias"), "Q4"]);
}

#[test]
fn rule_3_4_lowercase_and_f8_dtypes() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, dtype) in ["f32", "F8_E4M3", "F32 "].into_iter().enumerate() {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_st(&dir, TERNARY, |st| {
            st.edit_json(|v| v["fc1.bias"]["dtype"] = json!(dtype))
        });
        rehash(&dir);
        open_violation(&dir, Rule::HeaderEntries, &[TERNARY, &t("fc1.bias")]);
    }
}

#[test]
fn rule_3_4_control_character_in_a_tensor_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            let o = v.as_object_mut().unwrap();
            let e = o.remove("fc1.bias").unwrap();
            o.insert("fc1\u{7}bias".into(), e);
        })
    });
    rehash(&dir);
    let msg = open_violation(
        &dir,
        Rule::HeaderEntries,
        &[TERNARY, "tensor \"fc1\\u{7}bias\"", "control characters"],
    );
    assert!(!msg.contains('\u{7}'), "{msg:?}");
}

#[test]
fn rule_3_4_more_than_65536_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let mut text = String::from("{");
        for i in 0..65_537 {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!(
                "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}"
            ));
        }
        text.push('}');
        st.set_header_text(&text);
        st.data.clear();
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderEntries, &[TERNARY, "65536"]);
}

#[test]
fn rule_3_5_shape_disagrees_with_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["shape"] = json!([12]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TensorByteLength,
        &[TERNARY, &t("fc1.bias"), "48 bytes"],
    );
}

#[test]
fn rule_3_5_start_after_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            let [a, b] = [
                v["fc1.bias"]["data_offsets"][0].clone(),
                v["fc1.bias"]["data_offsets"][1].clone(),
            ];
            v["fc1.bias"]["data_offsets"] = json!([b, a]);
        })
    });
    rehash(&dir);
    open_violation(&dir, Rule::TensorByteLength, &[TERNARY, &t("fc1.bias")]);
}

#[test]
fn rule_3_5_element_count_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            v["fc1.bias"]["shape"] = json!([4294967296u64, 4294967296u64, 16]);
        })
    });
    rehash(&dir);
    open_violation(&dir, Rule::TensorByteLength, &[TERNARY, &t("fc1.bias")]);
}

#[test]
fn rule_3_6_overlapping_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // fc1.bias and fc2.norm.weight are both F32 [13]: give the second the first's bytes.
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            v["fc2.norm.weight"]["data_offsets"] = v["fc1.bias"]["data_offsets"].clone();
        })
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::DataOffsets,
        &[TERNARY, &t("fc2.norm.weight"), "overlaps"],
    );
}

#[test]
fn rule_3_6_gap_between_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let mut last = String::new();
    edit_st(&dir, TERNARY, |st| {
        let h = st.parsed();
        let e = h.entries.last().unwrap().clone();
        last = e.name.clone();
        st.edit_json(|v| v[&e.name]["data_offsets"] = json!([e.start + 1, e.end + 1]));
        st.data.push(0);
    });
    rehash(&dir);
    open_violation(&dir, Rule::DataOffsets, &[TERNARY, &t(&last), "gap"]);
}

#[test]
fn rule_3_6_trailing_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| st.data.extend_from_slice(&[0; 4]));
    rehash(&dir);
    open_violation(&dir, Rule::DataOffsets, &[FP16, "ending at"]);
}

#[test]
fn rule_3_6_data_not_starting_at_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        let h = st.parsed();
        st.edit_json(|v| {
            for e in &h.entries {
                v[&e.name]["data_offsets"] = json!([e.start + 2, e.end + 2]);
            }
        });
        st.data.splice(0..0, [0u8, 0]);
    });
    rehash(&dir);
    open_violation(&dir, Rule::DataOffsets, &[FP16, "starting at offset 0"]);
}

#[test]
fn rule_3_7_manifest_listing_lacks_a_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| unlist(m, "ternary", "fc1.bias"));
    open_violation(
        &dir,
        Rule::HeaderMatchesManifest,
        &[TERNARY, &t("fc1.bias"), "unlisted"],
    );
}

#[test]
fn rule_3_7_manifest_lists_a_tensor_the_file_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["files"]["fp16"]["tensors"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "ghost", "sha256": sha256_hex(b"")}));
    });
    open_violation(
        &dir,
        Rule::HeaderMatchesManifest,
        &[FP16, &t("ghost"), "no such tensor"],
    );
}

// ---------------------------------------------------------------------------------------------
// R4 ternary.safetensors content
// ---------------------------------------------------------------------------------------------

/// Renames tensor `from` to `to` in the header of `file` and in the manifest's listing.
fn rename_in_file(dir: &Path, file: &str, role: &str, from: &str, to: &str) {
    edit_st(dir, file, |st| {
        st.edit_json(|v| {
            let o = v.as_object_mut().unwrap();
            let e = o.remove(from).unwrap();
            o.insert(to.into(), e);
        })
    });
    edit_manifest(dir, |m| {
        let list = m["files"][role]["tensors"].as_array_mut().unwrap();
        let e = list.iter_mut().find(|e| e["name"] == from).unwrap();
        e["name"] = json!(to);
    });
    rehash(dir);
}

/// Adds an empty U8 tensor `name` at the end of `file` and lists it in the manifest.
fn add_empty_tensor(dir: &Path, file: &str, role: &str, name: &str) {
    edit_st(dir, file, |st| {
        let end = st.data.len();
        st.edit_json(|v| {
            v[name] = json!({"dtype": "U8", "shape": [0], "data_offsets": [end, end]});
        })
    });
    edit_manifest(dir, |m| {
        m["files"][role]["tensors"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "sha256": sha256_hex(b"")}));
    });
    rehash(dir);
}

#[test]
fn rule_4_1_scale_tensor_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    rename_in_file(
        &dir,
        TERNARY,
        "ternary",
        "fc1.weight.scale",
        "fc1.weight.scales",
    );
    open_violation(
        &dir,
        Rule::TernaryTensorSet,
        &[TERNARY, &t("fc1.weight.scale"), "no such tensor"],
    );
}

#[test]
fn rule_4_1_extra_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    add_empty_tensor(&dir, TERNARY, "ternary", "extra");
    open_violation(
        &dir,
        Rule::TernaryTensorSet,
        &[TERNARY, "unexpected tensor \"extra\""],
    );
}

#[test]
fn rule_4_2_passthrough_tensor_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["dtype"] = json!("I32"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TernaryShapes,
        &[
            TERNARY,
            &t("fc1.bias"),
            "F32 of shape [13]",
            "I32 of shape [13]",
        ],
    );
}

#[test]
fn rule_4_2_packed_tensor_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.weight"]["shape"] = json!([26, 1]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TernaryShapes,
        &[TERNARY, &t("fc1.weight"), "U8 of shape [13, 2]", "[26, 1]"],
    );
}

#[test]
fn rule_4_2_scale_tensor_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc2.weight.scale"]["shape"] = json!([1, 5]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TernaryShapes,
        &[TERNARY, &t("fc2.weight.scale"), "F32 of shape [5]"],
    );
}

#[test]
fn rule_4_3_trit5_byte_243() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| b[2 * 3] = 243);
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::PackedByteValid,
        &[TERNARY, &t("fc1.weight"), "0xf3", "row 3, byte 0"],
    );
}

#[test]
fn rule_4_3_trit2_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "t2", |p, _| p.params.encoding = Encoding::Trit2);
    // fc2.weight: 13 columns -> 4 bytes per row; field 2 of row 1, byte 2 set to code 3.
    edit_tensor(&dir, TERNARY, "fc2.weight", |b| b[4 + 2] |= 0b0011_0000);
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::PackedByteValid,
        &[TERNARY, &t("fc2.weight"), "row 1, byte 2", "trit2"],
    );
}

#[test]
fn rule_4_4_trit5_padding_not_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // fc1.weight has 7 columns: the last byte of a row holds 2 trits, canonical max 8.
    let mut last = 0u8;
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        assert!(b[2 * 4 + 1] <= 8);
        b[2 * 4 + 1] += 9; // digit 1 at unused position 2; still a valid byte
        last = b[2 * 4 + 1];
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::CanonicalPadding,
        &[
            TERNARY,
            &t("fc1.weight"),
            "0x08",
            &format!("byte 0x{last:02x} at row 4, byte 1"),
        ],
    );
}

#[test]
fn rule_4_4_trit2_padding_not_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "t2", |p, _| p.params.encoding = Encoding::Trit2);
    // 7 columns in trit2: 2 bytes per row, the last holds 3 trits (canonical max 0x3f).
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        assert!(b[2 * 12 + 1] <= 0x3F);
        b[2 * 12 + 1] |= 0x40; // code 1 (valid) in unused field 3
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::CanonicalPadding,
        &[TERNARY, &t("fc1.weight"), "0x3f", "row 12, byte 1"],
    );
}

/// Sets scale `index` of fc1.weight to `value`; with `fix_stats`, also makes the manifest's
/// scale_min/scale_max agree so that only rule 4.5 is broken.
fn set_fc1_scale(dir: &Path, index: usize, value: f32, fix_stats: bool) {
    let mut scales = Vec::new();
    edit_tensor(dir, TERNARY, "fc1.weight.scale", |b| {
        set_f32(b, index, value);
        scales = (0..13).map(|i| f32_at(b, i)).collect();
    });
    if fix_stats {
        let lo = scales.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = scales.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        edit_manifest(dir, |m| {
            let e = tensor_entry(m, "fc1.weight");
            e["scale_min"] = json!(lo as f64);
            e["scale_max"] = json!(hi as f64);
        });
    }
    rehash(dir);
}

#[test]
fn rule_4_5_nan_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 2, f32::NAN, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "NaN at scale index 2"],
    );
}

#[test]
fn rule_4_5_zero_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 0, 0.0, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "scale 0 at scale index 0"],
    );
}

#[test]
fn rule_4_5_negative_zero_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 5, -0.0, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "scale index 5"],
    );
}

#[test]
fn rule_4_5_negative_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 12, -1.0, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "scale -1 at scale index 12"],
    );
}

#[test]
fn rule_4_5_infinite_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 1, f32::INFINITY, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "inf at scale index 1"],
    );
}

#[test]
fn rule_4_5_scale_overflowing_f16_over_nonzero_trits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    set_fc1_scale(&dir, r, 1e6, true);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[
            TERNARY,
            &t("fc1.weight"),
            &format!("scale 1e6 (F16 inf) at scale index {r}"),
            &format!("row {r}"),
        ],
    );
}

#[test]
fn rule_4_5_scale_at_the_f16_overflow_boundary() {
    // 65519 rounds to F16 65504 (finite); 65520 rounds to infinity.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    let r = row_with_nonzero_trit(&dir);
    set_fc1_scale(&dir, r, 65519.0, true);
    let b = Bundle::open(&dir).unwrap();
    check_encoding(&b).unwrap();
    check_scales(&b).unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    set_fc1_scale(&dir, r, 65520.0, true);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "F16 inf"],
    );
}

#[test]
fn rule_4_5_scale_underflowing_f16_over_nonzero_trits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    set_fc1_scale(&dir, r, 1e-9, true);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), &format!("at scale index {r}")],
    );
}

#[test]
fn rule_4_5_unrepresentable_scale_over_zero_trits_is_allowed() {
    // A scale whose F16 is infinite is fine when every trit it governs is 0: make row r all
    // zero, fix the manifest's statistics and the FP16 row, and everything passes.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    let nonzero = row_trits(&dir, "fc1.weight", r)
        .iter()
        .filter(|&&t| t != 0)
        .count() as u64;
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        b[2 * r] = 0x79; // five zero trits
        b[2 * r + 1] = 0x04; // two zero trits, unused positions 0
    });
    edit_tensor(&dir, FP16, "fc1.weight", |b| {
        b[2 * 7 * r..2 * 7 * (r + 1)].fill(0); // +0.0
    });
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.weight");
        e["zeros"] = json!(e["zeros"].as_u64().unwrap() + nonzero);
    });
    set_fc1_scale(&dir, r, 1e6, true);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

/// Makes quantized tensor `name` consistent again after its packed bytes or scales changed:
/// rewrites its FP16 values from the packed data, its manifest `zeros`, `scale_min` and
/// `scale_max` from the data, and rehashes.
fn resync(dir: &Path, name: &str) {
    let (fp16, zeros, lo, hi) = {
        let b = Bundle::open(dir).unwrap();
        let p = b.packed(name).unwrap();
        let mut trits = vec![0i8; p.cols];
        let mut zeros = 0u64;
        for r in 0..p.rows {
            p.encoding.unpack_row(p.row(r), &mut trits).unwrap();
            zeros += trits.iter().filter(|&&t| t == 0).count() as u64;
        }
        let s = p.scales();
        let lo = s.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (p.dequantize_f16().unwrap(), zeros, lo, hi)
    };
    edit_tensor(dir, FP16, name, |b| {
        for (i, v) in fp16.iter().enumerate() {
            set_u16(b, i, v.to_bits());
        }
    });
    edit_manifest(dir, |m| {
        let e = tensor_entry(m, name);
        e["zeros"] = json!(zeros);
        e["scale_min"] = json!(lo as f64);
        e["scale_max"] = json!(hi as f64);
    });
    rehash(dir);
}

#[test]
fn rule_4_5_subnormal_f16_scale_over_nonzero_trits_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    let h = f16::from_f32(1e-7);
    assert!(h.to_bits() != 0 && h.to_bits() < 0x0400, "F16 subnormal");
    edit_tensor(&dir, TERNARY, "fc1.weight.scale", |b| set_f32(b, r, 1e-7));
    resync(&dir, "fc1.weight");
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

/// Rule 4.5 concerns every scale. `check_scales` only examines the first scale whose F16
/// rounding is not usable: when that one governs only zero trits, a later unusable scale that
/// governs non-zero trits goes unreported, and a bundle whose FP16 file holds infinities
/// passes every data check.
#[test]
fn rule_4_5_every_unrepresentable_scale_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = (1..13)
        .find(|&r| row_trits(&dir, "fc1.weight", r).iter().any(|&t| t != 0))
        .unwrap();
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        b[0] = 0x79; // row 0: all zero trits
        b[1] = 0x04;
    });
    edit_tensor(&dir, TERNARY, "fc1.weight.scale", |b| {
        set_f32(b, 0, 1e6); // fine: governs only zero trits
        set_f32(b, r, 1e6); // breaks rule 4.5: governs non-zero trits
    });
    resync(&dir, "fc1.weight");
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), &format!("at scale index {r}")],
    );
}

#[test]
fn rule_4_6_zeros_statistic_off_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let mut zeros = 0;
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.weight");
        zeros = e["zeros"].as_u64().unwrap();
        e["zeros"] = json!(zeros - 1);
    });
    data_violation(
        &dir,
        check_encoding,
        Rule::TensorStats,
        &[
            TERNARY,
            &t("fc1.weight"),
            &format!("zeros {} (manifest)", zeros - 1),
            &format!("found {zeros} zero trits"),
        ],
    );
}

#[test]
fn rule_4_6_scale_min_one_ulp_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc2.weight");
        let lo = e["scale_min"].as_f64().unwrap() as f32;
        let below = f32::from_bits(lo.to_bits() - 1);
        e["scale_min"] = json!(below as f64);
    });
    data_violation(
        &dir,
        check_scales,
        Rule::TensorStats,
        &[TERNARY, &t("fc2.weight"), "scale_min"],
    );
}

#[test]
fn rule_4_6_scale_max_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.weight");
        let hi = e["scale_max"].as_f64().unwrap();
        e["scale_max"] = json!(hi * 2.0);
    });
    data_violation(
        &dir,
        check_scales,
        Rule::TensorStats,
        &[TERNARY, &t("fc1.weight"), "scale_max"],
    );
}

#[test]
fn rule_4_7_bias_value_too_large_for_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc1.bias", |b| set_f32(b, 3, 1e6));
    rehash(&dir);
    data_violation(
        &dir,
        check_passthrough,
        Rule::PassthroughRange,
        &[TERNARY, &t("fc1.bias"), "1000000 at flat index 3"],
    );
}

#[test]
fn rule_4_7_nan_passthrough_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc2.norm.weight", |b| {
        set_f32(b, 0, f32::NAN)
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_passthrough,
        Rule::PassthroughRange,
        &[TERNARY, &t("fc2.norm.weight"), "NaN at flat index 0"],
    );
}

#[test]
fn rule_4_7_f16_range_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    // 65519 rounds to the largest finite F16 (65504): valid, with the matching FP16 value.
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_tensor(&dir, TERNARY, "fc1.bias", |b| set_f32(b, 3, -65519.0));
    edit_tensor(&dir, FP16, "fc1.bias", |b| set_u16(b, 3, 0xFBFF));
    rehash(&dir);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
    // 65520 rounds to infinity.
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_tensor(&dir, TERNARY, "fc1.bias", |b| set_f32(b, 3, 65520.0));
    rehash(&dir);
    data_violation(
        &dir,
        check_passthrough,
        Rule::PassthroughRange,
        &[TERNARY, &t("fc1.bias"), "65520 at flat index 3"],
    );
}

#[test]
fn rule_4_5_and_4_7_writer_refuses_unrepresentable_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut values = common::values(7, 91);
    values[7..14].fill(1e6); // row 1 of fc1.weight: scale 1e6 over non-zero trits
    let src2 = rebuild_source(&src, "fc1.weight", values);
    let dest = tmp.path().join("a");
    expect_violation(
        write_bundle(&dest, &src2, &plan, &WriteOptions::default()),
        Rule::ScaleValid,
        &["tiny.safetensors", &t("fc1.weight"), "scale index 1"],
    );
    assert!(!dest.exists());
    let mut bias = common::values(8, 13);
    bias[4] = -7e4;
    let src3 = rebuild_source(&src, "fc1.bias", bias);
    expect_violation(
        write_bundle(&dest, &src3, &plan, &WriteOptions::default()),
        Rule::PassthroughRange,
        &["tiny.safetensors", &t("fc1.bias"), "flat index 4"],
    );
    assert!(!dest.exists());
}

/// A copy of `src` with tensor `name`'s values replaced.
fn rebuild_source(src: &MemorySource, name: &str, values: Vec<f32>) -> MemorySource {
    let mut out = MemorySource::new(src.path());
    for tensor in src.tensors() {
        let v = if tensor.name == name {
            values.clone()
        } else {
            src.load_f32(&tensor.name).unwrap()
        };
        out.push(tensor.name, tensor.shape, v).unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// R5 fp16.safetensors content
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_5_1_fp16_tensor_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        st.edit_json(|v| v["fc1.bias"]["dtype"] = json!("BF16"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, &t("fc1.bias"), "F16 of shape [13]", "BF16"],
    );
}

#[test]
fn rule_5_1_fp16_tensor_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        st.edit_json(|v| v["fc1.weight"]["shape"] = json!([7, 13]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, &t("fc1.weight"), "[13, 7]", "[7, 13]"],
    );
}

#[test]
fn rule_5_1_fp16_tensor_missing_and_extra() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    rename_in_file(&dir, FP16, "fp16", "fc2.weight", "fc2.weights");
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, &t("fc2.weight"), "no such tensor"],
    );
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    add_empty_tensor(&dir, FP16, "fp16", "extra");
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, "unexpected tensor \"extra\""],
    );
}

#[test]
fn rule_5_2_one_flipped_fp16_bit_is_located() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // Flat index 10 of fc1.weight [13, 7] is row 1, column 3.
    let mut before = 0;
    edit_tensor(&dir, FP16, "fc1.weight", |b| {
        before = u16_at(b, 10);
        set_u16(b, 10, before ^ 1);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::DequantizationExact,
        &[
            FP16,
            &t("fc1.weight"),
            &format!("F16 0x{before:04x}"),
            "flat index 10 (row 1, column 3)",
            &format!("found 0x{:04x}", before ^ 1),
        ],
    );
}

#[test]
fn rule_5_2_negative_zero_for_a_zero_trit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let (r, c) = (0..5)
        .find_map(|r| {
            let trits = row_trits(&dir, "fc2.weight", r);
            trits.iter().position(|&t| t == 0).map(|c| (r, c))
        })
        .expect("a zero trit");
    let i = r * 13 + c;
    edit_tensor(&dir, FP16, "fc2.weight", |b| {
        assert_eq!(u16_at(b, i), 0x0000, "t = 0 dequantizes to +0.0");
        set_u16(b, i, 0x8000);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::DequantizationExact,
        &[
            FP16,
            &t("fc2.weight"),
            &format!("flat index {i} (row {r}, column {c})"),
            "found 0x8000",
        ],
    );
}

#[test]
fn rule_5_3_one_flipped_bias_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, FP16, "fc1.bias", |b| {
        let v = u16_at(b, 4);
        set_u16(b, 4, v ^ 0x0400);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::PassthroughExact,
        &[FP16, &t("fc1.bias"), "flat index 4"],
    );
}

#[test]
fn rule_5_3_passthrough_f32_changed_without_fp16() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // A change in the F32 value that moves its F16 rounding.
    let mut new = 0.0f32;
    edit_tensor(&dir, TERNARY, "fc2.norm.weight", |b| {
        new = f32_at(b, 6) + 0.25;
        set_f32(b, 6, new);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::PassthroughExact,
        &[
            FP16,
            &t("fc2.norm.weight"),
            &format!("F16 0x{:04x}", f16::from_f32(new).to_bits()),
            "flat index 6",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// R6 validation.safetensors content
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_6_1_labels_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["labels"]["dtype"] = json!("U64"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t("labels"), "I64 of shape [4]", "U64"],
    );
}

#[test]
fn rule_6_1_inputs_of_the_wrong_width() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["inputs"]["shape"] = json!([7, 4]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t("inputs"), "[7, 7]", "[7, 4]"],
    );
}

#[test]
fn rule_6_1_difficulty_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["difficulty"]["dtype"] = json!("I8"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t("difficulty")],
    );
}

#[test]
fn rule_6_1_extra_tensor_and_missing_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, o| o.validation = Some(validation_set()));
    add_empty_tensor(&dir, VALIDATION, "validation", "extra");
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, "unexpected tensor \"extra\""],
    );
    let dir = tiny_bundle(&tmp, "b", |_, o| o.validation = Some(validation_set()));
    rename_in_file(&dir, VALIDATION, "validation", "inputs", "x");
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, "a tensor named inputs"],
    );
}

#[test]
fn rule_6_1_validation_file_to_embed_is_checked_naming_the_tensor() {
    use ternary_bundle::format::safetensors::Dtype;
    use ternary_bundle::source::load_validation_set;
    use ternary_bundle::write::safetensors::write_safetensors_file;
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, tensors: Vec<(String, Dtype, Vec<u64>)>| {
        let path = tmp.path().join(name);
        write_safetensors_file(&path, tensors, &[], false, |n| {
            let e = match n {
                "inputs" => 4 * 3 * 2,
                "labels" => 8 * 2,
                _ => 4,
            };
            Ok(vec![0; e])
        })
        .unwrap();
        path
    };
    // Labels for 2 rows, inputs of 3 rows.
    let path = write(
        "rows.safetensors",
        vec![
            ("inputs".into(), Dtype::F32, vec![3, 2]),
            ("labels".into(), Dtype::I64, vec![2]),
        ],
    );
    expect_violation(
        load_validation_set(&path),
        Rule::ValidationTensors,
        &["rows.safetensors", &t("labels"), "shape [3]", "found [2]"],
    );
    // Inputs of the wrong dtype.
    let path = write(
        "dtype.safetensors",
        vec![
            ("inputs".into(), Dtype::I32, vec![3, 2]),
            ("labels".into(), Dtype::I64, vec![2]),
        ],
    );
    expect_violation(
        load_validation_set(&path),
        Rule::ValidationTensors,
        &[
            "dtype.safetensors",
            &t("inputs"),
            "F32 of rank 2",
            "I32 of shape [3, 2]",
        ],
    );
    // No labels at all.
    let path = write(
        "nolabels.safetensors",
        vec![("inputs".into(), Dtype::F32, vec![3, 2])],
    );
    expect_violation(
        load_validation_set(&path),
        Rule::ValidationTensors,
        &[
            "nolabels.safetensors",
            &t("labels"),
            "I64 [N]",
            "found none",
        ],
    );
}

#[test]
fn rule_6_1_writer_refuses_an_empty_validation_set() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let options = WriteOptions {
        validation: Some(ValidationSet {
            origin: "val.safetensors".into(),
            inputs: vec![],
            labels: vec![],
            difficulty: None,
        }),
        ..Default::default()
    };
    expect_violation(
        write_bundle(&tmp.path().join("b"), &src, &plan, &options),
        Rule::ValidationTensors,
        &["val.safetensors"],
    );
}

#[test]
fn rule_6_1_original_predictions_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["original_predictions"]["dtype"] = json!("U64"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[
            VALIDATION,
            &t("original_predictions"),
            "I64 of shape [4]",
            "U64",
        ],
    );
}

#[test]
fn rule_6_1_original_predictions_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // [2, 2] holds the same 32 bytes as [4]: only the shape is wrong.
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["original_predictions"]["shape"] = json!([2, 2]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[
            VALIDATION,
            &t("original_predictions"),
            "I64 of shape [4]",
            "I64 of shape [2, 2]",
        ],
    );
}

#[test]
fn rule_6_1_original_predictions_in_a_format_1_bundle() {
    // A 1.x reader refuses the tensor, so a bundle that declares 1.x cannot carry it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    assert_eq!(manifest(&dir)["format_version"], "2.0");
    edit_manifest(&dir, |m| m["format_version"] = json!("1.4"));
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[
            VALIDATION,
            &t("original_predictions"),
            "no original_predictions in a format 1.4 bundle (needs format 2.0 or later)",
        ],
    );
}

#[test]
fn rule_6_3_original_prediction_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The last layer has 5 outputs: class 5 does not exist.
    edit_tensor(&dir, VALIDATION, "original_predictions", |b| {
        b[8..16].copy_from_slice(&5i64.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::OriginalPredictions,
        &[
            VALIDATION,
            &t("original_predictions"),
            "original_predictions in 0..5",
            "5 at index 1",
        ],
    );
}

#[test]
fn rule_6_3_negative_original_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "original_predictions", |b| {
        b[24..32].copy_from_slice(&(-1i64).to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::OriginalPredictions,
        &[VALIDATION, &t("original_predictions"), "-1 at index 3"],
    );
}

#[test]
fn rule_6_3_the_writer_stores_the_original_models_predictions() {
    // What the writer stores is the source model's argmax on each input, in f32, before
    // quantization: recomputed here from the source with the reference model.
    use ternary_bundle::model::reference::{argmax_rows, forward_source};
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    let (src, plan) = common::tiny_model(7);
    let b = Bundle::open(&dir).unwrap();
    let v = validation_set();
    let x = ndarray::ArrayView2::from_shape((4, 7), &v.inputs).unwrap();
    let expected =
        argmax_rows(&forward_source(&src, &plan.model, &b.facts().activations, x).unwrap());
    let stored: Vec<usize> = St::read(&dir.join(VALIDATION))
        .tensor_mut("original_predictions")
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    assert_eq!(stored, expected);
    // Not the labels: the labels are the data's, the predictions the model's.
    assert_ne!(stored, [0, 1, 2, 4]);
}

#[test]
fn rule_6_2_nan_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "inputs", |b| set_f32(b, 9, f32::NAN));
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[VALIDATION, &t("inputs"), "NaN at flat index 9"],
    );
}

#[test]
fn rule_6_2_label_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The last layer has 5 outputs: label 5 is out of range.
    edit_tensor(&dir, VALIDATION, "labels", |b| {
        b[16..24].copy_from_slice(&5i64.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[VALIDATION, &t("labels"), "0..5", "5 at index 2"],
    );
}

#[test]
fn rule_6_2_negative_label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "labels", |b| {
        b[0..8].copy_from_slice(&i64::MIN.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[
            VALIDATION,
            &t("labels"),
            &format!("{} at index 0", i64::MIN),
        ],
    );
}

#[test]
fn rule_6_2_writer_refuses_bad_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut v = validation_set();
    v.labels[3] = 5;
    let options = WriteOptions {
        validation: Some(v),
        ..Default::default()
    };
    expect_violation(
        write_bundle(&tmp.path().join("b"), &src, &plan, &options),
        Rule::ValidationValues,
        &["val.safetensors", &t("labels"), "5 at index 3"],
    );
}

// ---------------------------------------------------------------------------------------------
// R7 checksums
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_7_1_header_padding_byte_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // Some file's header carries padding spaces (8 + N is a multiple of 8); a padding byte is
    // in no tensor's data, so only the whole-file digest can notice.
    let file = [TERNARY, FP16, VALIDATION]
        .into_iter()
        .find(|f| St::read(&dir.join(f)).header.ends_with(b" "))
        .expect("a header with padding");
    edit_st(&dir, file, |st| {
        let last = st.header.len() - 1;
        st.header[last] = b'\n'; // still JSON whitespace: the header stays valid
    });
    let b = Bundle::open(&dir).unwrap();
    expect_violation(check_digests(&b), Rule::FileDigest, &[file, "sha256"]);
    expect_violation(check_all(&b), Rule::FileDigest, &[file]);
}

#[test]
fn rule_7_1_manifest_file_digest_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let wrong = sha256_hex(b"something else");
    edit_manifest(&dir, |m| m["files"]["fp16"]["sha256"] = json!(wrong));
    let b = Bundle::open(&dir).unwrap();
    expect_violation(
        check_digests(&b),
        Rule::FileDigest,
        &[FP16, &format!("expected sha256 {wrong}")],
    );
}

#[test]
fn rule_7_2_tensor_byte_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc2.norm.weight", |b| b[17] ^= 0x20);
    let b = Bundle::open(&dir).unwrap();
    expect_violation(
        check_digests(&b),
        Rule::TensorDigest,
        &[TERNARY, &t("fc2.norm.weight")],
    );
    expect_violation(
        check_all(&b),
        Rule::TensorDigest,
        &[t("fc2.norm.weight").as_str()],
    );
}

#[test]
fn rule_7_2_validation_tensor_byte_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "difficulty", |b| b[1] = 200);
    let b = Bundle::open(&dir).unwrap();
    expect_violation(
        check_digests(&b),
        Rule::TensorDigest,
        &[VALIDATION, &t("difficulty")],
    );
}

// ---------------------------------------------------------------------------------------------
// R8 quantizer input
// ---------------------------------------------------------------------------------------------

#[test]
fn rule_8_1_nan_weight_is_refused_at_write_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut values = common::values(7, 91);
    values[40] = f32::NAN;
    let src = rebuild_source(&src, "fc1.weight", values);
    let dest = tmp.path().join("b");
    expect_violation(
        write_bundle(&dest, &src, &plan, &WriteOptions::default()),
        Rule::SourceWeights,
        &["tiny.safetensors", &t("fc1.weight"), "NaN at flat index 40"],
    );
    assert!(!dest.exists(), "a refused write leaves nothing behind");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "staging directory left behind");
}

#[test]
fn rule_8_1_infinite_passthrough_weight_is_refused_at_write_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut values = common::values(9, 13);
    values[11] = f32::NEG_INFINITY;
    let src = rebuild_source(&src, "fc2.norm.weight", values);
    expect_violation(
        write_bundle(&tmp.path().join("b"), &src, &plan, &WriteOptions::default()),
        Rule::SourceWeights,
        &[
            "tiny.safetensors",
            &t("fc2.norm.weight"),
            "-inf at flat index 11",
        ],
    );
}

#[test]
fn rule_8_2_i32_source_tensor() {
    use safetensors::tensor::{Dtype as StDtype, TensorView};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ckpt.safetensors");
    let ints: Vec<u8> = [1i32, -2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let floats: Vec<u8> = [0.5f32, -1.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "counts",
            TensorView::new(StDtype::I32, vec![2, 2], &ints).unwrap(),
        ),
        (
            "w",
            TensorView::new(StDtype::F32, vec![2], &floats).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    let src = CheckpointSource::open(&path).unwrap();
    assert_eq!(src.load_f32("w").unwrap(), vec![0.5, -1.5]);
    expect_violation(
        src.load_f32("counts"),
        Rule::SourceDtype,
        &["ckpt.safetensors", &t("counts"), "F32, F16 or BF16", "I32"],
    );
}

#[test]
fn rule_7_3_manifest_edited_without_resealing() {
    // Any change to the manifest that leaves it valid is caught by its own digest: here the
    // provenance text, which no other rule constrains.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "\"tool\": \"ternary-bundle\"",
            "\"tool\": \"ternary-bundlf\"",
            1,
        ),
    )
    .unwrap();
    open_violation(
        &dir,
        Rule::ManifestDigest,
        &[MANIFEST, "rule 7.3", "manifest_sha256"],
    );
}

#[test]
fn rule_7_3_damaged_digest_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let digest = m["manifest_sha256"].as_str().unwrap();
    let flipped: String = digest
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'a' {
                    'b'
                } else {
                    'a'
                }
            } else {
                c
            }
        })
        .collect();
    std::fs::write(&path, text.replace(digest, &flipped)).unwrap();
    open_violation(&dir, Rule::ManifestDigest, &[MANIFEST, &flipped]);
}

#[test]
fn errors_of_an_open_bundle_name_file_tensor_and_rule() {
    // What the model code reports if a tensor it reads is missing or undecodable (a bundle
    // that skipped validation): the file, the tensor, the rule, expected and found.
    use ternary_bundle::format::encoding::RowError;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bundle::open(bundle(&tmp)).unwrap();
    let e = b.row_error(
        "fc1.weight",
        3,
        RowError::InvalidByte {
            index: 1,
            byte: 243,
        },
    );
    expect_violation::<()>(
        Err(e),
        Rule::PackedByteValid,
        &[
            TERNARY,
            &t("fc1.weight"),
            "bytes 0..=242 (trit5)",
            "byte 0xf3 at row 3, byte 1",
        ],
    );
    let e = b.missing_tensor(ternary_bundle::FileRole::Fp16, "fc9.weight");
    expect_violation::<()>(
        Err(e),
        Rule::HeaderMatchesManifest,
        &[FP16, &t("fc9.weight"), "no such tensor"],
    );
}
