//! `ternary_bundle._native`: the Rust core of the Python package `ternary_bundle` (PyO3). It
//! opens and validates bundles, runs `verify`, `assess` and `inspect`, and describes where each tensor's
//! bytes are in the files it validated; the pure-Python package (`python/ternary_bundle/`)
//! turns that into read-only numpy views over the same files and into Python exceptions.
//!
//! Every call that reads a bundle's data releases the GIL (`Python::detach`). Errors are raised
//! as `_native.NativeError(kind, message, rule, path, tensor, expected, found)`, which the
//! Python layer maps to its exception classes (they pickle; a Rust-defined class would not).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use numpy::PyReadonlyArray1;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::{json, Value};

use ternary_bundle::assess::{assess as assess_bundle, AssessOptions};
use ternary_bundle::create::{CreateInputs, CreateRequest, MemoryInputs, Settings};
use ternary_bundle::format::safetensors::Dtype;
use ternary_bundle::model::reference::WeightPath;
use ternary_bundle::read::checks::check_all;
use ternary_bundle::read::inspect::inspect as inspect_bundle;
use ternary_bundle::read::mmap::Backing;
use ternary_bundle::read::OpenOptions;
use ternary_bundle::run::{run as run_model, RunInput};
use ternary_bundle::signing::{sign_bundle, PublicKey, SigningKey};
use ternary_bundle::source::quantization_metadata::QuantizationMetadata;
use ternary_bundle::source::{validation_set, BorrowedSource};
use ternary_bundle::verify::{verify as verify_bundle, Check, VerifyOptions};
use ternary_bundle::{Bundle, Encoding, Error, Granularity};

create_exception!(
    _native,
    NativeError,
    PyException,
    "An error of the Rust core: args (kind, message, rule, path, tensor, expected, found)."
);

/// The Python exception for `e`: its kind (`"rule"`, `"exists"`, `"not_found"`,
/// `"permission"`, `"argument"`, `"other"`), message, and for a rule violation its fields.
fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    let kind = match &e {
        Error::Invalid(_) => "rule",
        Error::DestinationExists { .. } => "exists",
        Error::InvalidArgument(_) => "argument",
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => "not_found",
            std::io::ErrorKind::PermissionDenied => "permission",
            std::io::ErrorKind::AlreadyExists => "exists",
            _ => "other",
        },
        _ => "other",
    };
    let v = e.violation();
    NativeError::new_err((
        kind,
        message,
        v.map(|v| v.rule.number().to_string()),
        v.map(|v| v.path.display().to_string()),
        v.and_then(|v| v.tensor.clone()),
        v.map(|v| v.expected.clone()),
        v.map(|v| v.found.clone()),
    ))
}

fn open_options(mmap: bool) -> OpenOptions {
    OpenOptions {
        backing: if mmap { Backing::Map } else { Backing::Read },
    }
}

/// A bundle opened (headers, manifest and structure validated, spec section 11), its files
/// memory-mapped for as long as this object lives.
#[pyclass(module = "ternary_bundle._native", frozen)]
struct NativeBundle {
    bundle: Bundle,
}

/// Identity of a file as this process validated it: path, size, device and inode, so that the
/// Python layer maps the same file and not one that replaced it since.
fn identity(path: &Path) -> PyResult<Value> {
    let m = std::fs::metadata(path).map_err(|e| to_py(Error::io(path, "stat", e)))?;
    Ok(json!({
        "path": path.display().to_string(),
        "size": m.len(),
        "dev": m.dev(),
        "ino": m.ino(),
    }))
}

