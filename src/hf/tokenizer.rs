//! Tokenizers and the other asset files a model carries (rule 1.6, spec 18.5): reading a
//! Hugging Face model directory's asset files to carry them into a bundle unchanged, and
//! building a language model's validation set from plain text with the carried `tokenizer.json`.
//!
//! Tokenizing is Hugging Face's own `tokenizers` library, so the ids are the ones transformers
//! gives; this module only reads files, checks them and cuts ids into sequences. It does not
//! write bundles or check the ids against a model beyond the vocabulary size it is given.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{escape_name, Error, Result};
use crate::format::manifest::ASSET_NAMES;
use crate::source::{AssetFile, TokenIds, ValidationSet};

/// The largest asset file read (bytes). The largest published `tokenizer.json` files are a few
/// tens of MiB (Gemma's, with 262,144 tokens, is about 33 MiB).
pub const MAX_ASSET_BYTES: u64 = 64 << 20;

/// The largest `--validation-text` file read (bytes). The tokenizers library encodes the whole
/// text at once (spec 18.5) and holds, while it does, about 150 to 200 bytes per byte of text
/// (alignments of the normalized text, the pieces, and every token's id, string and offsets):
/// 16 MiB of text took 2.3 to 3 GB and about 12 s. Millions of tokens are far more than a
/// validation set needs.
pub const MAX_TEXT_BYTES: u64 = 16 << 20;

const TOKENIZER_JSON: &str = "tokenizer.json";

/// The asset files (rule 1.6) of the Hugging Face model directory `dir`, whichever exist, in
/// the order of [`ASSET_NAMES`], each read whole to be carried into the bundle unchanged.
///
/// Each must be a regular file or a symbolic link to one (a directory, a FIFO or a link to
/// nothing is refused naming it) of at most [`MAX_ASSET_BYTES`]. The `.json`
/// files must be JSON objects, and `tokenizer.json` a tokenizer that the Hugging Face
/// `tokenizers` library reads. Errors are [`Error::InvalidArgument`] naming the file.
pub fn carried_assets(dir: &Path) -> Result<Vec<AssetFile>> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, "stat", e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: expected a model directory, found {}",
            dir.display(),
            kind(&meta)
        )));
    }
    let mut assets = Vec::new();
    for name in ASSET_NAMES {
        let path = dir.join(name);
        let Some(bytes) = read_asset(&path)? else {
            continue;
        };
        if name.ends_with(".json") {
            check_json_object(&path, &bytes)?;
        }
        if name == TOKENIZER_JSON {
            parse_tokenizer(&path, &bytes)?;
        }
        assets.push(AssetFile {
            name: name.to_string(),
            bytes,
        });
    }
    Ok(assets)
}

/// A language model's validation set from the UTF-8 text file `text` (spec 18.5): the whole
/// text encoded once with `tokenizer_json` without special tokens (`add_special_tokens =
/// false`, and without the truncation or padding the file may set), its n ids cut into
/// N = floor(n / T) sequences of T = `seq_len` tokens, the last n − N T dropped. The labels
/// are the next tokens of every position but the last of each sequence (rule 6.1); there is no
/// difficulty.
///
/// Refused: T < 2; a text over [`MAX_TEXT_BYTES`], not a regular file, or not UTF-8 (the error
/// names the offset of the first invalid byte); a text that gives fewer than T tokens; an id
/// not below `vocab_size` (the model's, named with its token).
///
/// ```
/// use std::path::Path;
/// use ternary_bundle::hf::tokenizer::{carried_assets, validation_from_text};
///
/// let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer");
/// let assets = carried_assets(&dir)?;
/// let tokenizer = assets.iter().find(|a| a.name == "tokenizer.json").unwrap();
/// let v = validation_from_text(&tokenizer.bytes, &dir.join("corpus.txt"), 16, 53)?;
/// assert_eq!(v.input_ids.as_ref().unwrap().ids.len(), v.samples() * 16);
/// assert_eq!(v.labels.len(), v.samples() * 15);
/// # Ok::<(), ternary_bundle::error::Error>(())
/// ```
pub fn validation_from_text(
    tokenizer_json: &[u8],
    text: &Path,
    seq_len: usize,
    vocab_size: usize,
) -> Result<ValidationSet> {
    if seq_len < 2 {
        return Err(Error::InvalidArgument(format!(
            "--seq-len: expected at least 2 tokens per sequence (a token and its next), found {seq_len}"
        )));
    }
    let tokenizer = parse_tokenizer(Path::new(TOKENIZER_JSON), tokenizer_json)?;
    let bytes = read_text(text)?;
    let text_str = std::str::from_utf8(&bytes).map_err(|e| {
        let offset = e.valid_up_to();
        Error::InvalidArgument(format!(
            "{}: expected UTF-8 text, found a byte that is not UTF-8{} at byte offset {offset}",
            text.display(),
            bytes
                .get(offset)
                .map_or_else(String::new, |b| format!(" (0x{b:02x})"))
        ))
    })?;
    let encoding = tokenizer.encode_fast(text_str, false).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: the tokenizer could not encode it: {e}",
            text.display()
        ))
    })?;
    let n = encoding.get_ids().len();
    if n < seq_len {
        return Err(Error::InvalidArgument(format!(
            "{}: the text gives {n} tokens, fewer than one sequence of {seq_len}",
            text.display()
        )));
    }
    if let Some((position, &id)) = encoding
        .get_ids()
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab_size)
    {
        let token = encoding
            .get_tokens()
            .get(position)
            .map_or_else(|| "?".to_string(), |t| escape_name(t));
        return Err(Error::InvalidArgument(format!(
            "{}: token {position} is id {id} ({token}): expected ids below the model's \
             vocab_size {vocab_size}; the tokenizer does not belong to this model",
            text.display()
        )));
    }
    let kept = n / seq_len * seq_len;
    let ids: Vec<i64> = encoding.get_ids()[..kept]
        .iter()
        .map(|&id| i64::from(id))
        .collect();
    drop(encoding);
    let labels = ids
        .chunks_exact(seq_len)
        .flat_map(|sequence| sequence[1..].iter().copied())
        .collect();
    Ok(ValidationSet {
        origin: text.to_path_buf(),
        inputs: Vec::new(),
        input_ids: Some(TokenIds {
            tokens: seq_len,
            ids,
        }),
        labels,
        difficulty: None,
    })
}

