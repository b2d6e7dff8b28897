//! Rules 1.x: the bundle directory and its files.

use super::*;

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

#[test]
fn rule_1_6_bundle_with_an_asset_opens_and_passes_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.assets().len(), 1);
    let a = b.asset(TOKENIZER).expect("the listed asset");
    assert_eq!(a.bytes(), TOKENIZER_BYTES, "carried byte for byte");
    assert_eq!(a.path(), dir.join(TOKENIZER));
    check_all(&b).unwrap();
}

#[test]
fn rule_1_6_listed_asset_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    std::fs::remove_file(dir.join(TOKENIZER)).unwrap();
    open_violation(&dir, Rule::AssetFiles, &[TOKENIZER, "no such file"]);
}

#[test]
fn rule_1_6_listed_asset_of_the_wrong_size() {
    let tmp = tempfile::tempdir().unwrap();
    let longer = bundle_with_assets(&tmp, "longer");
    let mut bytes = TOKENIZER_BYTES.to_vec();
    bytes.push(b'\n');
    std::fs::write(longer.join(TOKENIZER), &bytes).unwrap();
    let n = TOKENIZER_BYTES.len();
    open_violation(
        &longer,
        Rule::AssetFiles,
        &[
            TOKENIZER,
            &format!("{n} bytes (manifest files.assets)"),
            &format!("found {} bytes", n + 1),
        ],
    );
    let empty = bundle_with_assets(&tmp, "empty");
    std::fs::write(empty.join(TOKENIZER), b"").unwrap();
    open_violation(&empty, Rule::AssetFiles, &[TOKENIZER, "found 0 bytes"]);
}

#[test]
fn rule_1_6_listed_asset_of_size_0_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, o| {
        o.assets = vec![asset("special_tokens_map.json", b"")]
    });
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.asset("special_tokens_map.json").unwrap().bytes(), b"");
    check_all(&b).unwrap();
}

/// Rule 1.3 covers every asset file: a listed asset that is a symbolic link (even to a valid
/// copy), a dangling link or a directory breaks rule 1.3, not rule 1.6.
#[test]
fn rule_1_3_asset_is_a_symlink_or_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "link");
    let copy = tmp.path().join("copy.json");
    std::fs::rename(dir.join(TOKENIZER), &copy).unwrap();
    std::os::unix::fs::symlink(&copy, dir.join(TOKENIZER)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[TOKENIZER, "symbolic link"]);

    let dir = bundle_with_assets(&tmp, "dangling");
    std::fs::remove_file(dir.join(TOKENIZER)).unwrap();
    std::os::unix::fs::symlink("nowhere.json", dir.join(TOKENIZER)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[TOKENIZER, "symbolic link"]);

    let dir = bundle_with_assets(&tmp, "dir");
    std::fs::remove_file(dir.join(TOKENIZER)).unwrap();
    std::fs::create_dir(dir.join(TOKENIZER)).unwrap();
    open_violation(&dir, Rule::RegularFile, &[TOKENIZER, "a directory"]);
}

#[test]
fn rule_1_3_asset_fifo_is_refused_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    std::fs::remove_file(dir.join(TOKENIZER)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join(TOKENIZER),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Bundle::open(&d).map(|_| ()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("opening a bundle with an asset FIFO hung");
    expect_violation(result, Rule::RegularFile, &[TOKENIZER, "a FIFO"]);
}

/// Rule 1.5: a listed asset is a bundle file, not an extra entry; the same name unlisted is an
/// extra entry (ignored by readers).
#[test]
fn rule_1_5_listed_assets_are_not_extras_but_unlisted_ones_are() {
    let tmp = tempfile::tempdir().unwrap();
    let listed = bundle_with_assets(&tmp, "listed");
    std::fs::write(listed.join("tokenizer_config.json"), b"{}").unwrap();
    let b = Bundle::open(&listed).unwrap();
    assert_eq!(b.extras(), ["tokenizer_config.json".to_string()]);
    check_all(&b).unwrap();

    let unlisted = bundle(&tmp);
    std::fs::write(unlisted.join(TOKENIZER), TOKENIZER_BYTES).unwrap();
    let b = Bundle::open(&unlisted).unwrap();
    assert_eq!(b.extras(), [TOKENIZER.to_string()]);
    assert!(b.assets().is_empty());
    check_all(&b).unwrap();
}

/// Assets are checked in the order listed (spec section 11, step 4): with two bad ones, the
/// first listed is reported.
#[test]
fn rule_1_6_assets_are_checked_in_the_order_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, o| {
        o.assets = vec![
            asset("generation_config.json", b"{\"do_sample\": false}"),
            asset(TOKENIZER, TOKENIZER_BYTES),
        ]
    });
    std::fs::remove_file(dir.join(TOKENIZER)).unwrap();
    std::fs::write(dir.join("generation_config.json"), b"{}").unwrap();
    open_violation(&dir, Rule::AssetFiles, &["generation_config.json"]);
    edit_manifest(&dir, |m| {
        m["files"]["assets"].as_array_mut().unwrap().reverse();
    });
    open_violation(&dir, Rule::AssetFiles, &[TOKENIZER, "no such file"]);
}

/// Spec section 11: rule 1.6 (step 4) is checked before the safetensors files (step 5), so a
/// bundle whose asset is missing and whose fp16 file has the wrong size breaks rule 1.6 first.
#[test]
fn rule_1_6_is_checked_before_the_safetensors_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    std::fs::remove_file(dir.join(TOKENIZER)).unwrap();
    let mut bytes = std::fs::read(dir.join(FP16)).unwrap();
    bytes.push(0);
    std::fs::write(dir.join(FP16), bytes).unwrap();
    open_violation(&dir, Rule::AssetFiles, &[TOKENIZER]);
}
