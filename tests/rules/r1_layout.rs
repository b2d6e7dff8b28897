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
