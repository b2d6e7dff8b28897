//! Bundle surgery for the rule tests: rewrite a safetensors file of a bundle (tensor bytes or
//! header JSON), edit `manifest.json`, and "rehash" the manifest so that every check before
//! the rule under test passes again.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;
use ternary_bundle::format::checksum::sha256_hex;
use ternary_bundle::format::manifest::{
    seal_manifest_bytes, FileRole, MANIFEST_DIGEST_PLACEHOLDER,
};
use ternary_bundle::format::safetensors::{parse_header_from_bytes, Header};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// `ternary.safetensors`.
pub const TERNARY: &str = "ternary.safetensors";
/// `fp16.safetensors`.
pub const FP16: &str = "fp16.safetensors";
/// `validation.safetensors`.
pub const VALIDATION: &str = "validation.safetensors";

/// A safetensors file split into its header text (exactly as stored, padding included) and
/// its data buffer. Serializing writes `len(header)` as the 8-byte prefix, so header edits may
/// change its length freely.
#[derive(Debug, Clone)]
pub struct St {
    /// Where it was read from.
    pub path: PathBuf,
    /// The header JSON text (bytes 8..8+N), possibly edited.
    pub header: Vec<u8>,
    /// The data buffer (bytes 8+N..).
    pub data: Vec<u8>,
}

impl St {
    /// Reads `path`, which must be a valid safetensors file (its header is validated with
    /// `parse_header_from_bytes`).
    pub fn read(path: &Path) -> St {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let h = parse_header_from_bytes(path, &bytes)
            .unwrap_or_else(|e| panic!("surgery needs a valid file to start from: {e}"));
        let start = h.data_start() as usize;
        St {
            path: path.to_path_buf(),
            header: bytes[8..start].to_vec(),
            data: bytes[start..].to_vec(),
        }
    }

    /// The whole file: 8-byte little-endian header length, header, data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = (self.header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.data);
        out
    }

    /// Writes the file back where it came from.
    pub fn write(&self) {
        fs::write(&self.path, self.to_bytes()).unwrap();
    }

    /// The parsed header of the current state (panics if it is not valid).
    pub fn parsed(&self) -> Header {
        parse_header_from_bytes(&self.path, &self.to_bytes())
            .unwrap_or_else(|e| panic!("header no longer valid: {e}"))
    }

    /// The header text as a string.
    pub fn header_text(&self) -> String {
        String::from_utf8(self.header.clone()).expect("UTF-8 header")
    }

    /// Replaces the header text.
    pub fn set_header_text(&mut self, text: &str) {
        self.header = text.as_bytes().to_vec();
    }

    /// The header as a JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.header).expect("header JSON")
    }

    /// Replaces the header by the compact serialization of `v` (no padding).
    pub fn set_json(&mut self, v: &Value) {
        self.header = serde_json::to_vec(v).unwrap();
    }

    /// Edits the header JSON as a value.
    pub fn edit_json(&mut self, f: impl FnOnce(&mut Value)) {
        let mut v = self.json();
        f(&mut v);
        self.set_json(&v);
    }

    /// Range of tensor `name` within the data buffer.
    pub fn range(&self, name: &str) -> Range<usize> {
        let h = self.parsed();
        let e = h
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name} in {}", self.path.display()));
        e.start as usize..e.end as usize
    }

    /// The data bytes of tensor `name`, mutable.
    pub fn tensor_mut(&mut self, name: &str) -> &mut [u8] {
        let r = self.range(name);
        &mut self.data[r]
    }

    /// The compact text of the header entry of `name` (`"name":{...}`), as the canonical
    /// writer emits it.
    pub fn entry_text(&self, name: &str) -> String {
        let text = self.header_text();
        let key = format!("{}:{{", serde_json::to_string(name).unwrap());
        let start = text
            .find(&key)
            .unwrap_or_else(|| panic!("no entry {key} in header {text}"));
        let end = start + text[start..].find('}').unwrap() + 1;
        text[start..end].to_string()
    }
}

