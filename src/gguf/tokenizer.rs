//! The tokenizer between a bundle's carried Hugging Face files (rule 1.6) and GGUF's
//! `tokenizer.ggml.*` key-values, both ways: [`to_gguf`] writes what llama.cpp's
//! `convert_hf_to_gguf.py` writes for the same files (`_set_vocab_sentencepiece`,
//! `_set_vocab_gpt2` with `get_vocab_base`, and gguf-py `vocab.py`'s `SpecialVocab`);
//! [`from_gguf`] builds the Hugging Face files back where that is exact and says why not
//! otherwise. This module turns bytes into key-values and back: it reads no files and knows
//! nothing of tensors.
//!
//! | carried file | GGUF key-values |
//! | --- | --- |
//! | `tokenizer.model` (SentencePiece BPE), taken first as `LlamaModel.set_vocab` and `BitnetModel.set_vocab` take it | `model` `"llama"`, `pre` `"default"`, `tokens`, `scores`, `token_type` (the piece types) |
//! | `tokenizer.json` with a byte-level BPE model (and no `tokenizer.model`) | `model` `"gpt2"`, `pre` (below), `tokens`, `token_type`, `merges` |
//! | `tokenizer.json` `added_tokens`, `post_processor`; `tokenizer_config.json` | `*_token_id`, `add_bos_token`, `add_eos_token`, `add_sep_token`, `chat_template`, `add_space_prefix` |
//! | `special_tokens_map.json` | special tokens `tokenizer_config.json` does not name |
//! | `generation_config.json` | `*_token_id` not found otherwise (it stands in for the `config.json` `SpecialVocab` reads, which a bundle does not carry) |
//!
//! `tokenizer.ggml.pre` names llama.cpp's pre-tokenizer (`src/llama-vocab.cpp`): `"gpt-2"` for
//! GPT-2's (a `ByteLevel` pre-tokenizer with its regular expression, or that expression in a
//! `Split` before a `ByteLevel` without one), `"llama-bpe"` for Llama 3's (its `Split`
//! expression before a `ByteLevel`), each only when the file has no normalizer and its BPE
//! model takes whole words from the vocabulary exactly when llama.cpp does (`ignore_merges`, or
//! merges that rebuild every token). Any other byte-level tokenizer gets `"default"`, a set of
//! four expressions of llama.cpp's own that no Hugging Face pre-tokenizer uses: llama.cpp loads
//! the file but splits text differently (the converter recognizes more pre-tokenizers by hashing
//! their output on a test text, and refuses the rest).
//!
//! Everything else (WordLevel, WordPiece, Unigram, a BPE that is not byte-level, no tokenizer)
//! is refused naming the file; `--no-tokenizer` writes a model without vocabulary.
//!
//! Where this differs from the converter, on purpose:
//! - a USER_DEFINED piece of a tokenizer.model keeps its type 4 (the converter writes NORMAL,
//!   and llama.cpp then never produces the piece; with 4 it matches it as sentencepiece does);
//! - a token id not below the vocabulary size (a piece, an added token, a special id) is an
//!   error, not a warning and a skipped token; a repeated token is an error (llama.cpp refuses
//!   the file), and so is a SentencePiece model that is not BPE (`model_type` 2);
//! - `tokenizer.ggml.merges` is written even when empty (llama.cpp refuses a `"gpt2"` file
//!   without it);
//! - special_tokens_map.json and generation_config.json are read as above, and without a
//!   tokenizer.json the special tokens resolve against the pieces;
//! - a tokenizer.model whose normalizer adds no dummy prefix, or removes extra whitespace,
//!   gets `tokenizer.ggml.add_space_prefix` false or `remove_extra_whitespaces` true;
//! - added tokens that are not `normalized` are taken as they are: the converter runs them
//!   through encode and decode, which gives a byte-level tokenizer's added token back unchanged.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value as Json};
use tokenizers::models::bpe::BPE;
use tokenizers::{Model, Tokenizer};

use crate::error::{escape_name, Error, Result};
use crate::gguf::container::{Array, Value};
use crate::source::AssetFile;

const TOKENIZER_JSON: &str = "tokenizer.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
const TOKENIZER_MODEL: &str = "tokenizer.model";
const GENERATION_CONFIG: &str = "generation_config.json";

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_REMOVE_EXTRA_WS: &str = "tokenizer.ggml.remove_extra_whitespaces";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
const KEY_CHAT_TEMPLATES: &str = "tokenizer.chat_templates";

/// gguf-py `TokenType` (llama.cpp `llama_token_type`), the same numbers as SentencePiece's piece
/// types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The special token types `SpecialVocab` looks for, in its order.
const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// GGUF's key for a special token type's id; `cls` has none (gguf-py's writer has no handler
/// for it, so `SpecialVocab` skips it).
fn id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        "sep" => "tokenizer.ggml.seperator_token_id",
        "pad" => "tokenizer.ggml.padding_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

/// GGUF's key for an `add_<type>_token` flag; only these three have one.
fn add_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.add_bos_token",
        "eos" => "tokenizer.ggml.add_eos_token",
        "sep" => "tokenizer.ggml.add_sep_token",
        _ => return None,
    })
}

/// GPT-2's pre-tokenizer expression (the `tokenizers` `ByteLevel` one); llama.cpp's `"gpt-2"`.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer expression as its tokenizer.json has it; llama.cpp's `"llama-bpe"`
/// (`LLAMA_VOCAB_PRE_TYPE_LLAMA3`, which quotes it as the original).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What [`from_gguf`] made of a GGUF file's tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerImport {
    /// The Hugging Face files to carry into the bundle: `tokenizer.json` (for `gpt2`) or
    /// `tokenizer.model` (for `llama`), then `tokenizer_config.json`.
    Carried(Vec<AssetFile>),
    /// The file has a tokenizer that has no exact Hugging Face form here; why, for a warning.
    NotConverted(String),
    /// The file has no tokenizer: no `tokenizer.ggml.model`, or `"none"` / `"no_vocab"`.
    None,
}

/// The `tokenizer.ggml.*` (and `tokenizer.chat_template*`) key-values for the tokenizer among
/// `assets`, for a model of `vocab_size` tokens, as llama.cpp's `convert_hf_to_gguf.py` writes
/// them (the module documentation has the table).
///
/// `tokenizer.model` (a SentencePiece BPE model) gives `"llama"`: one token per piece with its
/// score and type (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6), entries of
/// `tokenizer_config.json`'s `added_tokens_decoder` over them (CONTROL when `special` or when
/// they look special, else USER_DEFINED, score -1000), the ids past the last piece
/// `"[PAD<id>]"`, score -10000, UNUSED. Without it a byte-level BPE `tokenizer.json` gives
/// `"gpt2"`: its vocabulary and added tokens by id (CONTROL or USER_DEFINED as above, NORMAL for
/// the rest, `"[PAD<id>]"` UNUSED for ids without a token), and its merges as `"a b"` strings
/// (it may store them as strings or as pairs; a space inside a pair's part becomes U+0120).
/// The special token ids and flags come after, as `SpecialVocab` finds them.
///
/// Refused ([`Error::InvalidArgument`], naming the file): no tokenizer, a tokenizer GGUF cannot
/// hold (WordLevel, WordPiece, Unigram, a BPE that is not byte-level, a SentencePiece model that
/// is not BPE), a malformed file, a token id not below `vocab_size` (naming the token), a token
/// that occurs twice (llama.cpp refuses such a vocabulary).
pub fn to_gguf(assets: &[AssetFile], vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let find = |name: &str| {
        assets
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.bytes.as_slice())
    };
    let object = |name: &str| find(name).map(|b| json_object(name, b)).transpose();
    let files = HfFiles {
        tokenizer: object(TOKENIZER_JSON)?,
        config: object(TOKENIZER_CONFIG)?,
        special_map: object(SPECIAL_TOKENS_MAP)?,
        generation: object(GENERATION_CONFIG)?,
    };
    let added = match &files.tokenizer {
        Some(t) => added_tokens(t, vocab_size)?,
        None => Vec::new(),
    };
    let (mut kvs, tokens, normalizer) = if let Some(bytes) = find(TOKENIZER_MODEL) {
        let (kvs, tokens, normalizer) = sentencepiece_vocab(bytes, &files, vocab_size)?;
        (kvs, tokens, Some(normalizer))
    } else if let Some(tokenizer) = &files.tokenizer {
        let (kvs, tokens) = byte_level_bpe_vocab(tokenizer, &added, vocab_size)?;
        (kvs, tokens, None)
    } else {
        return Err(refusal(
            "no tokenizer: the bundle carries neither tokenizer.json nor tokenizer.model",
        ));
    };
    let specials = special_vocab(&files, &added, &tokens, vocab_size)?;
    kvs.extend(specials.into_kvs());
    // `LlamaModel.set_vocab` writes tokenizer_config.json's `add_prefix_space`; a SentencePiece
    // normalizer that differs from llama.cpp's defaults for "llama" (dummy prefix added, extra
    // whitespace kept) is written too, so that llama.cpp does what sentencepiece does.
    let add_prefix_space = files
        .config
        .as_ref()
        .and_then(|c| c.get("add_prefix_space"))
        .and_then(Json::as_bool);
    match (add_prefix_space, &normalizer) {
        (Some(b), _) => kvs.push((KEY_ADD_SPACE_PREFIX.into(), Value::Bool(b))),
        (None, Some(n)) if !n.add_dummy_prefix => {
            kvs.push((KEY_ADD_SPACE_PREFIX.into(), Value::Bool(false)));
        }
        _ => {}
    }
    if normalizer.is_some_and(|n| n.remove_extra_whitespaces) {
        kvs.push((KEY_REMOVE_EXTRA_WS.into(), Value::Bool(true)));
    }
    Ok(kvs)
}

