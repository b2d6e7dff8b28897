//! Tokenizers and carried asset files (rules 1.3 and 1.6, spec 18.5): `src/hf/tokenizer.rs`
//! against the fixture of `fixtures/tokenizer/` (made by its make_tokenizer.py with Hugging
//! Face's Python `tokenizers`): the Rust crate must give the ids the Python package gave.

use std::fs;
use std::path::{Path, PathBuf};

use ternary_bundle::error::Error;
use ternary_bundle::hf::tokenizer::{
    carried_assets, tokenizer_vocab_size, validation_from_text, MAX_ASSET_BYTES, MAX_TEXT_BYTES,
};

/// The tiny test decoders' vocab_size.
const TEST_VOCAB: usize = 53;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer")
}

fn fixture(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

fn tokenizer_json() -> Vec<u8> {
    fs::read(fixture("tokenizer.json")).unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&fs::read(fixture("expected_ids.json")).unwrap()).unwrap()
}

/// The ids make_tokenizer.py's Python tokenizers gave for `name` with tokenizer.json.
fn expected_ids(name: &str) -> Vec<i64> {
    ids_of(&expected()[name])
}

fn ids_of(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// The message of an `InvalidArgument` error (any other error fails the test).
fn invalid_argument<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected Error::InvalidArgument, got {other:?}"),
    }
}

fn write_text(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("text.txt");
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn ids_equal_the_python_packages() {
    // corpus.txt: the training text; sample.txt: characters the tokenizer does not know (<unk>),
    // the added token, CR LF, tabs, runs of spaces, CJK and an emoji.
    for name in ["corpus.txt", "sample.txt"] {
        let want = expected_ids(name);
        let n = want.len();
        let v = validation_from_text(&tokenizer_json(), &fixture(name), n, TEST_VOCAB).unwrap();
        let ids = v.input_ids.as_ref().unwrap();
        assert_eq!(ids.tokens, n);
        assert_eq!(
            ids.ids, want,
            "{name}: the Rust crate's ids differ from Python's"
        );
        assert_eq!(v.samples(), 1);
    }
    // The fixture exercises what it should: unknown characters and the added token.
    let e = expected();
    let sample = expected_ids("sample.txt");
    assert!(sample.contains(&e["unk_id"].as_i64().unwrap()));
    assert!(sample.contains(&48));
}

#[test]
fn byte_level_ids_equal_the_python_packages() {
    // Llama 3's pre-tokenizer pattern and byte-level BPE, as most published tokenizers are.
    let dir = fixture_dir().join("byte-level");
    let json = fs::read(dir.join("tokenizer.json")).unwrap();
    let vocab = tokenizer_vocab_size(&json).unwrap();
    assert_eq!(vocab, 300);
    for name in ["corpus.txt", "sample.txt"] {
        let want = ids_of(&expected()["byte-level"][name]);
        let v = validation_from_text(&json, &fixture(name), want.len(), vocab).unwrap();
        assert_eq!(
            v.input_ids.unwrap().ids,
            want,
            "byte-level {name}: the Rust crate's ids differ from Python's"
        );
    }
    // The byte-level directory is a model directory too.
    let assets = carried_assets(&dir).unwrap();
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].bytes, json);
}

#[test]
fn special_tokens_are_not_added() {
    // The fixture's post-processor puts <s> first when special tokens are added.
    let bos = expected()["bos_id"].as_i64().unwrap();
    let v = validation_from_text(&tokenizer_json(), &fixture("corpus.txt"), 2, TEST_VOCAB).unwrap();
    assert!(!v.input_ids.unwrap().ids.contains(&bos));
}

#[test]
fn ids_are_cut_into_sequences_and_the_rest_dropped() {
    let want = expected_ids("corpus.txt");
    let t = 8;
    let n = want.len() / t;
    assert_ne!(want.len() % t, 0, "the test should drop a remainder");
    let path = fixture("corpus.txt");
    let v = validation_from_text(&tokenizer_json(), &path, t, TEST_VOCAB).unwrap();
    assert_eq!(v.origin, path);
    assert!(v.inputs.is_empty());
    assert_eq!(v.difficulty, None);
    assert_eq!(v.samples(), n);
    let ids = v.input_ids.unwrap();
    assert_eq!(ids.tokens, t);
    assert_eq!(ids.ids, want[..n * t]);
    // Labels: the next token of every position but the last of each sequence.
    let labels: Vec<i64> = want[..n * t]
        .chunks(t)
        .flat_map(|s| s[1..].to_vec())
        .collect();
    assert_eq!(v.labels.len(), n * (t - 1));
    assert_eq!(v.labels, labels);
}