/// Reads, edits and writes back the safetensors file `file` of bundle `dir`.
pub fn edit_st(dir: &Path, file: &str, f: impl FnOnce(&mut St)) {
    let mut st = St::read(&dir.join(file));
    f(&mut st);
    st.write();
}

/// Edits the data bytes of tensor `tensor` in file `file` of bundle `dir`.
pub fn edit_tensor(dir: &Path, file: &str, tensor: &str, f: impl FnOnce(&mut [u8])) {
    edit_st(dir, file, |st| f(st.tensor_mut(tensor)));
}

/// The manifest of bundle `dir` as a JSON value.
pub fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap()
}

/// Writes `v` as the manifest of `dir`, pretty-printed with a trailing newline, with a fresh
/// `manifest_sha256` (rule 7.3) so that only the rule under test is broken. Tests of rule 7.3
/// itself edit the text without [`edit_manifest_text`]'s resealing.
pub fn write_manifest(dir: &Path, v: &Value) {
    let mut v = v.clone();
    if v.get("manifest_sha256").is_some_and(Value::is_string) {
        v["manifest_sha256"] = Value::from(MANIFEST_DIGEST_PLACEHOLDER);
    }
    let mut bytes = serde_json::to_vec_pretty(&v).unwrap();
    bytes.push(b'\n');
    fs::write(dir.join(MANIFEST), seal_manifest_bytes(&bytes)).unwrap();
}

/// Edits the manifest of `dir` as a JSON value.
pub fn edit_manifest(dir: &Path, f: impl FnOnce(&mut Value)) {
    let mut v = manifest(dir);
    f(&mut v);
    write_manifest(dir, &v);
}

/// Edits the manifest of `dir` as text (for edits JSON values cannot express: duplicate keys,
/// NaN literals, deep nesting).
/// The manifest digest is resealed after the edit (rule 7.3).
pub fn edit_manifest_text(dir: &Path, f: impl FnOnce(&mut String)) {
    let path = dir.join(MANIFEST);
    let mut text = fs::read_to_string(&path).unwrap();
    let digest = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["manifest_sha256"].as_str().map(str::to_string));
    if let Some(d) = &digest {
        text = text.replace(d.as_str(), MANIFEST_DIGEST_PLACEHOLDER);
    }
    f(&mut text);
    fs::write(&path, seal_manifest_bytes(text.as_bytes())).unwrap();
}

/// Replaces exactly one occurrence of `from` in `text` by `to` (panics unless there is
/// exactly one, so a test cannot silently edit nothing).
pub fn replace_once(text: &mut String, from: &str, to: &str) {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected exactly one {from:?} in the text"
    );
    *text = text.replacen(from, to, 1);
}

/// The manifest tensor entry named `name` (mutable).
pub fn tensor_entry<'a>(manifest: &'a mut Value, name: &str) -> &'a mut Value {
    manifest["tensors"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no manifest tensor {name}"))
}

/// Recomputes, from the files currently in `dir`, `files.<role>.size`, `.sha256` and every
/// per-tensor `sha256` of the manifest (tensors the file does not hold, or every tensor of a
/// file whose header is invalid, keep their digests). The manifest is rewritten pretty-printed.
pub fn rehash(dir: &Path) {
    let mut m = manifest(dir);
    for role in FileRole::ALL {
        let entry = &mut m["files"][role.key()];
        if !entry.is_object() {
            continue;
        }
        let path = dir.join(role.file_name());
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        entry["size"] = Value::from(bytes.len() as u64);
        entry["sha256"] = Value::from(sha256_hex(&bytes));
        let Ok(header) = parse_header_from_bytes(&path, &bytes) else {
            continue;
        };
        let start = header.data_start() as usize;
        for t in entry["tensors"].as_array_mut().unwrap() {
            let name = t["name"].as_str().unwrap().to_string();
            if let Some(e) = header.get(&name) {
                let r = start + e.start as usize..start + e.end as usize;
                t["sha256"] = Value::from(sha256_hex(&bytes[r]));
            }
        }
    }
    write_manifest(dir, &m);
}