/// The number of tokens of `tokenizer_json`: its model's vocabulary and the added tokens that
/// are not in it (transformers' `len(tokenizer)`). A model whose `vocab_size` is smaller cannot
/// take every id the tokenizer gives.
pub fn tokenizer_vocab_size(tokenizer_json: &[u8]) -> Result<usize> {
    Ok(parse_tokenizer(Path::new(TOKENIZER_JSON), tokenizer_json)?.get_vocab_size(true))
}

/// Parses a `tokenizer.json` (named `path` in errors) with the tokenizers library, with the
/// truncation and padding it may set turned off: spec 18.5 encodes the whole text.
fn parse_tokenizer(path: &Path, bytes: &[u8]) -> Result<Tokenizer> {
    let not_read = |e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!(
            "{}: not a tokenizer the Hugging Face tokenizers library reads: {e}",
            path.display()
        ))
    };
    let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| not_read(&e))?;
    tokenizer.with_truncation(None).map_err(|e| not_read(&e))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

fn check_json_object(path: &Path, bytes: &[u8]) -> Result<()> {
    let found = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(_)) => return Ok(()),
        Ok(other) => crate::format::manifest::json::json_type(&other),
        Err(e) => format!("text that is not JSON ({e})"),
    };
    Err(Error::InvalidArgument(format!(
        "{}: expected a JSON object, found {found}",
        path.display()
    )))
}

/// Reads the asset file at `path` of a model directory; `None` when there is none. The model
/// directory is the user's input, like its weights, so a symbolic link is followed (a Hugging
/// Face cache snapshot links every file to its blob) but must lead to a regular file; a link
/// to nothing is an error, not a missing file. `O_NONBLOCK` so that a FIFO cannot hang the
/// reader. (In the bundle, rule 1.3 holds: the writer copies the bytes into a regular file.)
fn read_asset(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(Error::InvalidArgument(format!(
                    "{}: expected a regular file, found a symbolic link to nothing (an incomplete download?)",
                    path.display()
                )));
            }
            return Ok(None);
        }
        Err(e) => return Err(Error::io(path, "open", e)),
    };
    read_capped(path, file, MAX_ASSET_BYTES, "an asset file").map(Some)
}

/// Reads the text file at `path` (a symbolic link to one is followed: it is the user's input,
/// not a bundle file); `O_NONBLOCK` so that a FIFO cannot hang the reader.
fn read_text(path: &Path) -> Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(path, "open", e))?;
    read_capped(path, file, MAX_TEXT_BYTES, "a validation text")
}

/// Reads the open file whole after checking that it is a regular file of at most `cap` bytes.
fn read_capped(path: &Path, file: File, cap: u64, what: &str) -> Result<Vec<u8>> {
    let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{}: expected a regular file, found {}",
            path.display(),
            kind(&meta)
        )));
    }
    let too_large = |found: String| {
        Error::InvalidArgument(format!(
            "{}: expected {what} of at most {cap} bytes, found {found}",
            path.display()
        ))
    };
    if meta.len() > cap {
        return Err(too_large(format!("{} bytes", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the cap tells a file that grew while it was read.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, "read", e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large("more (it grew while it was read)".to_string()));
    }
    Ok(bytes)
}

/// What a directory entry is, for errors.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "something other than a regular file"
    }
}