#[test]
fn truncation_and_padding_in_the_file_are_ignored() {
    let mut json: serde_json::Value = serde_json::from_slice(&tokenizer_json()).unwrap();
    json["truncation"] = serde_json::json!({
        "direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0
    });
    json["padding"] = serde_json::json!({
        "strategy": {"Fixed": 4096}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 2, "pad_type_id": 0, "pad_token": "</s>"
    });
    let bytes = serde_json::to_vec(&json).unwrap();
    let want = expected_ids("corpus.txt");
    let v = validation_from_text(&bytes, &fixture("corpus.txt"), want.len(), TEST_VOCAB).unwrap();
    assert_eq!(v.input_ids.unwrap().ids, want);
}

#[test]
fn a_text_shorter_than_one_sequence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // "t", "he".
    let path = write_text(dir.path(), b"the");
    let m = invalid_argument(validation_from_text(
        &tokenizer_json(),
        &path,
        64,
        TEST_VOCAB,
    ));
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(
        m.contains("the text gives 2 tokens, fewer than one sequence of 64"),
        "{m}"
    );
    let empty = write_text(dir.path(), b"");
    let m = invalid_argument(validation_from_text(
        &tokenizer_json(),
        &empty,
        2,
        TEST_VOCAB,
    ));
    assert!(
        m.contains("gives 0 tokens, fewer than one sequence of 2"),
        "{m}"
    );
}

#[test]
fn a_text_that_is_not_utf8_is_refused_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(dir.path(), b"alice was \xff beginning");
    let m = invalid_argument(validation_from_text(
        &tokenizer_json(),
        &path,
        2,
        TEST_VOCAB,
    ));
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(m.contains("UTF-8"), "{m}");
    assert!(m.contains("(0xff) at byte offset 10"), "{m}");
    // A sequence cut short at the end of the file.
    let path = write_text(
        dir.path(),
        "alice was \u{e9}".as_bytes().split_last().unwrap().1,
    );
    let m = invalid_argument(validation_from_text(
        &tokenizer_json(),
        &path,
        2,
        TEST_VOCAB,
    ));
    assert!(m.contains("at byte offset 10"), "{m}");
}

#[test]
fn a_text_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = invalid_argument(validation_from_text(
        &tokenizer_json(),
        dir.path(),
        2,
        TEST_VOCAB,
    ));
    assert!(
        m.contains("expected a regular file, found a directory"),
        "{m}"
    );
    let missing = dir.path().join("missing.txt");
    let err = validation_from_text(&tokenizer_json(), &missing, 2, TEST_VOCAB).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.txt"), "{err}");
}

#[test]
fn ids_outside_the_models_vocabulary_are_refused() {
    // The fixture's tokenizer has 49 tokens: a model of 10 cannot take them.
    let m = invalid_argument(validation_from_text(
        &tokenizer_json(),
        &fixture("corpus.txt"),
        2,
        10,
    ));
    let first = expected_ids("corpus.txt")
        .into_iter()
        .position(|id| id >= 10)
        .unwrap();
    let id = expected_ids("corpus.txt")[first];
    assert!(m.contains(&format!("token {first} is id {id} (")), "{m}");
    assert!(m.contains("vocab_size 10"), "{m}");
    // The token's string is named: the first id >= 10 of "alice was ..." is a letter.
    assert!(m.contains("(\""), "{m}");
}

#[test]
fn a_sequence_length_below_two_is_refused() {
    for t in [0, 1] {
        let m = invalid_argument(validation_from_text(
            &tokenizer_json(),
            &fixture("corpus.txt"),
            t,
            TEST_VOCAB,
        ));
        assert!(m.contains("at least 2 tokens per sequence"), "{m}");
        assert!(m.contains(&format!("found {t}")), "{m}");
    }
}

#[test]
fn a_tokenizer_that_does_not_parse_is_refused_with_the_file_name() {
    for bad in [
        &b"{\"version\": \"1.0\"}"[..],
        b"not json",
        b"{\"model\": 3}",
    ] {
        let m = invalid_argument(validation_from_text(
            bad,
            &fixture("corpus.txt"),
            2,
            TEST_VOCAB,
        ));
        assert!(
            m.starts_with(
                "tokenizer.json: not a tokenizer the Hugging Face tokenizers library reads: "
            ),
            "{m}"
        );
        let m = invalid_argument(tokenizer_vocab_size(bad));
        assert!(m.starts_with("tokenizer.json: not a tokenizer"), "{m}");
    }
    // In a model directory, the error names the file's path.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokenizer.json"), b"{\"version\": \"1.0\"}").unwrap();
    let m = invalid_argument(carried_assets(dir.path()));
    let want = format!(
        "{}: not a tokenizer the Hugging Face tokenizers library reads: ",
        dir.path().join("tokenizer.json").display()
    );
    assert!(m.starts_with(&want), "{m}");
}

