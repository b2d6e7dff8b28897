//! A Hugging Face model directory as a source of tensors: `config.json` (a Llama or BitNet
//! decoder, [`DecoderSpec::from_hf_config`]) and its weights in `model.safetensors` or, when
//! there is none (as transformers decides), in shards listed by `model.safetensors.index.json`;
//! F32, F16 or BF16. The tensor set must be exactly
//! the one the config implies, each tensor with its shape: a missing, extra or misshapen tensor
//! is refused naming it and the file. Tensors are read one at a time (the shards are mapped,
//! each tensor's pages released once converted).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::safetensors::{shape_string, Dtype};
use crate::model::decoder::DecoderSpec;
use crate::source::{CheckpointSource, RawTensors, SourceTensor, TensorSource};

/// The config file of a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The single-file checkpoint of a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A Llama or BitNet model directory, its config checked and its tensors matched to it.
#[derive(Debug)]
pub struct HfModel {
    dir: PathBuf,
    spec: DecoderSpec,
    shards: Vec<CheckpointSource>,
    /// Tensor name -> index into `shards`.
    home: HashMap<String, usize>,
    /// Tensors in model order (the spec's), with their source dtype.
    tensors: Vec<SourceTensor>,
    /// The text of config.json.
    config: String,
}

/// config.json without its `quantization_config` (read separately, spec section 18).
fn without_quantization_config(text: &str) -> Result<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("{CONFIG_FILE}: not JSON: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("quantization_config");
    }
    Ok(v)
}

/// Which dtypes [`HfModel::open_with`] accepts for the model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtypes {
    /// F32, F16 or BF16 (rule 8.2): a model of real-valued weights.
    Float,
    /// Any dtype, with the shapes and names of the config (integer trits, read through
    /// [`RawTensors`]).
    Any,
    /// Nothing matched: the caller matches the tensors (packed checkpoints, whose weights have
    /// shapes of their own and scales beside them).
    Unchecked,
}

impl HfModel {
    /// Opens the model directory `dir` (float weights; a `quantization_config` is refused, as
    /// [`DecoderSpec::from_hf_config`] says).
    pub fn open(dir: impl AsRef<Path>) -> Result<HfModel> {
        HfModel::open_with(dir, Dtypes::Float, true)
    }

    /// Opens the model directory `dir`, its tensors of `dtypes`; with `refuse_quantization`
    /// false, a `quantization_config` in config.json is left to the caller (spec section 18).
    pub fn open_with(
        dir: impl AsRef<Path>,
        dtypes: Dtypes,
        refuse_quantization: bool,
    ) -> Result<HfModel> {
        let dir = dir.as_ref().to_path_buf();
        let invalid = |what: String| Error::InvalidArgument(format!("{}: {what}", dir.display()));
        if !dir.is_dir() {
            return Err(invalid("not a directory".into()));
        }
        let config_path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(format!(
                    "not a model directory: no {CONFIG_FILE} (a Hugging Face model directory has {CONFIG_FILE} and {WEIGHTS_FILE} or {INDEX_FILE})"
                )))
            }
            Err(e) => return Err(Error::io(&config_path, "read", e)),
        };
        let spec = if refuse_quantization {
            DecoderSpec::from_hf_config(&text)
        } else {
            DecoderSpec::from_hf_config_value(without_quantization_config(&text)?)
        }
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", config_path.display())))?;
        let (shards, home) = open_weights(&dir)?;
        let mut model = HfModel {
            dir,
            spec,
            shards,
            home,
            tensors: Vec::new(),
            config: text,
        };
        model.tensors = model.match_tensors(dtypes)?;
        Ok(model)
    }

    /// The text of its config.json.
    pub fn config_text(&self) -> &str {
        &self.config
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The decoder the config describes.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// Every tensor the config implies is present with its shape, and no other (the shapes of
    /// `Dtypes::Any` tensors are the caller's to check: packed weights have their own).
    fn match_tensors(&self, dtypes: Dtypes) -> Result<Vec<SourceTensor>> {
        if dtypes == Dtypes::Unchecked {
            let mut all: Vec<SourceTensor> = self.shards.iter().flat_map(|s| s.tensors()).collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(all);
        }
        let want = self.spec.tensors();
        let known: std::collections::HashSet<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<(&str, &Path)> = self
            .home
            .iter()
            .filter(|(n, _)| !known.contains(n.as_str()))
            .map(|(n, &i)| (n.as_str(), self.shards[i].path()))
            .collect();
        extra.sort();
        if let Some((name, path)) = extra.first() {
            // Packed 1.58-bit checkpoints (transformers' BitNet `pack_weights`) carry a
            // `weight_scale` per projection: say what to give instead.
            let hint = if extra.iter().any(|(n, _)| n.ends_with("weight_scale")) {
                "; this looks like a packed 1.58-bit checkpoint, whose config.json must say so (quantization_config, quant_method \"bitnet\")"
            } else {
                ""
            };
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {name} is not part of the {} model {CONFIG_FILE} describes ({} unexpected tensor(s)){hint}",
                path.display(),
                self.spec.family.name(),
                extra.len()
            )));
        }
        let mut out = Vec::with_capacity(want.len());
        for (name, shape) in &want {
            let Some(&i) = self.home.get(name) else {
                return Err(Error::InvalidArgument(format!(
                    "{}: tensor {name} missing: the config ({} layers, {}) needs it with shape {}",
                    self.dir.display(),
                    self.spec.num_hidden_layers,
                    self.spec.family.name(),
                    shape_string(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
                )));
            };
            let shard = &self.shards[i];
            let e = shard.header().get(name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: tensor {name}: listed in {INDEX_FILE} but not in the shard",
                    shard.path().display()
                ))
            })?;
            let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            if e.shape != expected {
                return Err(Error::InvalidArgument(format!(
                    "{}: tensor {name}: expected shape {} (from {CONFIG_FILE}), found {}",
                    shard.path().display(),
                    shape_string(&expected),
                    shape_string(&e.shape)
                )));
            }
            if dtypes == Dtypes::Float && !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
            {
                return Err(Error::InvalidArgument(format!(
                    "{}: tensor {name}: expected dtype F32, F16 or BF16, found {}",
                    shard.path().display(),
                    e.dtype
                )));
            }
            out.push(SourceTensor {
                name: name.clone(),
                shape: expected,
                dtype: e.dtype,
            });
        }
        Ok(out)
    }
}