#[pymethods]
impl NativeBundle {
    /// Opens the bundle directory `path` (`mmap=False` reads the files into memory instead).
    #[new]
    #[pyo3(signature = (path, mmap = true))]
    fn new(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Self> {
        let bundle = py
            .detach(|| Bundle::open_with(&path, &open_options(mmap)))
            .map_err(to_py)?;
        Ok(NativeBundle { bundle })
    }

    /// JSON: `manifest` (as stored), `files` {role: identity}, and `tensors` {role: [{name,
    /// dtype, shape, offset, nbytes}]}, each offset absolute in its file and validated (rules
    /// 3.2 to 3.6).
    fn describe(&self) -> PyResult<String> {
        let b = &self.bundle;
        let mut files = serde_json::Map::new();
        let mut tensors = serde_json::Map::new();
        for f in b.files() {
            let role = f
                .role()
                .file_name()
                .trim_end_matches(".safetensors")
                .to_string();
            files.insert(role.clone(), identity(f.path())?);
            let h = f.header();
            let list: Vec<Value> = h
                .entries
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "dtype": e.dtype.name(),
                        "shape": e.shape,
                        "offset": h.data_start() + e.start,
                        "nbytes": e.byte_len(),
                    })
                })
                .collect();
            tensors.insert(role, Value::Array(list));
        }
        let manifest: Value = serde_json::to_value(b.manifest())
            .map_err(|e| to_py(Error::InvalidArgument(format!("manifest to JSON: {e}"))))?;
        Ok(json!({
            "dir": b.dir().display().to_string(),
            "manifest": manifest,
            "files": files,
            "tensors": tensors,
        })
        .to_string())
    }

    /// The trits of quantized tensor `name`, one signed byte each (-1, 0, 1), row-major,
    /// decoded and checked (rules 4.3, 4.4).
    fn trits<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyBytes>> {
        let b = &self.bundle;
        let trits = py.detach(|| -> Result<Vec<u8>, Error> {
            let p = b.packed(name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: no quantized tensor {name:?}",
                    b.dir().display()
                ))
            })?;
            let t = p.trits().map_err(|(r, e)| b.row_error(name, r, e))?;
            Ok(t.into_iter().map(|x| x as u8).collect())
        });
        Ok(PyBytes::new(py, &trits.map_err(to_py)?))
    }
}

/// `bundle verify --json` of the bundle at `path` with `options` (a JSON object of
/// VerifyOptions' fields: only, skip, strict, min_agreement, min_retention, max_kl, samples,
/// seed, grad_tol, reference, mmap, trusted_keys, require_signature): the report as JSON text.
#[pyfunction]
fn verify(py: Python<'_>, path: PathBuf, options: &str) -> PyResult<String> {
    let o = parse_options("verify", options)?;
    let mut opts = VerifyOptions::default();
    let list = |key: &str| -> PyResult<Vec<Check>> {
        let names: Vec<String> = o
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Check::parse_list(&names).map_err(to_py)
    };
    opts.only = list("only")?;
    opts.skip = list("skip")?;
    let num = |key: &str| o.get(key).and_then(Value::as_f64);
    if let Some(v) = o.get("strict").and_then(Value::as_bool) {
        opts.strict = v;
    }
    if let Some(v) = num("min_agreement") {
        opts.min_agreement = v;
    }
    if let Some(v) = num("min_retention") {
        opts.min_retention = v;
    }
    if let Some(v) = num("max_kl") {
        opts.max_kl = v;
    }
    if let Some(v) = o.get("samples").and_then(Value::as_u64) {
        opts.samples = v as usize;
    }
    if let Some(v) = o.get("seed").and_then(Value::as_u64) {
        opts.seed = v;
    }
    if let Some(v) = num("grad_tol") {
        opts.grad.tolerance = v;
    }
    if let Some(v) = o.get("reference").and_then(Value::as_str) {
        opts.reference = Some(PathBuf::from(v));
    }
    if let Some(v) = o.get("mmap").and_then(Value::as_bool) {
        opts.open = open_options(v);
    }
    if let Some(keys) = o.get("trusted_keys").and_then(Value::as_array) {
        opts.trusted_keys = keys
            .iter()
            .filter_map(Value::as_str)
            .map(|p| PublicKey::read(Path::new(p)))
            .collect::<Result<_, _>>()
            .map_err(to_py)?;
    }
    if let Some(v) = o.get("require_signature").and_then(Value::as_bool) {
        opts.require_signature = v;
    }
    opts.check().map_err(to_py)?;
    let report = py.detach(|| verify_bundle(&path, &opts));
    serde_json::to_string(&report)
        .map_err(|e| to_py(Error::InvalidArgument(format!("report to JSON: {e}"))))
}