/// The Hugging Face tokenizer files for the tokenizer in a GGUF file's key-values `kvs`, for a
/// model of `vocab_size` tokens: the inverse of [`to_gguf`] for import (`bundle create --from
/// model.gguf`).
///
/// - `"gpt2"` with `tokenizer.ggml.pre` `"gpt-2"` (GPT-2's expression) or `"llama-bpe"` /
///   `"llama3"` / `"llama-v3"` (Llama 3's): a `tokenizer.json` whose BPE model has every token
///   by its id and the merges, the matching byte-level pre-tokenizer, a `ByteLevel` decoder,
///   CONTROL and UNKNOWN tokens as special added tokens, USER_DEFINED ones as non-special added
///   tokens, and a `TemplateProcessing` post-processor when llama.cpp adds BOS or EOS. Other
///   pre-tokenizers (and none, which llama.cpp reads as `"default"`) are not converted: no
///   Hugging Face pre-tokenizer splits text as llama.cpp's do.
/// - `"llama"`: a SentencePiece `tokenizer.model` (a `ModelProto`: the pieces with their scores
///   and types, a `trainer_spec` of model type BPE with the special ids and byte fallback when
///   all 256 byte pieces exist, and a `normalizer_spec` "identity" that adds the dummy prefix,
///   keeps extra whitespace and escapes whitespace unless the file says otherwise, as Llama's own
///   `tokenizer.model` is), which the `sentencepiece` library loads. Without exactly one
///   UNKNOWN token it is not converted (sentencepiece requires one).
/// - Both come with a `tokenizer_config.json`: the special tokens the file names, whether BOS
///   and EOS are added, the chat template.
///
/// Accepted: `tokenizer.ggml.tokens` an ARRAY of STRING of exactly `vocab_size` tokens, no two
/// alike (an empty one reads as `"[EMPTY_<id>]"`, as llama.cpp reads it);
/// `tokenizer.ggml.token_type` (ARRAY of INT32) and `tokenizer.ggml.scores` (ARRAY of FLOAT32
/// or INT32) as long as the tokens; merges each two non-empty tokens joined by one space; special
/// ids below `vocab_size`. Anything else is an [`Error::InvalidArgument`] naming the key, what
/// was expected and what was found.
pub fn from_gguf(kvs: &[(String, Value)], vocab_size: usize) -> Result<TokenizerImport> {
    let gguf = GgufKvs(kvs);
    let Some(model) = gguf.string(KEY_MODEL)? else {
        return Ok(TokenizerImport::None);
    };
    match model {
        "none" | "no_vocab" => Ok(TokenizerImport::None),
        "gpt2" => import_byte_level_bpe(&gguf, vocab_size),
        "llama" => import_sentencepiece(&gguf, vocab_size),
        other => Ok(TokenizerImport::NotConverted(format!(
            "{KEY_MODEL} {}: only \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece) tokenizers are converted",
            escape_name(other)
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Export: the Hugging Face files.

/// The carried JSON files `SpecialVocab` reads.
struct HfFiles {
    tokenizer: Option<Map<String, Json>>,
    config: Option<Map<String, Json>>,
    special_map: Option<Map<String, Json>>,
    generation: Option<Map<String, Json>>,
}

/// One of tokenizer.json's `added_tokens`.
struct AddedToken {
    id: usize,
    content: String,
    special: bool,
}

fn json_object(name: &str, bytes: &[u8]) -> Result<Map<String, Json>> {
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(other) => Err(invalid(format!(
            "{name}: expected a JSON object, found {}",
            json_kind(&other)
        ))),
        Err(e) => Err(invalid(format!("{name}: not JSON: {e}"))),
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// The refusal of a tokenizer GGUF cannot hold, saying what it can.
fn refusal(what: &str) -> Error {
    invalid(format!(
        "{what}: GGUF (llama.cpp) knows byte-level BPE tokenizers (tokenizer.ggml.model \"gpt2\", from a tokenizer.json) and SentencePiece BPE tokenizers (\"llama\", from a tokenizer.model); pass --no-tokenizer to write the model without vocabulary"
    ))
}

/// tokenizer.json's `added_tokens`, each id checked against the vocabulary size.
fn added_tokens(tokenizer: &Map<String, Json>, vocab_size: usize) -> Result<Vec<AddedToken>> {
    let items = match tokenizer.get("added_tokens") {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(items)) => items,
        Some(other) => {
            return Err(invalid(format!(
                "{TOKENIZER_JSON}: added_tokens: expected an array, found {}",
                json_kind(other)
            )))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let content = item.get("content").and_then(Json::as_str).ok_or_else(|| {
            invalid(format!(
                "{TOKENIZER_JSON}: added_tokens[{i}]: expected a string \"content\""
            ))
        })?;
        let id = item.get("id").and_then(Json::as_u64).ok_or_else(|| {
            invalid(format!(
                "{TOKENIZER_JSON}: added token {}: expected a non-negative integer \"id\"",
                escape_name(content)
            ))
        })?;
        let id = checked_id(TOKENIZER_JSON, content, id, vocab_size)?;
        let special = item.get("special").and_then(Json::as_bool).unwrap_or(false);
        out.push(AddedToken {
            id,
            content: content.to_string(),
            special,
        });
    }
    Ok(out)
}

fn checked_id(file: &str, token: &str, id: u64, vocab_size: usize) -> Result<usize> {
    usize::try_from(id)
        .ok()
        .filter(|&id| id < vocab_size)
        .ok_or_else(|| {
            invalid(format!(
                "{file}: token {} has id {id}: expected an id below the model's vocabulary size {vocab_size}",
                escape_name(token)
            ))
        })
}

/// `does_token_look_special` of the converter: added tokens some models mark as not special
/// that are control tokens all the same.
fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<\u{ff5c}") && token.ends_with("\u{ff5c}>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// The type of an added token, and its text as the converter writes it (USER_DEFINED tokens
/// with SentencePiece's U+2581 turned back into spaces, "pre-normalized").
fn added_type(content: &str, special: bool) -> (i32, String) {
    if special || looks_special(content) {
        (CONTROL, content.to_string())
    } else {
        (USER_DEFINED, content.replace('\u{2581}', " "))
    }
}

/// Every token once: llama.cpp refuses a vocabulary with a repeated token.
fn check_unique(file: &str, tokens: &[String]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        if let Some(first) = seen.insert(t, id) {
            return Err(invalid(format!(
                "{file}: token {} has ids {first} and {id}: expected every token once (llama.cpp refuses a repeated token)",
                escape_name(t)
            )));
        }
    }
    Ok(())
}

type Kvs = Vec<(String, Value)>;

/// `_set_vocab_gpt2`: the key-values of a byte-level BPE tokenizer.json, and the token list.
fn byte_level_bpe_vocab(
    tokenizer: &Map<String, Json>,
    added: &[AddedToken],
    vocab_size: usize,
) -> Result<(Kvs, Vec<String>)> {
    let model = tokenizer
        .get("model")
        .and_then(Json::as_object)
        .ok_or_else(|| invalid(format!("{TOKENIZER_JSON}: expected an object \"model\"")))?;
    let kind = model
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or("unknown");
    if kind != "BPE" {
        return Err(refusal(&format!(
            "{TOKENIZER_JSON}: a {} tokenizer",
            escape_name(kind)
        )));
    }
    let byte_level = has_component(tokenizer.get("pre_tokenizer"), "pretokenizers")
        || has_component(tokenizer.get("decoder"), "decoders");
    if !byte_level {
        return Err(refusal(&format!(
            "{TOKENIZER_JSON}: a BPE tokenizer that is not byte-level (no ByteLevel pre-tokenizer or decoder; a SentencePiece-style BPE needs its tokenizer.model)"
        )));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| {
            invalid(format!(
                "{TOKENIZER_JSON}: model: expected an object \"vocab\""
            ))
        })?;
    let mut by_id: Vec<Option<&str>> = vec![None; vocab_size];
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            invalid(format!(
                "{TOKENIZER_JSON}: token {}: expected a non-negative integer id, found {}",
                escape_name(token),
                json_kind(id)
            ))
        })?;
        let id = checked_id(TOKENIZER_JSON, token, id, vocab_size)?;
        if let Some(other) = by_id[id].replace(token.as_str()) {
            return Err(invalid(format!(
                "{TOKENIZER_JSON}: tokens {} and {} both have id {id}: expected one token per id",
                escape_name(other),
                escape_name(token)
            )));
        }
    }
    // transformers' `get_vocab()` includes the added tokens; an added token's content is what
    // decoding its id gives.
    let mut added_at: HashMap<usize, &AddedToken> = HashMap::with_capacity(added.len());
    for a in added {
        added_at.insert(a.id, a);
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (id, token) in by_id.iter().enumerate() {
        let (kind, text) = match (added_at.get(&id), token) {
            (Some(a), _) => added_type(&a.content, a.special),
            (None, Some(t)) => (NORMAL, (*t).to_string()),
            (None, None) => (UNUSED, format!("[PAD{id}]")),
        };
        tokens.push(text);
        types.push(kind);
    }
    check_unique(TOKENIZER_JSON, &tokens)?;
    let merges = merges(model)?;
    let pre = pre_tokenizer_name(tokenizer, model, added);
    let kvs = vec![
        (KEY_MODEL.into(), Value::Str("gpt2".into())),
        (KEY_PRE.into(), Value::Str(pre.into())),
        (KEY_TOKENS.into(), Value::Array(Array::Str(tokens.clone()))),
        (KEY_TOKEN_TYPE.into(), Value::Array(Array::I32(types))),
        // Written even when empty: llama.cpp refuses a "gpt2" vocabulary without the key
        // (`SpecialVocab` leaves it out then).
        (KEY_MERGES.into(), Value::Array(Array::Str(merges))),
    ];
    Ok((kvs, tokens))
}

/// Whether a pre-tokenizer or decoder is `ByteLevel`, or a `Sequence` (its parts under `key`)
/// that has one.
fn has_component(v: Option<&Json>, key: &str) -> bool {
    let Some(v) = v else { return false };
    match v.get("type").and_then(Json::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => v
            .get(key)
            .and_then(Json::as_array)
            .is_some_and(|parts| parts.iter().any(|p| has_component(Some(p), key))),
        _ => false,
    }
}

/// The merges as GGUF's `"a b"` strings (`SpecialVocab._try_load_from_tokenizer_json`): the
/// old form as it is, the pair form joined by a space with spaces inside a part written as
/// U+0120 (a space moved up by 256, as byte-level BPE writes a space).
fn merges(model: &Map<String, Json>) -> Result<Vec<String>> {
    let items = match model.get("merges") {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(items)) => items,
        Some(other) => {
            return Err(invalid(format!(
                "{TOKENIZER_JSON}: model.merges: expected an array, found {}",
                json_kind(other)
            )))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let merge = match item {
            Json::String(s) => {
                check_merge(s).map_err(|why| {
                    invalid(format!(
                        "{TOKENIZER_JSON}: model.merges[{i}] = {}: {why}",
                        escape_name(s)
                    ))
                })?;
                s.clone()
            }
            Json::Array(pair) => match pair.as_slice() {
                [Json::String(a), Json::String(b)] if !a.is_empty() && !b.is_empty() => {
                    format!("{} {}", a.replace(' ', "\u{120}"), b.replace(' ', "\u{120}"))
                }
                _ => {
                    return Err(invalid(format!(
                        "{TOKENIZER_JSON}: model.merges[{i}]: expected two non-empty strings, found {item}"
                    )))
                }
            },
            other => {
                return Err(invalid(format!(
                    "{TOKENIZER_JSON}: model.merges[{i}]: expected a string \"a b\" or a pair [\"a\", \"b\"], found {}",
                    json_kind(other)
                )))
            }
        };
        out.push(merge);
    }
    Ok(out)
}

/// A merge `"a b"`: exactly one space, between two non-empty tokens.
fn check_merge(merge: &str) -> std::result::Result<(&str, &str), &'static str> {
    let mut parts = merge.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => Err("expected two non-empty tokens separated by one space"),
    }
}

/// llama.cpp's name for the tokenizer's pre-tokenizer (the module documentation says when).
fn pre_tokenizer_name(
    tokenizer: &Map<String, Json>,
    model: &Map<String, Json>,
    added: &[AddedToken],
) -> &'static str {
    const DEFAULT: &str = "default";
    let null = |key: &str| model.get(key).is_none_or(Json::is_null);
    let plain_bpe = tokenizer.get("normalizer").is_none_or(Json::is_null)
        && null("dropout")
        && null("continuing_subword_prefix")
        && null("end_of_word_suffix")
        && !model
            .get("byte_fallback")
            .and_then(Json::as_bool)
            .unwrap_or(false);
    if !plain_bpe {
        return DEFAULT;
    }
    let parts: Vec<&Json> = match tokenizer.get("pre_tokenizer") {
        Some(p) if p.get("type").and_then(Json::as_str) == Some("Sequence") => p
            .get("pretokenizers")
            .and_then(Json::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        Some(p) => vec![p],
        None => Vec::new(),
    };
    let byte_level = |p: &Json, use_regex: bool| {
        p.get("type").and_then(Json::as_str) == Some("ByteLevel")
            && p.get("add_prefix_space").and_then(Json::as_bool) == Some(false)
            && p.get("use_regex").and_then(Json::as_bool).unwrap_or(true) == use_regex
    };
    let split = |p: &Json, regex: &str| {
        p.get("type").and_then(Json::as_str) == Some("Split")
            && p.get("pattern")
                .and_then(|r| r.get("Regex"))
                .and_then(Json::as_str)
                == Some(regex)
            && p.get("behavior").and_then(Json::as_str) == Some("Isolated")
            && p.get("invert").and_then(Json::as_bool) == Some(false)
    };
    // The pre-tokenizer, and whether llama.cpp takes a whole word found in the vocabulary
    // without merging (`ignore_merges`).
    let (name, llama_ignores_merges) = match parts.as_slice() {
        [b] if byte_level(b, true) => ("gpt-2", false),
        [s, b] if split(s, GPT2_REGEX) && byte_level(b, false) => ("gpt-2", false),
        [s, b] if split(s, LLAMA3_REGEX) && byte_level(b, false) => ("llama-bpe", true),
        _ => return DEFAULT,
    };
    let ignores_merges = model
        .get("ignore_merges")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    if ignores_merges == llama_ignores_merges || merges_rebuild_every_token(model, added) {
        name
    } else {
        DEFAULT
    }
}

/// Whether merging the characters of every vocabulary token gives back that token, so that
/// taking whole words from the vocabulary (`ignore_merges`) changes nothing. Added tokens are
/// left out: both libraries match them before the model sees a word.
fn merges_rebuild_every_token(model: &Map<String, Json>, added: &[AddedToken]) -> bool {
    let mut merging = model.clone();
    merging.insert("ignore_merges".into(), Json::Bool(false));
    // From text: the BPE deserializer borrows its "type" string, which a `Json` cannot lend.
    let text = Json::Object(merging).to_string();
    let Ok(bpe) = serde_json::from_str::<BPE>(&text) else {
        return false;
    };
    let Some(vocab) = model.get("vocab").and_then(Json::as_object) else {
        return false;
    };
    let added: HashSet<&str> = added.iter().map(|a| a.content.as_str()).collect();
    vocab.keys().filter(|t| !added.contains(t.as_str())).all(|token| {
        matches!(bpe.tokenize(token), Ok(pieces) if pieces.len() == 1 && pieces[0].value == *token)
    })
}

/// `_create_vocab_sentencepiece`: the key-values of a SentencePiece tokenizer.model, the token
/// list and the model's normalizer settings.
fn sentencepiece_vocab(
    bytes: &[u8],
    files: &HfFiles,
    vocab_size: usize,
) -> Result<(Kvs, Vec<String>, NormalizerSpec)> {
    let model = parse_sentencepiece(bytes)?;
    if model.model_type != SP_BPE {
        let name = match model.model_type {
            SP_UNIGRAM => "Unigram",
            3 => "Word",
            4 => "Char",
            _ => "unknown",
        };
        return Err(refusal(&format!(
            "{TOKENIZER_MODEL}: a SentencePiece {name} model (model_type {}; llama.cpp's \"llama\" tokenizer is SentencePiece BPE, model_type 2)",
            model.model_type
        )));
    }
    if let Some(extra) = model.pieces.get(vocab_size) {
        return Err(invalid(format!(
            "{TOKENIZER_MODEL}: piece {} has id {vocab_size}: expected at most the model's vocabulary size {vocab_size} pieces, found {}",
            escape_name(&extra.piece),
            model.pieces.len()
        )));
    }
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; vocab_size];
    let mut types = vec![UNUSED; vocab_size];
    for (i, p) in model.pieces.iter().enumerate() {
        tokens[i].clone_from(&p.piece);
        scores[i] = p.score;
        types[i] = p.kind;
    }
    let decoder = files
        .config
        .as_ref()
        .and_then(|c| c.get("added_tokens_decoder"));
    if let Some(decoder) = decoder.filter(|d| !d.is_null()) {
        let entries = decoder.as_object().ok_or_else(|| {
            invalid(format!(
                "{TOKENIZER_CONFIG}: added_tokens_decoder: expected an object, found {}",
                json_kind(decoder)
            ))
        })?;
        for (key, entry) in entries {
            let content = entry.get("content").and_then(Json::as_str).ok_or_else(|| {
                invalid(format!(
                    "{TOKENIZER_CONFIG}: added_tokens_decoder[{}]: expected a string \"content\"",
                    escape_name(key)
                ))
            })?;
            let id = key.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "{TOKENIZER_CONFIG}: added_tokens_decoder: token {} has id {}: expected a non-negative integer",
                    escape_name(content),
                    escape_name(key)
                ))
            })?;
            let id = checked_id(TOKENIZER_CONFIG, content, id, vocab_size)?;
            let special = entry
                .get("special")
                .and_then(Json::as_bool)
                .unwrap_or(false);
            let (kind, text) = added_type(content, special);
            tokens[id] = text;
            types[id] = kind;
            scores[id] = -1000.0;
        }
    }
    check_unique(TOKENIZER_MODEL, &tokens)?;
    let kvs = vec![
        (KEY_MODEL.into(), Value::Str("llama".into())),
        (KEY_PRE.into(), Value::Str("default".into())),
        (KEY_TOKENS.into(), Value::Array(Array::Str(tokens.clone()))),
        (KEY_SCORES.into(), Value::Array(Array::F32(scores))),
        (KEY_TOKEN_TYPE.into(), Value::Array(Array::I32(types))),
    ];
    Ok((kvs, tokens, model.normalizer))
}