#[test]
fn the_vocab_size_counts_added_tokens() {
    let want = expected()["vocab_size"].as_u64().unwrap() as usize;
    assert_eq!(tokenizer_vocab_size(&tokenizer_json()).unwrap(), want);
    assert_eq!(want, 49);
    assert!(want <= TEST_VOCAB);
}

#[test]
fn carried_assets_are_the_existing_files_in_order() {
    // The fixture directory: no tokenizer.model, and other files that are not assets.
    let assets = carried_assets(&fixture_dir()).unwrap();
    let names: Vec<&str> = assets.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json"
        ]
    );
    for a in &assets {
        assert_eq!(a.bytes, fs::read(fixture(&a.name)).unwrap(), "{}", a.name);
    }

    let dir = tempfile::tempdir().unwrap();
    assert!(carried_assets(dir.path()).unwrap().is_empty());
    // tokenizer.model is carried unchanged, whatever it holds.
    fs::write(dir.path().join("generation_config.json"), b"{}").unwrap();
    fs::write(dir.path().join("tokenizer.model"), b"\x0a\x01\xff").unwrap();
    fs::write(dir.path().join("config.json"), b"{}").unwrap();
    let assets = carried_assets(dir.path()).unwrap();
    let names: Vec<&str> = assets.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["tokenizer.model", "generation_config.json"]);
    assert_eq!(assets[0].bytes, b"\x0a\x01\xff");
}

#[test]
fn a_symlinked_asset_is_followed_and_a_link_to_nothing_refused() {
    // A Hugging Face cache snapshot links every file to its blob: the model directory is the
    // user's input, so links are followed to a regular file (the bundle gets a copy).
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.json");
    fs::write(&target, b"{\"a\": 1}").unwrap();
    let link = dir.path().join("tokenizer_config.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let assets = carried_assets(dir.path()).unwrap();
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].name, "tokenizer_config.json");
    assert_eq!(assets[0].bytes, b"{\"a\": 1}");
    // A dangling link is an incomplete download, not a missing file.
    fs::remove_file(&target).unwrap();
    let m = invalid_argument(carried_assets(dir.path()));
    assert!(m.contains(&link.display().to_string()), "{m}");
    assert!(m.contains("a symbolic link to nothing"), "{m}");
}

#[test]
fn an_asset_that_is_a_directory_or_a_fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("special_tokens_map.json");
    fs::create_dir(&sub).unwrap();
    let m = invalid_argument(carried_assets(dir.path()));
    assert!(m.contains(&sub.display().to_string()), "{m}");
    assert!(
        m.contains("expected a regular file, found a directory"),
        "{m}"
    );
    fs::remove_dir(&sub).unwrap();

    // Opening a FIFO must not wait for a writer.
    let fifo = dir.path().join("generation_config.json");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let m = invalid_argument(carried_assets(dir.path()));
    assert!(m.contains(&fifo.display().to_string()), "{m}");
    assert!(m.contains("expected a regular file, found a FIFO"), "{m}");
}

#[test]
fn json_assets_must_be_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer_config.json");
    for (bytes, found) in [
        (&b"[1, 2]"[..], "found an array"),
        (b"null", "found null"),
        (b"{\"a\": ", "found text that is not JSON"),
    ] {
        fs::write(&path, bytes).unwrap();
        let m = invalid_argument(carried_assets(dir.path()));
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(
            m.contains(&format!("expected a JSON object, {found}")),
            "{m}"
        );
    }
}

#[test]
fn an_asset_over_the_size_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.model");
    // Sparse: no disk is used.
    fs::File::create(&path)
        .unwrap()
        .set_len(MAX_ASSET_BYTES + 1)
        .unwrap();
    let m = invalid_argument(carried_assets(dir.path()));
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(
        m.contains(&format!(
            "of at most {MAX_ASSET_BYTES} bytes, found {} bytes",
            MAX_ASSET_BYTES + 1
        )),
        "{m}"
    );
}

#[test]
fn a_text_over_the_size_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.txt");
    fs::File::create(&path)
        .unwrap()
        .set_len(MAX_TEXT_BYTES + 1)
        .unwrap();
    let m = invalid_argument(validation_from_text(
        &tokenizer_json(),
        &path,
        2,
        TEST_VOCAB,
    ));
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(
        m.contains(&format!(
            "expected a validation text of at most {MAX_TEXT_BYTES} bytes, found {} bytes",
            MAX_TEXT_BYTES + 1
        )),
        "{m}"
    );
}

#[test]
fn a_model_directory_that_is_not_a_directory_is_refused() {
    let m = invalid_argument(carried_assets(&fixture("corpus.txt")));
    assert!(
        m.contains("expected a model directory, found a regular file"),
        "{m}"
    );
}