/// `bundle inspect --json` of the bundle at `path`, as JSON text.
#[pyfunction]
#[pyo3(signature = (path, mmap = true))]
fn inspect(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<String> {
    let i = py
        .detach(|| Bundle::open_with(&path, &open_options(mmap)).map(|b| inspect_bundle(&b)))
        .map_err(to_py)?;
    serde_json::to_string(&i)
        .map_err(|e| to_py(Error::InvalidArgument(format!("inspection to JSON: {e}"))))
}

/// `bundle assess --json` of the bundle at `path` with `options` (a JSON object: target, zone
/// [lo, hi], batch_size, data, mmap): the report as JSON text.
#[pyfunction]
fn assess(py: Python<'_>, path: PathBuf, options: &str) -> PyResult<String> {
    let o = parse_options("assess", options)?;
    let mut opts = AssessOptions::default();
    if let Some(v) = o.get("target").and_then(Value::as_f64) {
        opts.target = v;
    }
    if let Some([lo, hi]) = o.get("zone").and_then(Value::as_array).map(Vec::as_slice) {
        match (lo.as_f64(), hi.as_f64()) {
            (Some(lo), Some(hi)) => opts.zone = (lo, hi),
            _ => {
                return Err(to_py(Error::InvalidArgument(
                    "zone: expected two numbers [lo, hi]".into(),
                )))
            }
        }
    }
    if let Some(v) = o.get("batch_size").and_then(Value::as_u64) {
        opts.batch_size = Some(v as usize);
    }
    if let Some(v) = o.get("data").and_then(Value::as_str) {
        opts.data = Some(PathBuf::from(v));
    }
    if let Some(v) = o.get("mmap").and_then(Value::as_bool) {
        opts.open = open_options(v);
    }
    let report = py.detach(|| assess_bundle(&path, &opts)).map_err(to_py)?;
    serde_json::to_string(&report)
        .map_err(|e| to_py(Error::InvalidArgument(format!("report to JSON: {e}"))))
}

/// One tensor lent from Python: name, dtype name (safetensors'), shape, and its bytes as a
/// contiguous `uint8` view of the caller's array (numpy or torch memory, not copied).
type LentTensor<'py> = (String, String, Vec<u64>, PyReadonlyArray1<'py, u8>);

/// A [`BorrowedSource`] over the lent tensors' bytes, labelled `label` in errors.
fn borrowed<'a>(label: &str, tensors: &'a [LentTensor<'_>]) -> Result<BorrowedSource<'a>, Error> {
    let mut source = BorrowedSource::new(label);
    for (name, dtype, shape, bytes) in tensors {
        let d = Dtype::from_name(dtype).ok_or_else(|| {
            Error::InvalidArgument(format!("{label}: tensor {name:?}: unknown dtype {dtype:?}"))
        })?;
        let bytes = bytes
            .as_slice()
            .map_err(|e| Error::InvalidArgument(format!("{label}: tensor {name:?}: {e}")))?;
        source.push(name.clone(), d, shape.clone(), bytes)?;
    }
    Ok(source)
}

/// [`borrowed`] of tensors that may not be given.
fn borrowed_opt<'a>(
    label: &str,
    tensors: Option<&'a [LentTensor<'_>]>,
) -> PyResult<Option<BorrowedSource<'a>>> {
    tensors
        .map(|t| borrowed(label, t))
        .transpose()
        .map_err(to_py)
}

/// The options of a call (`what`: verify, assess, create) passed as JSON text by the Python
/// layer.
fn parse_options(what: &str, options: &str) -> PyResult<Value> {
    serde_json::from_str(options)
        .map_err(|e| to_py(Error::InvalidArgument(format!("{what} options: {e}"))))
}