/// What gguf-py's `SpecialVocab` finds: special token ids by type, the `add_<type>_token`
/// flags and the chat template, each list in the order found (a type's first id wins).
#[derive(Default)]
struct SpecialVocab {
    ids: Vec<(&'static str, u32)>,
    add: Vec<(&'static str, bool)>,
    chat_template: Option<Json>,
}

impl SpecialVocab {
    fn set_id(&mut self, typ: &'static str, id: u32) {
        if !self.ids.iter().any(|(t, _)| *t == typ) {
            self.ids.push((typ, id));
        }
    }

    fn set_add(&mut self, typ: &'static str, value: bool) {
        match self.add.iter_mut().find(|(t, _)| *t == typ) {
            Some(entry) => entry.1 = value,
            None => self.add.push((typ, value)),
        }
    }

    /// The key-values `SpecialVocab.add_to_gguf` writes (types without a GGUF key skipped).
    fn into_kvs(self) -> Kvs {
        let mut kvs = Vec::new();
        for (typ, id) in self.ids {
            if let Some(key) = id_key(typ) {
                kvs.push((key.to_string(), Value::U32(id)));
            }
        }
        for (typ, value) in self.add {
            if let Some(key) = add_key(typ) {
                kvs.push((key.to_string(), Value::Bool(value)));
            }
        }
        match self.chat_template {
            Some(Json::String(t)) => kvs.push((KEY_CHAT_TEMPLATE.into(), Value::Str(t))),
            Some(Json::Array(list)) => kvs.extend(named_chat_templates(&list)),
            _ => {}
        }
        kvs
    }
}

/// gguf-py `add_chat_template` of a list of `{name, template}`: `"default"` as
/// `tokenizer.chat_template`, the others as `tokenizer.chat_template.<name>` (characters other
/// than ASCII letters and digits written `_`) listed in `tokenizer.chat_templates`.
fn named_chat_templates(list: &[Json]) -> Kvs {
    let mut kvs = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut default = None;
    for choice in list {
        let name: String = choice
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let Some(template) = choice.get("template").and_then(Json::as_str) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        if name == "default" {
            default = Some(template.to_string());
        } else {
            kvs.push((
                format!("{KEY_CHAT_TEMPLATE}.{name}"),
                Value::Str(template.to_string()),
            ));
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if !names.is_empty() {
        kvs.push((KEY_CHAT_TEMPLATES.into(), Value::Array(Array::Str(names))));
    }
    if let Some(t) = default {
        kvs.push((KEY_CHAT_TEMPLATE.into(), Value::Str(t)));
    }
    kvs
}

/// A special token's text from a `<type>_token` entry: a string, or an object's `content`.
fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// The `SpecialToken` id of a template item, if it is one (and not empty).
fn template_special(item: Option<&Json>) -> Option<String> {
    item.and_then(|i| i.get("SpecialToken"))
        .and_then(|s| s.get("id"))
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The `Sequence` id of a template item (`"A"` or `"B"`), if it is one.
fn template_sequence(item: Option<&Json>) -> Option<&str> {
    item.and_then(|i| i.get("Sequence"))
        .and_then(|s| s.get("id"))
        .and_then(Json::as_str)
}

/// `SpecialVocab` ported: the ids of the special tokens named in tokenizer_config.json
/// (resolved against tokenizer.json's `added_tokens`), the `add_<type>_token` flags it states
/// or tokenizer.json's post-processor implies, its chat template; then, where those leave a
/// type without an id, special_tokens_map.json's tokens and generation_config.json's ids.
///
/// Beyond `SpecialVocab`: without a tokenizer.json, token strings are resolved against the
/// vocabulary `tokens` (a tokenizer.model's pieces), which `SpecialVocab` leaves to config.json;
/// token objects count by their `content`; an id that is negative or not below the vocabulary
/// size is an error, not a warning.
fn special_vocab(
    files: &HfFiles,
    added: &[AddedToken],
    tokens: &[String],
    vocab_size: usize,
) -> Result<SpecialVocab> {
    let mut out = SpecialVocab::default();
    let mut types: Vec<&'static str> = SPECIAL_TYPES.to_vec();
    let config = files.config.as_ref();
    // Python's truthiness of the parsed tokenizer_config.json: an empty object counts as none.
    let has_config = config.is_some_and(|c| !c.is_empty());
    // `SpecialVocab` writes into its copy of tokenizer_config.json; these are those writes.
    let mut written: HashMap<&'static str, Option<String>> = HashMap::new();
    let configured = |typ: &str, written: &HashMap<&'static str, Option<String>>| {
        match written.get(typ) {
            Some(v) => v.clone(),
            None => config
                .and_then(|c| c.get(&format!("{typ}_token")))
                .and_then(token_content),
        }
        .filter(|s| !s.is_empty())
    };
    if let Some(tokenizer) = &files.tokenizer {
        let mut bos = configured("bos", &written);
        let mut cls = configured("cls", &written);
        let mut eos = configured("eos", &written);
        let mut sep = configured("sep", &written);
        if bos.is_none() && cls.is_some() && has_config {
            bos.clone_from(&cls);
            written.insert("bos", bos.clone());
        }
        if eos.is_none() && sep.is_some() && has_config {
            eos.clone_from(&sep);
            written.insert("eos", eos.clone());
        }
        let post = tokenizer.get("post_processor").filter(|p| p.is_object());
        let processors: Vec<&Json> = match post {
            Some(p) => match p.get("processors").and_then(Json::as_array) {
                Some(list) => list.iter().collect(),
                None => vec![p],
            },
            None => Vec::new(),
        };
        for processor in processors {
            match processor.get("type").and_then(Json::as_str) {
                Some("RobertaProcessing") => {
                    out.set_add("bos", true);
                    out.set_add("eos", true);
                    out.set_add("sep", true);
                    if cls.is_none() && has_config {
                        cls = processor
                            .get("cls")
                            .and_then(|c| c.get(0))
                            .and_then(Json::as_str)
                            .map(str::to_string)
                            .or_else(|| bos.clone());
                        written.insert("cls", cls.clone());
                    }
                    if sep.is_none() && has_config {
                        sep = processor
                            .get("sep")
                            .and_then(|s| s.get(0))
                            .and_then(Json::as_str)
                            .map(str::to_string)
                            .or_else(|| eos.clone());
                        written.insert("sep", sep.clone());
                    }
                }
                Some("TemplateProcessing") => {
                    let items = |key: &str| {
                        processor
                            .get(key)
                            .and_then(Json::as_array)
                            .map(Vec::as_slice)
                            .unwrap_or_default()
                    };
                    let single = items("single");
                    let pair = items("pair");
                    let mut first = None;
                    let mut last = None;
                    if single.len() > 1 {
                        first = template_special(single.first());
                        if let Some(f) = &first {
                            if !has_config {
                                bos = Some(f.clone());
                            }
                            let adds = bos.as_ref() == Some(f) || cls.as_ref() == Some(f);
                            out.set_add("bos", adds);
                        }
                        last = template_special(single.last());
                        if let Some(l) = &last {
                            if !has_config {
                                eos = Some(l.clone());
                            } else if eos.as_ref() != Some(l) {
                                // The configured EOS becomes EOT (or EOM), the template's last
                                // token EOS.
                                if !types.contains(&"eot") {
                                    types.push("eot");
                                    written.insert("eot", eos.clone());
                                } else if !types.contains(&"eom") {
                                    types.push("eom");
                                    written.insert("eom", eos.clone());
                                }
                                eos = Some(l.clone());
                                written.insert("eos", eos.clone());
                            }
                            out.set_add("eos", eos.as_ref() == Some(l));
                        }
                    }
                    if !pair.is_empty() {
                        let start =
                            usize::from(first.is_some() && template_special(pair.first()) == first);
                        let stop = if last.is_some() && template_special(pair.last()) == last {
                            pair.len() - 1
                        } else {
                            pair.len()
                        };
                        let middle = pair.get(start..stop).unwrap_or_default();
                        let a = template_sequence(middle.first());
                        let b = template_sequence(middle.last());
                        if a == Some("A") && b == Some("B") && middle.len() > 2 {
                            let inner = &middle[1..middle.len() - 1];
                            let separates =
                                |t: &Option<String>| t.is_some() && (*t == sep || *t == eos);
                            let entry = template_special(inner.first());
                            let mut add_sep =
                                entry.is_some() && separates(&entry) && last.is_none();
                            if inner.len() == 2 {
                                let second = template_special(inner.get(1));
                                add_sep |= second.is_some() && separates(&second);
                            }
                            out.set_add("sep", add_sep);
                            if add_sep && sep.is_none() && has_config {
                                sep.clone_from(&eos);
                                written.insert("sep", sep.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // Strings resolve against tokenizer.json's added tokens (the first with that content), or,
    // without a tokenizer.json, against the vocabulary.
    let resolve = |content: &str| -> Option<u32> {
        let id = if files.tokenizer.is_some() {
            added.iter().find(|a| a.content == content).map(|a| a.id)
        } else {
            tokens.iter().position(|t| t == content)
        };
        id.and_then(|id| u32::try_from(id).ok())
    };
    if let Some(config) = config.filter(|_| has_config) {
        out.chat_template = config
            .get("chat_template")
            .filter(|t| t.is_string() || t.is_array())
            .cloned();
        for &typ in &types {
            if let Some(Json::Bool(b)) = config.get(&format!("add_{typ}_token")) {
                out.set_add(typ, *b);
            }
            if let Some(id) = configured(typ, &written).and_then(|c| resolve(&c)) {
                out.set_id(typ, id);
            }
        }
    }
    if let Some(map) = &files.special_map {
        for &typ in &types {
            let content = map.get(&format!("{typ}_token")).and_then(token_content);
            if let Some(id) = content.and_then(|c| resolve(&c)) {
                out.set_id(typ, id);
            }
        }
    }
    if let Some(generation) = &files.generation {
        for &typ in &types {
            let key = format!("{typ}_token_id");
            let Some(Json::Number(n)) = generation.get(&key) else {
                continue;
            };
            let id = n
                .as_u64()
                .and_then(|id| usize::try_from(id).ok())
                .filter(|&id| id < vocab_size)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "{GENERATION_CONFIG}: {key} {n}: expected a token id below the model's vocabulary size {vocab_size}"
                    ))
                })?;
            out.set_id(typ, id);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SentencePiece's ModelProto (`sentencepiece_model.proto`), read and written by hand.

/// `TrainerSpec.ModelType.UNIGRAM`, the protobuf default.
const SP_UNIGRAM: u64 = 1;
/// `TrainerSpec.ModelType.BPE`.
const SP_BPE: u64 = 2;

/// One `ModelProto.SentencePiece`.
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    piece: String,
    score: f32,
    /// `SentencePiece.Type`, 1 to 6 (NORMAL when absent).
    kind: i32,
}

/// `NormalizerSpec`, the fields llama.cpp has counterparts of.
#[derive(Debug, Clone, PartialEq)]
struct NormalizerSpec {
    name: String,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    /// The protobuf defaults.
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The special ids and pieces of a `TrainerSpec` (`-1` for none).
#[derive(Debug, Clone, PartialEq)]
struct SpecialPieces {
    unk_id: i64,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
}

impl Default for SpecialPieces {
    /// The protobuf defaults.
    fn default() -> Self {
        SpecialPieces {
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        }
    }
}

/// The parts of a `ModelProto` this module reads or writes.
#[derive(Debug, Clone, PartialEq)]
struct SentencePieceModel {
    pieces: Vec<Piece>,
    /// `TrainerSpec.model_type`.
    model_type: u64,
    /// `TrainerSpec.byte_fallback`.
    byte_fallback: bool,
    special: SpecialPieces,
    normalizer: NormalizerSpec,
}

/// A protobuf field's value by wire type.
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A reader of protobuf wire format over untrusted bytes: every length is checked against the
/// bytes that remain before anything is read or allocated, so it never panics or reads out of
/// bounds. Offsets in errors count from the start of the file.
struct WireReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Where `bytes` starts in the file.
    base: usize,
}

impl<'a> WireReader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        WireReader {
            bytes,
            pos: 0,
            base,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn error(&self, what: String) -> Error {
        invalid(format!(
            "{TOKENIZER_MODEL}: byte {}: {what}",
            self.base + self.pos
        ))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.error("varint truncated by the end of the data".into()));
            };
            if i == 9 && b > 1 {
                return Err(self.error("varint longer than 64 bits".into()));
            }
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 64 bits".into()))
    }

    fn take(&mut self, n: u64, field: u64) -> Result<&'a [u8]> {
        let remaining = self.bytes.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= remaining => {
                let out = &self.bytes[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(self.error(format!(
                "field {field}: expected {n} bytes, found {remaining} before the end of the data"
            ))),
        }
    }

    /// The next field number and value.
    fn field(&mut self) -> Result<(u64, Wire<'a>, usize)> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(self.error("field number 0".into()));
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8, field)?;
                Wire::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Wire::Bytes(self.take(n, field)?)
            }
            5 => {
                let mut word = [0u8; 4];
                word.copy_from_slice(self.take(4, field)?);
                Wire::Fixed32(u32::from_le_bytes(word))
            }
            other => {
                return Err(self.error(format!(
                    "field {field}: wire type {other}: expected 0 (varint), 1 (64-bit), 2 (length-delimited) or 5 (32-bit)"
                )))
            }
        };
        // Where a length-delimited value starts, for the errors of a reader over it.
        let start = match &value {
            Wire::Bytes(b) => self.base + self.pos - b.len(),
            _ => self.base + self.pos,
        };
        Ok((field, value, start))
    }
}

fn wrong_wire(message: &str, field: u64, expected: &str, start: usize) -> Error {
    invalid(format!(
        "{TOKENIZER_MODEL}: byte {start}: {message} field {field}: expected {expected}"
    ))
}

/// A `ModelProto` from `bytes`: its pieces (each with a non-empty, distinct text and a type from
/// 1 to 6), the trainer's model type, byte fallback and special ids, and the normalizer.
/// Unknown fields are skipped; a length past the end of its message, a varint over 64 bits or
/// a group is an error.
fn parse_sentencepiece(bytes: &[u8]) -> Result<SentencePieceModel> {
    let mut model = SentencePieceModel {
        pieces: Vec::new(),
        model_type: SP_UNIGRAM,
        byte_fallback: false,
        special: SpecialPieces::default(),
        normalizer: NormalizerSpec::default(),
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut reader = WireReader::new(bytes, 0);
    while !reader.at_end() {
        let (field, value, start) = reader.field()?;
        match (field, value) {
            (1, Wire::Bytes(b)) => {
                let piece = parse_piece(b, start, model.pieces.len())?;
                if !seen.insert(piece.piece.clone()) {
                    return Err(invalid(format!(
                        "{TOKENIZER_MODEL}: piece {} {}: expected every piece once",
                        model.pieces.len(),
                        escape_name(&piece.piece)
                    )));
                }
                model.pieces.push(piece);
            }
            (2, Wire::Bytes(b)) => parse_trainer_spec(b, start, &mut model)?,
            (3, Wire::Bytes(b)) => parse_normalizer_spec(b, start, &mut model.normalizer)?,
            (1..=3, _) => {
                return Err(wrong_wire(
                    "ModelProto",
                    field,
                    "a length-delimited message",
                    start,
                ))
            }
            _ => {}
        }
    }
    Ok(model)
}

fn parse_piece(bytes: &[u8], base: usize, index: usize) -> Result<Piece> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: NORMAL,
    };
    let mut reader = WireReader::new(bytes, base);
    while !reader.at_end() {
        let (field, value, start) = reader.field()?;
        match (field, value) {
            (1, Wire::Bytes(b)) => {
                piece.piece = String::from_utf8(b.to_vec()).map_err(|e| {
                    invalid(format!(
                        "{TOKENIZER_MODEL}: byte {start}: piece {index}: not UTF-8 ({e})"
                    ))
                })?;
            }
            (2, Wire::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Wire::Varint(v)) => {
                piece.kind = match i32::try_from(v) {
                    Ok(k @ NORMAL..=BYTE) => k,
                    _ => {
                        return Err(invalid(format!(
                            "{TOKENIZER_MODEL}: byte {start}: piece {index}: type {v}: expected 1 (NORMAL) to 6 (BYTE)"
                        )))
                    }
                };
            }
            (1, _) => return Err(wrong_wire("SentencePiece", field, "a string", start)),
            (2, _) => return Err(wrong_wire("SentencePiece", field, "a 32-bit float", start)),
            (3, _) => return Err(wrong_wire("SentencePiece", field, "a varint", start)),
            _ => {}
        }
    }
    if piece.piece.is_empty() {
        return Err(invalid(format!(
            "{TOKENIZER_MODEL}: byte {base}: piece {index}: expected a non-empty piece"
        )));
    }
    Ok(piece)
}

/// An `int32` field: a varint holding the value's 64-bit two's complement.
fn int32(v: u64) -> i64 {
    i64::from(v as i32)
}

fn parse_trainer_spec(bytes: &[u8], base: usize, model: &mut SentencePieceModel) -> Result<()> {
    let mut reader = WireReader::new(bytes, base);
    while !reader.at_end() {
        let (field, value, start) = reader.field()?;
        let special = &mut model.special;
        match (field, value) {
            (3, Wire::Varint(v)) => model.model_type = v,
            (35, Wire::Varint(v)) => model.byte_fallback = v != 0,
            (40, Wire::Varint(v)) => special.unk_id = int32(v),
            (41, Wire::Varint(v)) => special.bos_id = int32(v),
            (42, Wire::Varint(v)) => special.eos_id = int32(v),
            (43, Wire::Varint(v)) => special.pad_id = int32(v),
            (3 | 35 | 40..=43, _) => {
                return Err(wrong_wire("TrainerSpec", field, "a varint", start))
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer_spec(bytes: &[u8], base: usize, spec: &mut NormalizerSpec) -> Result<()> {
    let mut reader = WireReader::new(bytes, base);
    while !reader.at_end() {
        let (field, value, start) = reader.field()?;
        match (field, value) {
            (1, Wire::Bytes(b)) => {
                spec.name = String::from_utf8_lossy(b).into_owned();
            }
            (3, Wire::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Wire::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Wire::Varint(v)) => spec.escape_whitespaces = v != 0,
            (1, _) => return Err(wrong_wire("NormalizerSpec", field, "a string", start)),
            (3..=5, _) => return Err(wrong_wire("NormalizerSpec", field, "a varint", start)),
            _ => {}
        }
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

/// An `int32` field (negative values as ten-byte varints, as protobuf writes them).
fn put_int32_field(out: &mut Vec<u8>, field: u64, v: i64) {
    put_varint_field(out, field, v as u64);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The `ModelProto` bytes of `model`, fields in number order; the trainer's special pieces are
/// the texts of the pieces at its special ids.
fn write_sentencepiece(model: &SentencePieceModel) -> Vec<u8> {
    let mut out = Vec::new();
    let mut piece = Vec::new();
    for p in &model.pieces {
        piece.clear();
        put_bytes_field(&mut piece, 1, p.piece.as_bytes());
        put_key(&mut piece, 2, 5);
        piece.extend_from_slice(&p.score.to_bits().to_le_bytes());
        put_varint_field(&mut piece, 3, p.kind as u64);
        put_bytes_field(&mut out, 1, &piece);
    }
    let mut trainer = Vec::new();
    put_varint_field(&mut trainer, 3, model.model_type);
    put_int32_field(&mut trainer, 4, model.pieces.len() as i64);
    put_varint_field(&mut trainer, 35, u64::from(model.byte_fallback));
    let s = &model.special;
    for (field, id) in [
        (40, s.unk_id),
        (41, s.bos_id),
        (42, s.eos_id),
        (43, s.pad_id),
    ] {
        put_int32_field(&mut trainer, field, id);
    }
    for (field, id) in [
        (45, s.unk_id),
        (46, s.bos_id),
        (47, s.eos_id),
        (48, s.pad_id),
    ] {
        let text = usize::try_from(id).ok().and_then(|i| model.pieces.get(i));
        if let Some(p) = text {
            put_bytes_field(&mut trainer, field, p.piece.as_bytes());
        }
    }
    put_bytes_field(&mut out, 2, &trainer);
    let n = &model.normalizer;
    let mut normalizer = Vec::new();
    put_bytes_field(&mut normalizer, 1, n.name.as_bytes());
    put_varint_field(&mut normalizer, 3, u64::from(n.add_dummy_prefix));
    put_varint_field(&mut normalizer, 4, u64::from(n.remove_extra_whitespaces));
    put_varint_field(&mut normalizer, 5, u64::from(n.escape_whitespaces));
    put_bytes_field(&mut out, 3, &normalizer);
    out
}

// ---------------------------------------------------------------------------------------------
// Import: the GGUF key-values.

/// A GGUF file's key-values, read by key with their types checked.
struct GgufKvs<'a>(&'a [(String, Value)]);

impl<'a> GgufKvs<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "STRING", other)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(key, "BOOL", other)),
        }
    }

    /// A token id: an integer below `n`.
    fn id(&self, key: &str, n: usize) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Some(id) = v.as_u64() else {
            return Err(wrong_type(key, "an unsigned integer", v));
        };
        match usize::try_from(id) {
            Ok(id) if id < n => Ok(Some(id)),
            _ => Err(invalid(format!(
                "{key}: expected a token id below the vocabulary size {n}, found {id}"
            ))),
        }
    }

    /// `tokenizer.ggml.tokens`: exactly `n` strings, empty ones named as llama.cpp names them,
    /// none twice.
    fn tokens(&self, n: usize) -> Result<Vec<String>> {
        let tokens = match self.get(KEY_TOKENS) {
            Some(Value::Array(Array::Str(t))) => t,
            Some(other) => return Err(wrong_type(KEY_TOKENS, "ARRAY[STRING]", other)),
            None => {
                return Err(invalid(format!(
                    "{KEY_TOKENS}: expected the vocabulary (ARRAY[STRING]), found no such key"
                )))
            }
        };
        if tokens.len() != n {
            return Err(invalid(format!(
                "{KEY_TOKENS}: expected {n} tokens (the model's vocabulary size), found {}",
                tokens.len()
            )));
        }
        let tokens: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t.clone()
                }
            })
            .collect();
        check_unique(KEY_TOKENS, &tokens)?;
        Ok(tokens)
    }

    /// `tokenizer.ggml.token_type`: `n` INT32 values, if present.
    fn types(&self, n: usize) -> Result<Option<Vec<i32>>> {
        match self.get(KEY_TOKEN_TYPE) {
            None => Ok(None),
            Some(Value::Array(Array::I32(t))) if t.len() == n => Ok(Some(t.clone())),
            Some(Value::Array(Array::I32(t))) => Err(invalid(format!(
                "{KEY_TOKEN_TYPE}: expected {n} types (one per token), found {}",
                t.len()
            ))),
            Some(other) => Err(wrong_type(KEY_TOKEN_TYPE, "ARRAY[INT32]", other)),
        }
    }

    /// `tokenizer.ggml.scores`: `n` FLOAT32 (or INT32, as llama.cpp also reads) values.
    fn scores(&self, n: usize) -> Result<Option<Vec<f32>>> {
        let scores: Vec<f32> = match self.get(KEY_SCORES) {
            None => return Ok(None),
            Some(Value::Array(Array::F32(s))) => s.clone(),
            Some(Value::Array(Array::I32(s))) => s.iter().map(|&v| v as f32).collect(),
            Some(other) => return Err(wrong_type(KEY_SCORES, "ARRAY[FLOAT32]", other)),
        };
        if scores.len() != n {
            return Err(invalid(format!(
                "{KEY_SCORES}: expected {n} scores (one per token), found {}",
                scores.len()
            )));
        }
        Ok(Some(scores))
    }
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> Error {
    invalid(format!(
        "{key}: expected {expected}, found {}",
        found.type_name()
    ))
}

/// The special ids a GGUF file names, by tokenizer_config.json's names.
fn named_special_ids(gguf: &GgufKvs, n: usize) -> Result<Vec<(&'static str, usize)>> {
    let mut ids = Vec::new();
    for (name, typ) in [
        ("bos_token", "bos"),
        ("eos_token", "eos"),
        ("unk_token", "unk"),
        ("sep_token", "sep"),
        ("pad_token", "pad"),
        ("mask_token", "mask"),
    ] {
        let key = id_key(typ).unwrap_or_default();
        if let Some(id) = gguf.id(key, n)? {
            ids.push((name, id));
        }
    }
    Ok(ids)
}

/// The chat templates as tokenizer_config.json's `chat_template`: the default alone as a
/// string, with named ones as a list of `{name, template}`.
fn chat_template(gguf: &GgufKvs) -> Result<Option<Json>> {
    let default = gguf.string(KEY_CHAT_TEMPLATE)?;
    let names = match gguf.get(KEY_CHAT_TEMPLATES) {
        None => Vec::new(),
        Some(Value::Array(Array::Str(names))) => names.clone(),
        Some(other) => return Err(wrong_type(KEY_CHAT_TEMPLATES, "ARRAY[STRING]", other)),
    };
    if names.is_empty() {
        return Ok(default.map(|t| Json::String(t.to_string())));
    }
    let mut list = Vec::new();
    if let Some(t) = default {
        list.push(json!({"name": "default", "template": t}));
    }
    for name in names {
        let key = format!("{KEY_CHAT_TEMPLATE}.{name}");
        if let Some(t) = gguf.string(&key)? {
            list.push(json!({"name": name, "template": t}));
        }
    }
    Ok(Some(Json::Array(list)))
}

/// tokenizer_config.json for imported files: the special tokens the GGUF file names, whether
/// BOS and EOS are added, the chat template.
fn import_config(
    gguf: &GgufKvs,
    tokens: &[String],
    add_bos: bool,
    add_eos: bool,
    class: &str,
) -> Result<AssetFile> {
    let mut config = Map::new();
    config.insert("add_bos_token".into(), Json::Bool(add_bos));
    config.insert("add_eos_token".into(), Json::Bool(add_eos));
    for (name, id) in named_special_ids(gguf, tokens.len())? {
        config.insert(name.into(), Json::String(tokens[id].clone()));
    }
    if let Some(t) = chat_template(gguf)? {
        config.insert("chat_template".into(), t);
    }
    config.insert("clean_up_tokenization_spaces".into(), Json::Bool(false));
    config.insert("tokenizer_class".into(), Json::String(class.into()));
    Ok(AssetFile {
        name: TOKENIZER_CONFIG.into(),
        bytes: pretty_json(&Json::Object(config)),
    })
}

fn pretty_json(v: &Json) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The special id llama.cpp uses for `key`: the file's, or its default for the tokenizer model
/// when that is in range.
fn effective_id(
    gguf: &GgufKvs,
    key: &str,
    default: Option<usize>,
    n: usize,
) -> Result<Option<usize>> {
    Ok(gguf.id(key, n)?.or(default.filter(|&d| d < n)))
}

/// llama.cpp's BOS and EOS flags for the file: its keys, else the model's defaults; a flag set
/// without its token is an error, as llama.cpp refuses the file.
fn add_flags(
    gguf: &GgufKvs,
    default_bos: bool,
    bos: Option<usize>,
    eos: Option<usize>,
) -> Result<(bool, bool)> {
    let add_bos = gguf
        .bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(default_bos);
    let add_eos = gguf.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    if add_bos && bos.is_none() {
        return Err(invalid(
            "tokenizer.ggml.add_bos_token: true, but tokenizer.ggml.bos_token_id is not set".into(),
        ));
    }
    if add_eos && eos.is_none() {
        return Err(invalid(
            "tokenizer.ggml.add_eos_token: true, but tokenizer.ggml.eos_token_id is not set".into(),
        ));
    }
    Ok((add_bos, add_eos))
}

/// `"gpt2"` as tokenizer.json (and tokenizer_config.json).
fn import_byte_level_bpe(gguf: &GgufKvs, n: usize) -> Result<TokenizerImport> {
    let pre = gguf.string(KEY_PRE)?;
    let (pre_tokenizer, ignore_merges, default_bos) = match pre {
        Some("gpt-2") => (
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
            false,
            false,
        ),
        Some("llama-bpe" | "llama3" | "llama-v3") => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ]}),
            true,
            true,
        ),
        Some(other) => {
            return Ok(TokenizerImport::NotConverted(format!(
                "{KEY_PRE} {}: only llama.cpp's \"gpt-2\" and \"llama-bpe\" pre-tokenizers have an exact tokenizer.json form here",
                escape_name(other)
            )))
        }
        None => {
            return Ok(TokenizerImport::NotConverted(format!(
                "no {KEY_PRE}: llama.cpp then splits text with its \"default\" pre-tokenizer, which no tokenizer.json pre-tokenizer matches"
            )))
        }
    };
    let tokens = gguf.tokens(n)?;
    let types = gguf.types(n)?.unwrap_or_else(|| vec![NORMAL; n]);
    let merges = match gguf.get(KEY_MERGES) {
        Some(Value::Array(Array::Str(m))) => m,
        Some(other) => return Err(wrong_type(KEY_MERGES, "ARRAY[STRING]", other)),
        None => {
            return Err(invalid(format!(
                "{KEY_MERGES}: expected the merges of a \"gpt2\" vocabulary (ARRAY[STRING]), found no such key"
            )))
        }
    };
    let index: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        let (a, b) = check_merge(merge)
            .map_err(|why| invalid(format!("{KEY_MERGES}[{i}] = {}: {why}", escape_name(merge))))?;
        for part in [a.to_string(), b.to_string(), format!("{a}{b}")] {
            if !index.contains(part.as_str()) {
                return Err(invalid(format!(
                    "{KEY_MERGES}[{i}] = {}: expected tokens of the vocabulary, found {} not in {KEY_TOKENS}",
                    escape_name(merge),
                    escape_name(&part)
                )));
            }
        }
        pairs.push(json!([a, b]));
    }
    let bos = effective_id(gguf, "tokenizer.ggml.bos_token_id", Some(11), n)?;
    let eos = effective_id(gguf, "tokenizer.ggml.eos_token_id", Some(11), n)?;
    let (add_bos, add_eos) = add_flags(gguf, default_bos, bos, eos)?;
    let vocab: Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), json!(id)))
        .collect();
    let added: Vec<Json> = types
        .iter()
        .enumerate()
        .filter_map(|(id, &kind)| {
            let special = match kind {
                CONTROL | UNKNOWN => true,
                USER_DEFINED => false,
                _ => return None,
            };
            Some(json!({
                "id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": !special, "special": special,
            }))
        })
        .collect();
    let post_processor = template_processing(
        &tokens,
        add_bos.then_some(bos).flatten(),
        add_eos.then_some(eos).flatten(),
    );
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": pairs,
        },
    });
    // Read back with Hugging Face's library, which checks it, and written as that library
    // writes it (the vocabulary in id order).
    let text = serde_json::to_string(&tokenizer).unwrap_or_default();
    let loaded = Tokenizer::from_bytes(text.as_bytes()).map_err(|e| {
        invalid(format!(
            "the tokenizer.json built from the GGUF vocabulary does not load: {e}"
        ))
    })?;
    let canonical = loaded.to_string(true).map_err(|e| {
        invalid(format!(
            "the tokenizer.json built from the GGUF vocabulary: {e}"
        ))
    })?;
    let mut bytes = canonical.into_bytes();
    bytes.push(b'\n');
    Ok(TokenizerImport::Carried(vec![
        AssetFile {
            name: TOKENIZER_JSON.into(),
            bytes,
        },
        import_config(gguf, &tokens, add_bos, add_eos, "PreTrainedTokenizerFast")?,
    ]))
}