/// The checkpoint files of `dir` and where each tensor lives.
fn open_weights(dir: &Path) -> Result<(Vec<CheckpointSource>, HashMap<String, usize>)> {
    let index_path = dir.join(INDEX_FILE);
    let single = dir.join(WEIGHTS_FILE);
    // As transformers loads it: the single file when there is one, else the shards.
    if single.exists() || !index_path.exists() {
        if !single.exists() {
            return Err(Error::InvalidArgument(format!(
                "{}: not a model directory: no {WEIGHTS_FILE} and no {INDEX_FILE}",
                dir.display()
            )));
        }
        let shard = CheckpointSource::open(&single)?;
        let home = shard
            .header()
            .entries
            .iter()
            .map(|e| (e.name.clone(), 0))
            .collect();
        return Ok((vec![shard], home));
    }
    let bad = |what: String| Error::InvalidArgument(format!("{}: {what}", index_path.display()));
    let text =
        std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, "read", e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("expected an object \"weight_map\" {tensor: shard file}".into()))?;
    let mut files: BTreeMap<&str, usize> = BTreeMap::new();
    let mut listed: Vec<(&str, &str)> = Vec::with_capacity(map.len());
    for (name, file) in map {
        let file = file
            .as_str()
            .filter(|f| is_plain_file_name(f))
            .ok_or_else(|| {
                bad(format!(
                    "weight_map[{name:?}]: expected a file name in the directory, found {file}"
                ))
            })?;
        let next = files.len();
        files.entry(file).or_insert(next);
        listed.push((name, file));
    }
    let mut shards: Vec<Option<CheckpointSource>> = (0..files.len()).map(|_| None).collect();
    for (file, &i) in &files {
        shards[i] = Some(CheckpointSource::open(dir.join(file))?);
    }
    let shards: Vec<CheckpointSource> = shards.into_iter().flatten().collect();
    let home: HashMap<String, usize> = listed
        .into_iter()
        .map(|(name, file)| (name.to_string(), files[file]))
        .collect();
    // A shard's tensors must all be listed: an unlisted one would be silently ignored.
    for (i, shard) in shards.iter().enumerate() {
        if let Some(e) = shard
            .header()
            .entries
            .iter()
            .find(|e| home.get(&e.name) != Some(&i))
        {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {} is not listed for this shard in {INDEX_FILE}",
                shard.path().display(),
                e.name
            )));
        }
    }
    Ok((shards, home))
}

/// A file name without directory parts (a shard must be inside the model directory).
fn is_plain_file_name(f: &str) -> bool {
    !f.is_empty()
        && f != "."
        && f != ".."
        && !f.contains('/')
        && !f.contains('\\')
        && !f.contains('\0')
}

impl TensorSource for HfModel {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.tensors.clone()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let i = *self.home.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: no tensor {name}", self.dir.display()))
        })?;
        self.shards[i].load_f32(name)
    }
}

impl RawTensors for HfModel {
    fn raw(&self, name: &str) -> Option<(Dtype, &[u64], &[u8])> {
        self.shards[*self.home.get(name)?].raw(name)
    }

    fn release(&self, bytes: &[u8]) {
        for s in &self.shards {
            RawTensors::release(s, bytes);
        }
    }
}