/// The `CreateRequest` of a JSON object of options: from, arch, quantize, encoding,
/// granularity, group_size, epsilon, sparsity_threshold, original, original_forward,
/// original_top_k, validation (a file), validation_text and seq_len.
fn create_request(o: &Value) -> Result<CreateRequest, Error> {
    let text = |k: &str| o.get(k).and_then(Value::as_str).map(String::from);
    let granularity = match (
        text("granularity").as_deref(),
        o.get("group_size").and_then(Value::as_u64),
    ) {
        (None, _) => None,
        (Some("tensor"), _) => Some(Granularity::Tensor),
        (Some("channel"), _) => Some(Granularity::Channel),
        (Some("group"), Some(g)) => Some(Granularity::Group(g)),
        (Some(other), _) => {
            return Err(Error::InvalidArgument(format!(
                "granularity: expected \"tensor\", \"channel\" or \"group\" (with group_size), found {other:?}"
            )))
        }
    };
    let encoding = match text("encoding").as_deref() {
        None | Some("trit5") => Encoding::Trit5,
        Some("trit2") => Encoding::Trit2,
        Some(other) => {
            return Err(Error::InvalidArgument(format!(
                "encoding: expected \"trit5\" or \"trit2\", found {other:?}"
            )))
        }
    };
    let ternary_original = match text("original_forward").as_deref() {
        None | Some("dense") => false,
        Some("ternary") => true,
        Some(other) => {
            return Err(Error::InvalidArgument(format!(
                "original_forward: expected \"dense\" or \"ternary\", found {other:?}"
            )))
        }
    };
    let validation_text = match (
        text("validation_text"),
        o.get("seq_len").and_then(Value::as_u64),
    ) {
        (None, _) => None,
        (Some(t), Some(n)) => Some((PathBuf::from(t), n as usize)),
        (Some(_), None) => {
            return Err(Error::InvalidArgument(
                "validation_text: give seq_len, the tokens per sequence".into(),
            ))
        }
    };
    Ok(CreateRequest {
        from: text("from").map(PathBuf::from).unwrap_or_default(),
        arch: text("arch").map(PathBuf::from),
        quantization_metadata: text("quantization_metadata").map(PathBuf::from),
        quantize: o
            .get("quantize")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        settings: Settings {
            encoding,
            granularity,
            epsilon: o.get("epsilon").and_then(Value::as_f64).map(|v| v as f32),
            sparsity_threshold: o
                .get("sparsity_threshold")
                .and_then(Value::as_f64)
                .map(|v| v as f32),
        },
        original: text("original").map(PathBuf::from),
        ternary_original,
        validation: text("validation").map(PathBuf::from),
        validation_text,
        original_top_k: o.get("original_top_k").and_then(Value::as_u64),
    })
}

/// Writes `inputs` to `out` and returns `bundle inspect --json` of what was written.
fn write_and_inspect(inputs: &CreateInputs<'_>, out: &Path, o: &Value) -> Result<String, Error> {
    let force = o.get("force").and_then(Value::as_bool).unwrap_or(false);
    inputs.write(out, force, None, &|_| {})?;
    let bundle = Bundle::open(out)?;
    let mut info = serde_json::to_value(inspect_bundle(&bundle))
        .map_err(|e| Error::InvalidArgument(format!("inspection to JSON: {e}")))?;
    if let Some(map) = info.as_object_mut() {
        map.insert("notes".into(), json!(inputs.notes()));
    }
    Ok(info.to_string())
}

/// `bundle create` from tensors in memory (a chain of layers), lent in place: `tensors` as
/// (name, dtype, shape, uint8 view); `options` a JSON object ([`create_request`]'s keys,
/// `force`, and `metadata`: the stage's quantization metadata as JSON text when the tensors
/// are its trits); `validation` tensors named as in a validation file; `original` the
/// original model's float tensors. Returns `bundle inspect --json` of the bundle written.
#[pyfunction]
#[pyo3(signature = (out, tensors, options, validation = None, original = None))]
fn create(
    py: Python<'_>,
    out: PathBuf,
    tensors: Vec<LentTensor<'_>>,
    options: &str,
    validation: Option<Vec<LentTensor<'_>>>,
    original: Option<Vec<LentTensor<'_>>>,
) -> PyResult<String> {
    let o = parse_options("create", options)?;
    let weights = borrowed("<memory>", &tensors).map_err(to_py)?;
    let validation = borrowed_opt("<memory validation>", validation.as_deref())?;
    let original = borrowed_opt("<memory original>", original.as_deref())?;
    py.detach(|| -> Result<String, Error> {
        let request = create_request(&o)?;
        let metadata = match (
            o.get("metadata").and_then(Value::as_str),
            &request.quantization_metadata,
        ) {
            (Some(text), _) => Some(QuantizationMetadata::from_json(
                Path::new("<quantization metadata>"),
                text,
            )?),
            (None, Some(path)) => Some(QuantizationMetadata::read(path)?),
            (None, None) => None,
        };
        let validation = validation.as_ref().map(|v| validation_set(v)).transpose()?;
        let inputs = CreateInputs::from_memory(
            MemoryInputs {
                weights,
                metadata,
                original,
                validation,
            },
            &request,
        )?;
        write_and_inspect(&inputs, &out, &o)
    })
    .map_err(to_py)
}