/// A `TemplateProcessing` post-processor that adds `bos` before and `eos` after each sequence,
/// or none when neither is added.
fn template_processing(tokens: &[String], bos: Option<usize>, eos: Option<usize>) -> Json {
    if bos.is_none() && eos.is_none() {
        return Json::Null;
    }
    let special = |id: usize| json!({"SpecialToken": {"id": tokens[id], "type_id": 0}});
    let sequence = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (name, type_id) in [("A", 0u32), ("B", 1)] {
        let target = if name == "A" { &mut single } else { &mut pair };
        if let Some(b) = bos {
            target.push(special(b));
        }
        target.push(sequence(name, type_id));
        if let Some(e) = eos {
            target.push(special(e));
        }
    }
    let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
    let mut special_tokens = Map::new();
    for id in [bos, eos].into_iter().flatten() {
        special_tokens.insert(
            tokens[id].clone(),
            json!({"id": tokens[id], "ids": [id], "tokens": [tokens[id]]}),
        );
    }
    json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": special_tokens,
    })
}

/// `"llama"` as a SentencePiece tokenizer.model (and tokenizer_config.json).
fn import_sentencepiece(gguf: &GgufKvs, n: usize) -> Result<TokenizerImport> {
    let tokens = gguf.tokens(n)?;
    let types = gguf.types(n)?.unwrap_or_else(|| vec![NORMAL; n]);
    let scores = gguf.scores(n)?.unwrap_or_else(|| vec![0.0; n]);
    if let Some((id, &kind)) = types
        .iter()
        .enumerate()
        .find(|(_, k)| !(NORMAL..=BYTE).contains(*k))
    {
        return Err(invalid(format!(
            "{KEY_TOKEN_TYPE}[{id}] (token {}): expected a type from 1 (NORMAL) to 6 (BYTE), found {kind}",
            escape_name(&tokens[id])
        )));
    }
    let unknown: Vec<usize> = (0..n).filter(|&i| types[i] == UNKNOWN).collect();
    let [unk] = unknown.as_slice() else {
        return Ok(TokenizerImport::NotConverted(format!(
            "{KEY_TOKEN_TYPE}: {} tokens of type UNKNOWN (2): a SentencePiece model needs exactly one",
            unknown.len()
        )));
    };
    let bos = effective_id(gguf, "tokenizer.ggml.bos_token_id", Some(1), n)?;
    let eos = effective_id(gguf, "tokenizer.ggml.eos_token_id", Some(2), n)?;
    let pad = gguf.id("tokenizer.ggml.padding_token_id", n)?;
    let (add_bos, add_eos) = add_flags(gguf, true, bos, eos)?;
    let index: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let byte_fallback = (0..=255u8).all(|b| {
        index
            .get(format!("<0x{b:02X}>").as_str())
            .is_some_and(|&i| types[i] == BYTE)
    });
    let id = |v: Option<usize>| v.map_or(-1, |i| i as i64);
    let model = SentencePieceModel {
        pieces: (0..n)
            .map(|i| Piece {
                piece: tokens[i].clone(),
                score: scores[i],
                kind: types[i],
            })
            .collect(),
        model_type: SP_BPE,
        byte_fallback,
        special: SpecialPieces {
            unk_id: *unk as i64,
            bos_id: id(bos),
            eos_id: id(eos),
            pad_id: id(pad),
        },
        normalizer: NormalizerSpec {
            name: "identity".into(),
            add_dummy_prefix: gguf.bool(KEY_ADD_SPACE_PREFIX)?.unwrap_or(true),
            remove_extra_whitespaces: gguf.bool(KEY_REMOVE_EXTRA_WS)?.unwrap_or(false),
            escape_whitespaces: true,
        },
    };
    Ok(TokenizerImport::Carried(vec![
        AssetFile {
            name: TOKENIZER_MODEL.into(),
            bytes: write_sentencepiece(&model),
        },
        import_config(gguf, &tokens, add_bos, add_eos, "LlamaTokenizer")?,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(name: &str, bytes: impl Into<Vec<u8>>) -> AssetFile {
        AssetFile {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    fn get<'a>(kvs: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
        kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn strings<'a>(kvs: &'a [(String, Value)], key: &str) -> &'a [String] {
        match get(kvs, key) {
            Some(Value::Array(Array::Str(s))) => s,
            other => panic!("{key}: {other:?}"),
        }
    }

    fn ints<'a>(kvs: &'a [(String, Value)], key: &str) -> &'a [i32] {
        match get(kvs, key) {
            Some(Value::Array(Array::I32(s))) => s,
            other => panic!("{key}: {other:?}"),
        }
    }

    fn message(e: Error) -> String {
        e.to_string()
    }

    /// GPT-2's byte-to-character table (`bytes_to_unicode`).
    fn byte_char(b: u8) -> char {
        let printable =
            |b: u8| (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        if printable(b) {
            char::from(b)
        } else {
            let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
            char::from_u32(256 + shifted).unwrap()
        }
    }

    /// A hand-made byte-level BPE tokenizer.json with GPT-2's pre-tokenizer: the 256 byte
    /// characters, six merges (as pairs or strings), an `<|endoftext|>` special added token and a
    /// non-special added `<tool>`; `extra` ids past them stay without a token.
    fn gpt2_tokenizer(merges_as_pairs: bool) -> String {
        let mut vocab = Map::new();
        for b in 0..=255u8 {
            vocab.insert(byte_char(b).to_string(), json!(vocab.len()));
        }
        let merges = [
            ("Ġ", "t"),
            ("h", "e"),
            ("Ġt", "he"),
            ("l", "l"),
            ("ll", "o"),
            ("Ġ", "w"),
        ];
        for (a, b) in merges {
            vocab.insert(format!("{a}{b}"), json!(vocab.len()));
        }
        vocab.insert("<|endoftext|>".into(), json!(vocab.len()));
        let merges: Vec<Json> = merges
            .iter()
            .map(|(a, b)| {
                if merges_as_pairs {
                    json!([a, b])
                } else {
                    json!(format!("{a} {b}"))
                }
            })
            .collect();
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [
                {"id": 262, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true},
                {"id": 263, "content": "<tool>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": true, "special": false},
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        })
        .to_string()
    }

    const SAMPLE: &str =
        "hello the world, hello<tool> the <|endoftext|>42 ünïcode  \n\n tabs\tand 'quotes' we've";

    fn encode(json: &[u8], text: &str, special: bool) -> Vec<u32> {
        let t = Tokenizer::from_bytes(json).unwrap();
        t.encode(text, special).unwrap().get_ids().to_vec()
    }

    fn carried(import: TokenizerImport) -> Vec<AssetFile> {
        match import {
            TokenizerImport::Carried(files) => files,
            other => panic!("expected files, found {other:?}"),
        }
    }

    #[test]
    fn byte_level_bpe_writes_the_converters_keys() {
        let config = json!({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": true});
        let assets = [
            asset(TOKENIZER_JSON, gpt2_tokenizer(true)),
            asset(TOKENIZER_CONFIG, config.to_string()),
        ];
        let kvs = to_gguf(&assets, 266).unwrap();
        assert_eq!(get(&kvs, KEY_MODEL), Some(&Value::Str("gpt2".into())));
        assert_eq!(get(&kvs, KEY_PRE), Some(&Value::Str("gpt-2".into())));
        let tokens = strings(&kvs, KEY_TOKENS);
        let types = ints(&kvs, KEY_TOKEN_TYPE);
        assert_eq!(tokens.len(), 266);
        assert_eq!(types.len(), 266);
        assert_eq!(tokens[33], "!");
        assert_eq!(tokens[256], "Ġt");
        assert_eq!(
            (tokens[262].as_str(), types[262]),
            ("<|endoftext|>", CONTROL)
        );
        assert_eq!((tokens[263].as_str(), types[263]), ("<tool>", USER_DEFINED));
        assert_eq!((tokens[265].as_str(), types[265]), ("[PAD265]", UNUSED));
        assert_eq!(types[100], NORMAL);
        assert_eq!(strings(&kvs, KEY_MERGES)[..3], ["Ġ t", "h e", "Ġt he"]);
        assert_eq!(
            get(&kvs, "tokenizer.ggml.bos_token_id"),
            Some(&Value::U32(262))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.eos_token_id"),
            Some(&Value::U32(262))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.add_bos_token"),
            Some(&Value::Bool(true))
        );
        assert_eq!(get(&kvs, KEY_SCORES), None);
    }

    #[test]
    fn merges_as_strings_and_as_pairs_give_the_same_key_values() {
        let pairs = to_gguf(&[asset(TOKENIZER_JSON, gpt2_tokenizer(true))], 264).unwrap();
        let strs = to_gguf(&[asset(TOKENIZER_JSON, gpt2_tokenizer(false))], 264).unwrap();
        assert_eq!(pairs, strs);
        // A space inside a pair's part is written as U+0120, as SpecialVocab writes it.
        let model = json!({"merges": [["a b", "c"]]});
        let m = merges(model.as_object().unwrap()).unwrap();
        assert_eq!(m, ["a\u{120}b c"]);
        let bad = json!({"merges": ["abc"]});
        let e = message(merges(bad.as_object().unwrap()).unwrap_err());
        assert!(
            e.contains("model.merges[0]") && e.contains("one space"),
            "{e}"
        );
    }

    #[test]
    fn byte_level_bpe_round_trips_and_encodes_as_the_original() {
        for with_bos in [false, true] {
            let original = gpt2_tokenizer(true);
            let mut assets = vec![asset(TOKENIZER_JSON, original.clone())];
            if with_bos {
                let config = json!({"bos_token": "<|endoftext|>", "add_bos_token": true});
                assets.push(asset(TOKENIZER_CONFIG, config.to_string()));
            }
            let kvs = to_gguf(&assets, 264).unwrap();
            let files = carried(from_gguf(&kvs, 264).unwrap());
            assert_eq!(files[0].name, TOKENIZER_JSON);
            assert_eq!(files[1].name, TOKENIZER_CONFIG);
            let back = &files[0].bytes;
            let expected = encode(original.as_bytes(), SAMPLE, false);
            assert!(expected.contains(&262) && expected.contains(&263) && expected.contains(&258));
            assert_eq!(encode(back, SAMPLE, false), expected);
            // llama.cpp's add_bos_token becomes a post-processor that adds it.
            let with_special = encode(back, SAMPLE, true);
            assert_eq!(with_special.first() == Some(&262), with_bos);
            // And the round trip is a fixed point: the import exports to the same key-values.
            let again = to_gguf(&files, 264).unwrap();
            for key in [KEY_MODEL, KEY_PRE, KEY_TOKENS, KEY_TOKEN_TYPE, KEY_MERGES] {
                assert_eq!(get(&again, key), get(&kvs, key), "{key}");
            }
            assert_eq!(
                get(&again, "tokenizer.ggml.add_bos_token"),
                get(&kvs, "tokenizer.ggml.add_bos_token").or(Some(&Value::Bool(false))),
            );
        }
    }

    #[test]
    fn the_llama3_style_fixture_is_llama_bpe_and_round_trips() {
        let original = include_bytes!("../../fixtures/tokenizer/byte-level/tokenizer.json");
        let kvs = to_gguf(&[asset(TOKENIZER_JSON, original.to_vec())], 300).unwrap();
        // Its ignore_merges is false, but its merges rebuild every token: llama.cpp's
        // llama-bpe (which takes whole words) splits as it does.
        assert_eq!(get(&kvs, KEY_PRE), Some(&Value::Str("llama-bpe".into())));
        let files = carried(from_gguf(&kvs, 300).unwrap());
        let text = include_str!("../../fixtures/tokenizer/corpus.txt");
        let expected = encode(original, text, false);
        assert!(expected.len() > 100);
        assert_eq!(encode(&files[0].bytes, text, false), expected);
        assert_eq!(
            encode(&files[0].bytes, SAMPLE, false),
            encode(original, SAMPLE, false)
        );
        // An added special token in the vocabulary is no whole word for the check of merges.
        let mut t: Json = serde_json::from_slice(original).unwrap();
        t["model"]["vocab"]["<|eot|>"] = json!(300);
        t["added_tokens"] = json!([{"id": 300, "content": "<|eot|>", "special": true}]);
        let kvs = to_gguf(&[asset(TOKENIZER_JSON, t.to_string())], 301).unwrap();
        assert_eq!(get(&kvs, KEY_PRE), Some(&Value::Str("llama-bpe".into())));
        assert_eq!(ints(&kvs, KEY_TOKEN_TYPE)[300], CONTROL);
    }

    #[test]
    fn an_unidentified_pre_tokenizer_is_default() {
        let mut t: Json = serde_json::from_str(&gpt2_tokenizer(true)).unwrap();
        t["pre_tokenizer"]["add_prefix_space"] = json!(true);
        let kvs = to_gguf(&[asset(TOKENIZER_JSON, t.to_string())], 264).unwrap();
        assert_eq!(get(&kvs, KEY_PRE), Some(&Value::Str("default".into())));
        // ... which import does not convert.
        match from_gguf(&kvs, 264).unwrap() {
            TokenizerImport::NotConverted(why) => assert!(why.contains("default"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_vocabulary_id_out_of_range_is_refused_naming_the_token() {
        let e = message(to_gguf(&[asset(TOKENIZER_JSON, gpt2_tokenizer(true))], 262).unwrap_err());
        assert!(
            e.contains("<|endoftext|>") && e.contains("262") && e.contains("vocabulary size 262"),
            "{e}"
        );
        let e = message(to_gguf(&[asset(TOKENIZER_JSON, gpt2_tokenizer(true))], 200).unwrap_err());
        assert!(e.contains("tokenizer.json") && e.contains("id 2"), "{e}");
    }

    #[test]
    fn other_tokenizers_are_refused_saying_what_gguf_knows() {
        let word_level = include_str!("../../fixtures/lm/tokenizer.json");
        let not_byte_level = include_str!("../../fixtures/tokenizer/tokenizer.json");
        let cases = [
            (vec![asset(TOKENIZER_JSON, word_level)], "\"WordLevel\""),
            (
                vec![asset(TOKENIZER_JSON, not_byte_level)],
                "not byte-level",
            ),
            (
                vec![asset(GENERATION_CONFIG, "{}")],
                "neither tokenizer.json nor tokenizer.model",
            ),
            (vec![], "no tokenizer"),
        ];
        for (assets, what) in cases {
            let e = message(to_gguf(&assets, 100).unwrap_err());
            for part in [what, "gpt2", "llama", "--no-tokenizer"] {
                assert!(e.contains(part), "{part} not in {e}");
            }
        }
        let unigram = json!({"model": {"type": "Unigram", "vocab": []}});
        let e = message(to_gguf(&[asset(TOKENIZER_JSON, unigram.to_string())], 10).unwrap_err());
        assert!(
            e.starts_with("invalid argument: tokenizer.json: a \"Unigram\" tokenizer"),
            "{e}"
        );
    }

    #[test]
    fn malformed_json_is_refused_naming_the_file() {
        let e = message(to_gguf(&[asset(TOKENIZER_JSON, "[1, 2]")], 10).unwrap_err());
        assert!(
            e.contains("tokenizer.json: expected a JSON object, found an array"),
            "{e}"
        );
        let assets = [
            asset(TOKENIZER_JSON, gpt2_tokenizer(true)),
            asset(TOKENIZER_CONFIG, "{"),
        ];
        let e = message(to_gguf(&assets, 264).unwrap_err());
        assert!(e.contains("tokenizer_config.json: not JSON"), "{e}");
    }

    #[test]
    fn special_tokens_as_special_vocab_finds_them() {
        let tokenizer = gpt2_tokenizer(true);
        // The post-processor's template adds BOS; the configured EOS differs from its last
        // token, which becomes EOS while the configured one becomes EOT.
        let mut t: Json = serde_json::from_str(&tokenizer).unwrap();
        t["post_processor"] = json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<tool>", "type_id": 0}}],
            "pair": [], "special_tokens": {}});
        let config = json!({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"},
                            "chat_template": "{{ messages }}"});
        let assets = [
            asset(TOKENIZER_JSON, t.to_string()),
            asset(TOKENIZER_CONFIG, config.to_string()),
        ];
        let kvs = to_gguf(&assets, 264).unwrap();
        assert_eq!(
            get(&kvs, "tokenizer.ggml.bos_token_id"),
            Some(&Value::U32(262))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.eos_token_id"),
            Some(&Value::U32(263))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.eot_token_id"),
            Some(&Value::U32(262))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.add_bos_token"),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.add_eos_token"),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            get(&kvs, KEY_CHAT_TEMPLATE),
            Some(&Value::Str("{{ messages }}".into()))
        );

        // special_tokens_map.json and generation_config.json fill what tokenizer_config.json
        // leaves; the first found wins, and generation_config.json ids are range-checked.
        let assets = [
            asset(TOKENIZER_JSON, tokenizer.clone()),
            asset(SPECIAL_TOKENS_MAP, json!({"unk_token": "<tool>"}).to_string()),
            asset(GENERATION_CONFIG, json!({"bos_token_id": 5, "unk_token_id": 7, "eos_token_id": [1, 2], "pad_token_id": null}).to_string()),
        ];
        let kvs = to_gguf(&assets, 264).unwrap();
        assert_eq!(
            get(&kvs, "tokenizer.ggml.unknown_token_id"),
            Some(&Value::U32(263))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.bos_token_id"),
            Some(&Value::U32(5))
        );
        assert_eq!(get(&kvs, "tokenizer.ggml.eos_token_id"), None);
        assert_eq!(get(&kvs, "tokenizer.ggml.padding_token_id"), None);
        let assets = [
            asset(TOKENIZER_JSON, tokenizer),
            asset(GENERATION_CONFIG, json!({"eos_token_id": 264}).to_string()),
        ];
        let e = message(to_gguf(&assets, 264).unwrap_err());
        assert!(
            e.contains("generation_config.json: eos_token_id 264"),
            "{e}"
        );
    }

    #[test]
    fn named_chat_templates_are_written_as_gguf_py_writes_them() {
        let list = [
            json!({"name": "default", "template": "d"}),
            json!({"name": "tool use", "template": "t"}),
        ];
        let kvs = named_chat_templates(&list);
        assert_eq!(get(&kvs, KEY_CHAT_TEMPLATE), Some(&Value::Str("d".into())));
        assert_eq!(
            get(&kvs, "tokenizer.chat_template.tool_use"),
            Some(&Value::Str("t".into()))
        );
        assert_eq!(strings(&kvs, KEY_CHAT_TEMPLATES), ["tool_use"]);
        let back = chat_template(&GgufKvs(&kvs)).unwrap().unwrap();
        assert_eq!(
            back,
            json!([{"name": "default", "template": "d"}, {"name": "tool_use", "template": "t"}])
        );
    }

    // --- SentencePiece ---

    fn piece(piece: &str, score: f32, kind: i32) -> Piece {
        Piece {
            piece: piece.into(),
            score,
            kind,
        }
    }

    /// A small Llama-like SentencePiece BPE model: unk, bos, eos, the 256 byte pieces, a few
    /// pieces of each other type.
    fn sp_model() -> SentencePieceModel {
        let mut pieces = vec![
            piece("<unk>", 0.0, UNKNOWN),
            piece("<s>", 0.0, CONTROL),
            piece("</s>", 0.0, CONTROL),
        ];
        for b in 0..=255u8 {
            pieces.push(piece(&format!("<0x{b:02X}>"), 0.0, BYTE));
        }
        for (i, p) in ["▁t", "he", "▁the", "▁a", "▁", "t", "h", "e", "a"]
            .iter()
            .enumerate()
        {
            pieces.push(piece(p, -(i as f32), NORMAL));
        }
        pieces.push(piece("<tool>", 0.0, USER_DEFINED));
        pieces.push(piece("<unused0>", 0.0, UNUSED));
        SentencePieceModel {
            pieces,
            model_type: SP_BPE,
            byte_fallback: true,
            special: SpecialPieces::default(),
            normalizer: NormalizerSpec {
                name: "identity".into(),
                add_dummy_prefix: true,
                remove_extra_whitespaces: false,
                escape_whitespaces: true,
            },
        }
    }

    #[test]
    fn a_hand_encoded_model_proto_parses() {
        // pieces { piece: "<unk>" score: 0 type: UNKNOWN }
        // pieces { piece: "▁a" score: -1.5 (no type: NORMAL) unknown field 9 = varint 300 }
        // trainer_spec { model_type: BPE  input: "x" (skipped)  vocab_size: 2  pad_id: -1 }
        // self_test_data { ... } (field 4, skipped), a fixed64 field 20 (skipped)
        let mut bytes = vec![0x0a, 0x0e, 0x0a, 0x05];
        bytes.extend_from_slice(b"<unk>");
        bytes.extend_from_slice(&[0x15, 0, 0, 0, 0, 0x18, 0x02]);
        bytes.extend_from_slice(&[0x0a, 0x0e, 0x0a, 0x04, 0xe2, 0x96, 0x81, b'a', 0x15]);
        bytes.extend_from_slice(&(-1.5f32).to_le_bytes());
        bytes.extend_from_slice(&[0x48, 0xac, 0x02]);
        let mut trainer = vec![0x18, 0x02, 0x0a, 0x01, b'x', 0x20, 0x02, 0xd8, 0x02];
        trainer.extend_from_slice(&[0xff; 9]);
        trainer.push(0x01);
        bytes.push(0x12);
        bytes.push(trainer.len() as u8);
        bytes.extend_from_slice(&trainer);
        bytes.extend_from_slice(&[0x22, 0x02, 0x0a, 0x00]);
        bytes.push(0xa1);
        bytes.push(0x01);
        bytes.extend_from_slice(&[7; 8]);
        let model = parse_sentencepiece(&bytes).unwrap();
        assert_eq!(
            model.pieces,
            [piece("<unk>", 0.0, UNKNOWN), piece("▁a", -1.5, NORMAL)]
        );
        assert_eq!(model.model_type, SP_BPE);
        assert_eq!(model.special.pad_id, -1);
        assert_eq!(model.special.bos_id, 1);
        assert_eq!(model.normalizer, NormalizerSpec::default());
    }

    #[test]
    fn the_writer_and_the_parser_agree() {
        let mut model = sp_model();
        model.special.pad_id = -1;
        model.special.bos_id = 1;
        let bytes = write_sentencepiece(&model);
        assert_eq!(parse_sentencepiece(&bytes).unwrap(), model);
    }

    #[test]
    fn hostile_model_protos_are_errors_not_panics() {
        let good = write_sentencepiece(&sp_model());
        // Every truncation: an error or (at a field boundary) a shorter model.
        for end in 0..good.len() {
            let _ = parse_sentencepiece(&good[..end]);
        }
        let cases: [(&[u8], &str); 9] = [
            // field 1, 10 bytes declared, 2 present
            (&[0x0a, 0x0a, 0x0a, 0x00], "expected 10 bytes, found 2"),
            // a length near 2^63
            (
                &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                "field 1: expected 9223372036854775807 bytes",
            ),
            // a varint of eleven bytes
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "longer than 64 bits",
            ),
            // ten bytes whose last carries bits past the 64th
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ],
                "longer than 64 bits",
            ),
            (&[0x08, 0xff], "truncated"),
            // a group (wire type 3)
            (&[0x0b], "wire type 3"),
            (&[0x00, 0x00], "field number 0"),
            // pieces as a varint
            (
                &[0x08, 0x01],
                "ModelProto field 1: expected a length-delimited message",
            ),
            // a piece whose length runs past its message's end: pieces { piece: (5 bytes of 1) }
            (
                &[0x0a, 0x02, 0x0a, 0x05, 0x41],
                "byte 4: field 1: expected 5 bytes, found 0",
            ),
        ];
        for (bytes, part) in cases {
            let e = message(parse_sentencepiece(bytes).unwrap_err());
            assert!(
                e.contains("tokenizer.model: byte") && e.contains(part),
                "{part} not in {e}"
            );
        }
        let e = message(parse_sentencepiece(&[0x0a, 0x02, 0x18, 0x07]).unwrap_err());
        assert!(e.contains("type 7: expected 1 (NORMAL) to 6 (BYTE)"), "{e}");
        let e = message(parse_sentencepiece(&[0x0a, 0x00]).unwrap_err());
        assert!(e.contains("piece 0: expected a non-empty piece"), "{e}");
        let e = message(parse_sentencepiece(&[0x0a, 0x03, 0x0a, 0x01, 0xff]).unwrap_err());
        assert!(e.contains("not UTF-8"), "{e}");
        let twice = [0x0a, 0x03, 0x0a, 0x01, b'a', 0x0a, 0x03, 0x0a, 0x01, b'a'];
        let e = message(parse_sentencepiece(&twice).unwrap_err());
        assert!(
            e.contains("piece 1 \"a\": expected every piece once"),
            "{e}"
        );
    }

    #[test]
    fn random_bytes_never_panic_the_parser() {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let good = write_sentencepiece(&sp_model());
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                let mut b = vec![0u8; (rng.next_u32() % 64) as usize];
                rng.fill_bytes(&mut b);
                b
            } else {
                let mut b = good.clone();
                for _ in 0..1 + rng.next_u32() % 4 {
                    let i = rng.next_u32() as usize % b.len();
                    b[i] = rng.next_u32() as u8;
                }
                b
            };
            bytes.truncate(bytes.len() - (rng.next_u32() as usize % (bytes.len() + 1)) / 8);
            let _ = parse_sentencepiece(&bytes);
        }
    }

    #[test]
    fn sentencepiece_writes_the_converters_keys() {
        let model = write_sentencepiece(&sp_model());
        let n = sp_model().pieces.len();
        let config = json!({"added_tokens_decoder": {
            "3": {"content": "<0x00>", "special": true},
            "270": {"content": "<|im_start|>", "special": false},
            "271": {"content": "▁tool▁", "special": false},
        }});
        let assets = [
            asset(TOKENIZER_MODEL, model),
            asset(TOKENIZER_CONFIG, config.to_string()),
            asset(
                GENERATION_CONFIG,
                json!({"bos_token_id": 1, "eos_token_id": 2}).to_string(),
            ),
        ];
        let kvs = to_gguf(&assets, n + 2).unwrap();
        assert_eq!(get(&kvs, KEY_MODEL), Some(&Value::Str("llama".into())));
        assert_eq!(get(&kvs, KEY_PRE), Some(&Value::Str("default".into())));
        let tokens = strings(&kvs, KEY_TOKENS);
        let types = ints(&kvs, KEY_TOKEN_TYPE);
        let Some(Value::Array(Array::F32(scores))) = get(&kvs, KEY_SCORES) else {
            panic!()
        };
        assert_eq!(
            (tokens.len(), types.len(), scores.len()),
            (n + 2, n + 2, n + 2)
        );
        assert_eq!(&types[..4], [UNKNOWN, CONTROL, CONTROL, CONTROL]);
        assert_eq!(types[4], BYTE);
        assert_eq!(
            (tokens[261].as_str(), types[261], scores[261]),
            ("▁the", NORMAL, -2.0)
        );
        assert_eq!((tokens[268].as_str(), types[268]), ("<tool>", USER_DEFINED));
        assert_eq!((tokens[269].as_str(), types[269]), ("<unused0>", UNUSED));
        // added_tokens_decoder: looks special, so CONTROL; a user-defined one pre-normalized.
        assert_eq!(
            (tokens[270].as_str(), types[270], scores[270]),
            ("<|im_start|>", CONTROL, -1000.0)
        );
        assert_eq!(
            (tokens[271].as_str(), types[271], scores[271]),
            (" tool ", USER_DEFINED, -1000.0)
        );
        assert_eq!((tokens[3].as_str(), scores[3]), ("<0x00>", -1000.0));
        assert_eq!(
            get(&kvs, "tokenizer.ggml.bos_token_id"),
            Some(&Value::U32(1))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.eos_token_id"),
            Some(&Value::U32(2))
        );
        assert_eq!(get(&kvs, KEY_ADD_SPACE_PREFIX), None);
        assert_eq!(get(&kvs, KEY_REMOVE_EXTRA_WS), None);

        // Padding past the pieces: "[PAD<id>]", -10000, UNUSED.
        let kvs = to_gguf(
            &[asset(TOKENIZER_MODEL, write_sentencepiece(&sp_model()))],
            n + 3,
        )
        .unwrap();
        let tokens = strings(&kvs, KEY_TOKENS);
        let Some(Value::Array(Array::F32(scores))) = get(&kvs, KEY_SCORES) else {
            panic!()
        };
        assert_eq!(
            (
                tokens[n + 2].as_str(),
                scores[n + 2],
                ints(&kvs, KEY_TOKEN_TYPE)[n + 2]
            ),
            (format!("[PAD{}]", n + 2).as_str(), -10000.0, UNUSED)
        );
        // Without a tokenizer.json, tokenizer_config.json's tokens resolve against the pieces.
        let assets = [
            asset(TOKENIZER_MODEL, write_sentencepiece(&sp_model())),
            asset(TOKENIZER_CONFIG, json!({"bos_token": "<s>", "unk_token": "<unk>", "add_bos_token": true, "add_eos_token": false}).to_string()),
        ];
        let kvs = to_gguf(&assets, n).unwrap();
        assert_eq!(
            get(&kvs, "tokenizer.ggml.bos_token_id"),
            Some(&Value::U32(1))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.unknown_token_id"),
            Some(&Value::U32(0))
        );
        assert_eq!(
            get(&kvs, "tokenizer.ggml.add_eos_token"),
            Some(&Value::Bool(false))
        );
    }

    #[test]
    fn sentencepiece_is_taken_before_tokenizer_json_and_refused_when_not_bpe() {
        let n = sp_model().pieces.len();
        let assets = [
            asset(TOKENIZER_JSON, gpt2_tokenizer(true)),
            asset(TOKENIZER_MODEL, write_sentencepiece(&sp_model())),
        ];
        let kvs = to_gguf(&assets, n).unwrap();
        assert_eq!(get(&kvs, KEY_MODEL), Some(&Value::Str("llama".into())));
        let mut unigram = sp_model();
        unigram.model_type = SP_UNIGRAM;
        let e = message(
            to_gguf(&[asset(TOKENIZER_MODEL, write_sentencepiece(&unigram))], n).unwrap_err(),
        );
        assert!(
            e.contains("tokenizer.model: a SentencePiece Unigram model")
                && e.contains("--no-tokenizer"),
            "{e}"
        );
        let e = message(
            to_gguf(
                &[asset(TOKENIZER_MODEL, write_sentencepiece(&sp_model()))],
                n - 1,
            )
            .unwrap_err(),
        );
        assert!(
            e.contains("piece \"<unused0>\"") && e.contains("vocabulary size"),
            "{e}"
        );
    }

    #[test]
    fn sentencepiece_round_trips_through_gguf() {
        let mut original = sp_model();
        original.normalizer.add_dummy_prefix = false;
        let n = original.pieces.len();
        let config = json!({"add_bos_token": true, "add_eos_token": true, "bos_token": "<s>", "eos_token": "</s>"});
        let assets = [
            asset(TOKENIZER_MODEL, write_sentencepiece(&original)),
            asset(TOKENIZER_CONFIG, config.to_string()),
        ];
        let kvs = to_gguf(&assets, n).unwrap();
        assert_eq!(get(&kvs, KEY_ADD_SPACE_PREFIX), Some(&Value::Bool(false)));
        let files = carried(from_gguf(&kvs, n).unwrap());
        assert_eq!(files[0].name, TOKENIZER_MODEL);
        let back = parse_sentencepiece(&files[0].bytes).unwrap();
        assert_eq!(back, original);
        let config: Json = serde_json::from_slice(&files[1].bytes).unwrap();
        assert_eq!(config["bos_token"], "<s>");
        assert_eq!(config["add_eos_token"], true);
        // And back to the same key-values.
        assert_eq!(to_gguf(&files, n).unwrap(), kvs);
    }

    // --- from_gguf validation ---

    fn gpt2_kvs() -> Kvs {
        to_gguf(&[asset(TOKENIZER_JSON, gpt2_tokenizer(true))], 264).unwrap()
    }

    fn set(kvs: &mut Kvs, key: &str, v: Value) {
        kvs.retain(|(k, _)| k != key);
        kvs.push((key.into(), v));
    }

    #[test]
    fn from_gguf_refuses_malformed_vocabularies_naming_the_key() {
        let mut short = gpt2_kvs();
        set(
            &mut short,
            KEY_TOKENS,
            Value::Array(Array::Str(vec!["a".into()])),
        );
        let mut types = gpt2_kvs();
        set(
            &mut types,
            KEY_TOKEN_TYPE,
            Value::Array(Array::I32(vec![1; 3])),
        );
        let mut float_types = gpt2_kvs();
        set(
            &mut float_types,
            KEY_TOKEN_TYPE,
            Value::Array(Array::F32(vec![1.0; 264])),
        );
        let mut merge = gpt2_kvs();
        set(
            &mut merge,
            KEY_MERGES,
            Value::Array(Array::Str(vec!["Ġ t".into(), "he".into()])),
        );
        let mut merge2 = gpt2_kvs();
        set(
            &mut merge2,
            KEY_MERGES,
            Value::Array(Array::Str(vec!["a  b".into()])),
        );
        let mut unknown_part = gpt2_kvs();
        set(
            &mut unknown_part,
            KEY_MERGES,
            Value::Array(Array::Str(vec!["Ġt e".into()])),
        );
        let mut no_merges = gpt2_kvs();
        no_merges.retain(|(k, _)| k != KEY_MERGES);
        let mut dup = gpt2_kvs();
        let mut tokens = strings(&dup, KEY_TOKENS).to_vec();
        tokens[5] = "!".into(); // "!" is byte 33
        set(&mut dup, KEY_TOKENS, Value::Array(Array::Str(tokens)));
        let mut bos = gpt2_kvs();
        set(&mut bos, "tokenizer.ggml.bos_token_id", Value::U32(264));
        let mut model = gpt2_kvs();
        set(&mut model, KEY_MODEL, Value::U32(1));
        let cases = [
            (short, "tokenizer.ggml.tokens: expected 264 tokens (the model's vocabulary size), found 1"),
            (types, "tokenizer.ggml.token_type: expected 264 types (one per token), found 3"),
            (float_types, "tokenizer.ggml.token_type: expected ARRAY[INT32], found ARRAY[FLOAT32]"),
            (merge, "tokenizer.ggml.merges[1] = \"he\": expected two non-empty tokens separated by one space"),
            (merge2, "tokenizer.ggml.merges[0] = \"a  b\""),
            (unknown_part, "found \"Ġte\" not in tokenizer.ggml.tokens"),
            (no_merges, "tokenizer.ggml.merges: expected the merges"),
            (dup, "token \"!\" has ids 5 and 33"),
            (bos, "tokenizer.ggml.bos_token_id: expected a token id below the vocabulary size 264, found 264"),
            (model, "tokenizer.ggml.model: expected STRING, found UINT32"),
        ];
        for (kvs, part) in cases {
            let e = message(from_gguf(&kvs, 264).unwrap_err());
            assert!(e.contains(part), "{part} not in {e}");
        }
    }

    #[test]
    fn from_gguf_says_what_it_does_not_convert() {
        assert_eq!(from_gguf(&[], 10).unwrap(), TokenizerImport::None);
        let none = [(KEY_MODEL.to_string(), Value::Str("none".into()))];
        assert_eq!(from_gguf(&none, 10).unwrap(), TokenizerImport::None);
        let bert = vec![(KEY_MODEL.to_string(), Value::Str("bert".into()))];
        let mut qwen = gpt2_kvs();
        set(&mut qwen, KEY_PRE, Value::Str("qwen2".into()));
        let mut no_pre = gpt2_kvs();
        no_pre.retain(|(k, _)| k != KEY_PRE);
        let mut no_unk = to_gguf(
            &[asset(TOKENIZER_MODEL, write_sentencepiece(&sp_model()))],
            270,
        )
        .unwrap();
        let mut types = ints(&no_unk, KEY_TOKEN_TYPE).to_vec();
        types[0] = NORMAL;
        set(&mut no_unk, KEY_TOKEN_TYPE, Value::Array(Array::I32(types)));
        let cases = [
            (&bert, 10, "tokenizer.ggml.model \"bert\""),
            (&qwen, 264, "tokenizer.ggml.pre \"qwen2\""),
            (&no_pre, 264, "no tokenizer.ggml.pre"),
            (&no_unk, 270, "0 tokens of type UNKNOWN"),
        ];
        for (kvs, n, part) in cases {
            match from_gguf(kvs, n).unwrap() {
                TokenizerImport::NotConverted(why) => {
                    assert!(why.contains(part), "{part} not in {why}")
                }
                other => panic!("{part}: {other:?}"),
            }
        }
    }
}