/// `bundle create --from` a file or model directory (`options["from"]`) with the same options
/// as the command's flags ([`create_request`]), and optionally a validation set lent in memory
/// (tensors named as in a validation file) in place of a file. Returns `bundle inspect --json`
/// of the bundle written, with `notes` (what the CLI prints about how the source was read).
#[pyfunction]
#[pyo3(signature = (out, options, validation = None))]
fn create_from(
    py: Python<'_>,
    out: PathBuf,
    options: &str,
    validation: Option<Vec<LentTensor<'_>>>,
) -> PyResult<String> {
    let o = parse_options("create", options)?;
    let validation = borrowed_opt("<memory validation>", validation.as_deref())?;
    py.detach(|| -> Result<String, Error> {
        let request = create_request(&o)?;
        let mut inputs = CreateInputs::open(&request)?;
        if let Some(v) = &validation {
            if request.validation.is_some() || request.validation_text.is_some() {
                return Err(Error::InvalidArgument(
                    "a validation set in memory and one from a file: give one".into(),
                ));
            }
            inputs.set_validation(validation_set(v)?);
        }
        write_and_inspect(&inputs, &out, &o)
    })
    .map_err(to_py)
}

/// `bundle run`: the reference model of the bundle at `path` along `weights` ("fp16" or
/// "ternary") on `values` (a chain of layers' rows, F32, with `width` values per row) or
/// `ids` (a decoder's token sequences of `tokens` each). Returns the logits as F32 bytes and
/// their shape.
#[pyfunction]
#[pyo3(signature = (path, weights, values = None, ids = None, tokens = 0))]
fn run(
    py: Python<'_>,
    path: PathBuf,
    weights: &str,
    values: Option<Vec<f32>>,
    ids: Option<Vec<i64>>,
    tokens: usize,
) -> PyResult<(Py<PyBytes>, Vec<usize>)> {
    let weight_path = match weights {
        "fp16" => WeightPath::Fp16,
        "ternary" => WeightPath::Ternary,
        other => {
            return Err(to_py(Error::InvalidArgument(format!(
                "path: expected \"fp16\" or \"ternary\", found {other:?}"
            ))))
        }
    };
    let input = match (values, ids) {
        (Some(v), None) => RunInput::Rows(v),
        (None, Some(ids)) => RunInput::Tokens { ids, tokens },
        _ => {
            return Err(to_py(Error::InvalidArgument(
                "run: give rows of inputs or token ids".into(),
            )))
        }
    };
    let out = py
        .detach(|| {
            let bundle = Bundle::open(&path)?;
            check_all(&bundle)?;
            run_model(&bundle, weight_path, &input)
        })
        .map_err(to_py)?;
    let shape = match out.tokens {
        Some(t) => vec![out.rows, t, out.classes],
        None => vec![out.rows, out.classes],
    };
    let bytes: Vec<u8> = out.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok((PyBytes::new(py, &bytes).unbind(), shape))
}

/// `bundle sign`: checks the bundle's digests, then writes `model.sig` signed with the PEM
/// private key at `key`. Returns (hint, curve, files signed).
#[pyfunction]
fn sign(py: Python<'_>, path: PathBuf, key: PathBuf) -> PyResult<(String, String, Vec<String>)> {
    py.detach(|| {
        let k = SigningKey::read(&key)?;
        sign_bundle(&path, &k)
    })
    .map(|s| (s.hint, s.curve.to_string(), s.files))
    .map_err(to_py)
}

/// The module `ternary_bundle._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add_class::<NativeBundle>()?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(assess, m)?)?;
    m.add_function(wrap_pyfunction!(create, m)?)?;
    m.add_function(wrap_pyfunction!(create_from, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(sign, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
