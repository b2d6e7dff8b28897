//! Every command and flag of `bundle`, with the help text users read. Nothing else is defined
//! anywhere: `--help` and the README's tour come from here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, shown in `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the bundle failed a check, or an input was invalid or unreadable
  2  usage error (unknown flag, missing argument)

`bundle assess` exits 1 when no level lies in the zone, and 2 when there is no labelled data
with a difficulty column.";

/// Create, inspect and check ternary (BitNet b1.58) model bundles.
///
/// A bundle is a directory with the packed ternary weights (ternary.safetensors, about 1.6 bits
/// per weight), their exact FP16 dequantization for training (fp16.safetensors, a plain PyTorch
/// state dict), and a manifest with the quantization settings and SHA-256 checksums. The format
/// is specified in spec/FORMAT.md.
///
/// Start with `bundle demo`: it builds the built-in 25 M-parameter demo model, shows what is
/// inside and checks it.
#[derive(Debug, Parser)]
#[command(name = "bundle", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// Read bundle files into memory instead of memory-mapping them (for network filesystems,
    /// or files another process may truncate).
    #[arg(long, global = true)]
    pub no_mmap: bool,

    /// Threads of the one pool every parallel step runs on (hashing, checks, quantization,
    /// matrix products). Default: one per core.
    #[arg(long, global = true, value_name = "N", env = "BUNDLE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Quantize a checkpoint (or the built-in demo model) into a new bundle.
    #[command(after_help = CREATE_EXAMPLES)]
    Create(CreateArgs),
    /// Build the demo bundle, show what is inside and check it: the first thing to run.
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
    /// Show what is inside a bundle: format, architecture, settings, files, tensors, sizes.
    ///
    /// Reads only the manifest and the safetensors headers, so it takes the same time for a
    /// 1 GB bundle as for a tiny one. It validates the structure (rules 1.x to 6.1 of the spec)
    /// but not the data (`bundle demo` shows the data checks).
    Inspect(InspectArgs),
    /// Gate a handoff: integrity, exact dequantization, model agreement, gradients.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Write the model out for other tools: a plain safetensors state dict, or a language
    /// model's directory that transformers loads (hf), or a packed BitNet checkpoint
    /// (hf-bitnet).
    ///
    /// The bundle is checked first (checksums, trit encoding, scales, exact dequantization):
    /// nothing is exported from a damaged bundle.
    #[command(after_help = EXPORT_HELP)]
    Export(ExportArgs),
    /// Quantize fine-tuned weights of a bundle's model into a new bundle, with the bundle's
    /// settings (and optionally its scales), reporting how many trits changed per tensor.
    Requantize(RequantizeArgs),
    /// The receiving stage's first step: find the curriculum difficulty at which the FP16 model
    /// is right 75% of the time, with the accuracy, loss and gradient variance of every level.
    #[command(after_help = ASSESS_HELP)]
    Assess(AssessArgs),
    /// Write one self-contained HTML page to read before accepting a handoff: summary, every
    /// verify check, the handoff metrics, the fidelity figures (KL histogram per path,
    /// perplexity per difficulty level), per-tensor charts and the assessment curve.
    #[command(after_help = REPORT_HELP)]
    Report(ReportArgs),
    /// Run the bundle's model on your inputs and write the logits, to compare the bundle with
    /// your own framework in one step.
    ///
    /// The input file is safetensors with tensor `inputs` (or a single tensor of any name),
    /// F32, F16 or BF16, shape [N, input_dim]. The output file holds `logits` F32
    /// [N, classes] and `predictions` I64 [N] (argmax, first index on ties), from the
    /// reference model of spec section 16 in f32. For a language model (a decoder bundle) the
    /// input is `input_ids` I64 or I32 [N, T] and the output `logits` F32 [N, T, vocab] and
    /// `predictions` I64 [N, T] (the predicted next token at every position, section 16.2). The bundle is checked first (checksums, trit
    /// encoding, scales, exact dequantization): nothing is computed from a damaged bundle.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Sign a bundle: write `model.sig`, an OpenSSF Model Signing signature (the `key` method)
    /// over every file of the bundle directory, which `bundle verify --trusted-key` and the
    /// `model_signing` tool both check.
    ///
    /// The bundle's checksums are checked first (every file and tensor digest, rules 7.1,
    /// 7.2, 7.4): nothing damaged is signed. An existing `model.sig` is replaced atomically.
    #[command(after_help = SIGN_HELP)]
    Sign(SignArgs),
    /// Make a new EC P-256 private key (PKCS#8 PEM) and its public key, for `bundle sign`
    /// and `bundle verify --trusted-key`.
    Keygen(KeygenArgs),
}

const SIGN_HELP: &str = "\
Keys are EC P-256 or P-384: a PEM private key, PKCS#8 (BEGIN PRIVATE KEY) or SEC1 (BEGIN EC
PRIVATE KEY), e.g. from `bundle keygen --out key.pem` or
`openssl ecparam -name prime256v1 -genkey -noout -out key.pem`; the public key is its SPKI PEM
(`openssl ec -in key.pem -pubout -out key.pub.pem`). model.sig names the key by a hint (the
SHA-256 of the public key's PEM); the signature is deterministic (RFC 6979).

Examples:
  bundle keygen --out stage4.pem                 # also writes stage4.pub.pem
  bundle sign my-bundle --key stage4.pem
  bundle verify my-bundle --trusted-key stage4.pub.pem
  model_signing verify key my-bundle --signature my-bundle/model.sig --public_key stage4.pub.pem";

/// `bundle sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The private key (PEM: PKCS#8 or SEC1, EC P-256 or P-384).
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
}

/// `bundle keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600); the public key goes beside
    /// it as NAME.pub.pem (SPKI PEM).
    #[arg(long, value_name = "KEY.pem")]
    pub out: PathBuf,

    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

/// How the demo model and its validation set are made (`bundle demo --help`, `create --help`).
pub const DEMO_HELP: &str = "\
The demo is a model that solves a task, built rather than trained, so that its accuracy and
what quantization does to it mean something (512 -> 4096 -> 4096 -> 1536 -> 100, ReLU,
25,329,252 parameters; everything drawn from ChaCha8 streams of --seed):
  task        100 classes, each a prototype signal drawn from a standard normal in R^512; an
              example of class c is prototype c plus noise, and its label is c
  hidden      random ternary features: every row has exactly 2 * floor(fan_in / 3) non-zero
              trits, half +1 and half -1, at random positions
  readout     row c is +1 on the 512 of 1536 features where prototype c (through the hidden
              layers) is furthest above the mean of all prototypes, -1 on the 512 furthest below
  original    the weights that are quantized are latent QAT weights: m * t * (1 + u) for a
              non-zero trit t, m * u for a zero, u uniform in +-0.002, m = sqrt(2 / non-zeros);
              biases are zero. Quantizing gives back the trits. The original model is the one
              training ran, the latent weights through the quantizer (spec section 7.2), so the
              FP16 model differs from it by the F16 rounding of the scales alone
  validation  1000 examples, every class once at every difficulty 1..10: difficulty L adds
              sigma_L times one standard normal noise vector per class, sigma = 2.5, 2.95, 3.12,
              3.32, 3.55, 3.7, 3.85, 4.2, 4.65, 5.8. The labels are the classes (the ground
              truth), and the writer stores the original model's predictions beside them
With the default seed the FP16 model's accuracy by difficulty is 99, 97, 92, 88, 86, 80, 75,
68, 59 and 40%, and it keeps 100% of the original model's decisions; its distribution lies
1.4e-7 nats (mean KL) from the original's.

The language-model demo (--model lm; create --demo lm) is a small language model trained for
real, embedded in the binary (fixtures/lm, made by scripts/train_lm.py): a Llama-family decoder
(hidden 96, 4 layers, 4 heads and 2 KV heads of 24, intermediate 256, 63 characters as tokens,
untied head; 418,464 parameters):
  training    quantization-aware (its seven projections per layer ternary in the forward pass,
              straight-through gradients) on 300 KB of Shakespeare, a third of the sequences a
              chunk of text repeated, so it copies from context: attention, positions and
              every layer matter
  original    the model training ran: the weights through the quantizer (spec section 7.2)
  validation  20 sequences of 48 characters at every difficulty 1..10, each a 16-character
              chunk of held-out text repeated three times; at difficulty d each character of
              the copies is replaced by a uniform one with probability 0.03 (d - 1). --seed
              draws the chunks and the noise, never the weights
With the default seed the FP16 model's next-token accuracy falls from 79% at level 1 to 41% at
level 10 (perplexity 2.2 to 39); it keeps 100% of the original model's decisions, and its
distribution lies 5e-7 nats (mean KL) from the original's.";

const CREATE_EXAMPLES: &str = "\
Examples:
  bundle create --demo --out demo-bundle
  bundle create --demo lm --out lm-bundle
  bundle create --from model.safetensors --out my-bundle
  bundle create --from model.safetensors --out my-bundle --granularity group --group-size 128
  bundle create --from model.safetensors --out my-bundle --arch arch.json --quantize 'layers.*.weight'
  bundle create --from trits.safetensors --quantization-metadata quantization_metadata.json \\
      --original model.safetensors --validation val.safetensors --out handoff
  bundle create --from bitnet-b1.58-2B-4T --original bitnet-b1.58-2B-4T-bf16 --out 2b4t
  bundle create --from latent.safetensors --original-forward ternary --validation val.safetensors --out qat
  bundle create --from llama-dir --validation-text book.txt --seq-len 128 --out lm

Already-ternary models are bundled as given, never re-quantized (method \"given\", spec section
7.1): the quantizing stage's state dict of trits with its quantization_metadata.json (scales per
tensor, per row or per group; zero points 0), and Hugging Face packed BitNet directories
(config.json quantization_config with quant_method \"bitnet\"; autobitlinear multiplies by
weight_scale, bitlinear divides, and the manifest records which). Their original model is
--original (its predictions on the validation set become original_predictions); without it
retention is unknown. A BF16 master directory with online BitNet quantization is quantized per
tensor as transformers does (absmean, epsilon 1e-5), and its original model is the one
transformers runs (8-bit activations). A model directory's tokenizer and generation files are
carried into the bundle.

Which tensors are quantized: by default every 2-D tensor named *.weight that is a layer of the
architecture; --quantize PATTERN (glob, repeatable) replaces that choice. Every other tensor is
kept in full precision (F32 in ternary.safetensors, F16 in fp16.safetensors).

The architecture comes from --arch (a JSON file shaped like the manifest's \"model\" object) or is
inferred: 2-D <layer>.weight tensors in natural name order, with <layer>.bias when present, must
chain (each layer's in_features equals the previous out_features); ReLU between layers.";

/// `bundle create`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["from", "demo"])))]
pub struct CreateArgs {
    /// Source: a safetensors checkpoint of F32, F16 or BF16 tensors (a chain of layers), or a
    /// Hugging Face model directory of a language model (LlamaForCausalLM or
    /// BitNetForCausalLM: config.json and model.safetensors or shards with
    /// model.safetensors.index.json), checked tensor by tensor against its config. A
    /// directory's seven projections of every layer are quantized by default; embeddings,
    /// norms and an untied lm_head are stored F32.
    #[arg(long, value_name = "CHECKPOINT.safetensors|MODEL_DIR")]
    pub from: Option<PathBuf>,

    /// Use a built-in demo model and embed its validation set: `mlp` (the default: 512 -> 4096
    /// -> 4096 -> 1536 -> 100, ReLU, 25 M parameters, 1000 labelled examples at difficulty
    /// 1..10) or `lm` (a trained character-level Llama of 418 k parameters, 200 sequences at
    /// difficulty 1..10). See `bundle demo --help` for how the models and the data are made.
    #[arg(
        long,
        value_name = "MODEL",
        num_args = 0..=1,
        default_missing_value = "mlp",
        conflicts_with_all = ["arch", "quantize", "validation"]
    )]
    pub demo: Option<DemoModel>,

    /// Seed of the demo model's weights and validation inputs.
    #[arg(long, requires = "demo", default_value_t = ternary_bundle::write::demo::DEFAULT_SEED)]
    pub seed: u64,

    /// Layer widths of a demo-style model instead of the demo's (input,hidden...,classes);
    /// used by the benchmarks to build bundles of any size.
    #[arg(long, requires = "demo", hide = true, value_delimiter = ',', num_args = 1..)]
    pub demo_widths: Option<Vec<u64>>,

    /// Destination directory (must not exist unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Architecture file (the manifest's "model" object); inferred from the checkpoint if omitted.
    #[arg(long, value_name = "ARCH.json")]
    pub arch: Option<PathBuf>,

    #[command(flatten)]
    pub quant: QuantFlags,

    /// Quantize the tensors whose names match PATTERN (glob: * ? [abc]); repeatable. Replaces
    /// the default choice.
    #[arg(long, value_name = "PATTERN")]
    pub quantize: Vec<String>,

    /// Labelled data to embed: inputs F32 [N, input_dim], labels I64 [N], optional difficulty
    /// U8 [N]; for a language model, token sequences input_ids I64 [N, T >= 2], optional
    /// labels I64 [N, T-1] (by default each position's next token) and difficulty U8 [N]. The
    /// original model's predictions on the inputs are stored with it (original_predictions),
    /// so that `verify` can measure retention.
    #[arg(long, value_name = "DATA.safetensors")]
    pub validation: Option<PathBuf>,

    /// A language model's validation set from plain text (UTF-8): tokenized with the model
    /// directory's tokenizer.json (no special tokens added) and cut into sequences of
    /// --seq-len tokens, the remainder dropped (spec section 18.5).
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["validation", "demo"], requires = "seq_len")]
    pub validation_text: Option<PathBuf>,

    /// Tokens per validation sequence with --validation-text (at least 2).
    #[arg(long, value_name = "T", requires = "validation_text")]
    pub seq_len: Option<usize>,

    /// The quantizing stage's metadata for a --from state dict of trits: scales per tensor (a
    /// number, a list per row, or a list of group scales per row with a top-level group_size),
    /// zero points (all 0). The trits and scales are bundled as given (spec section 18.1). A
    /// model directory's quantization_metadata.json is read without this flag.
    #[arg(long, value_name = "META.json", conflicts_with = "demo")]
    pub quantization_metadata: Option<PathBuf>,

    /// The original model, whose decisions the handoff must keep: a checkpoint or model
    /// directory of full-precision weights (a directory with online BitNet quantization runs
    /// as transformers runs it). Its predictions on the validation set are stored as
    /// original_predictions. Default: the --from weights themselves, except for given trits,
    /// which then have none (retention unknown).
    #[arg(long, value_name = "ORIGINAL", conflicts_with = "demo")]
    pub original: Option<PathBuf>,

    /// How the original model runs: dense (its weights as read) or ternary (every tensor this
    /// bundle quantizes replaced by t x scale of this quantization: the latent weights of
    /// quantization-aware training, whose own forward pass ternarizes them; spec section 7.2).
    #[arg(long, value_enum, default_value_t = OriginalForwardArg::Dense, conflicts_with = "demo")]
    pub original_forward: OriginalForwardArg,

    /// How much of the original model's distribution to store beside its predictions, for
    /// verify's KL divergence and perplexity (format 5.0, spec section 9.1): by default the full
    /// log-softmax when samples x classes <= 2^21 values, otherwise the 64 most probable
    /// classes with their log-probabilities, the log-sum-exp and each label's log-probability.
    /// K (1 to 1024, at most the classes) stores the top K; 0 stores none (predictions only: a
    /// format 2.0 to 4.0 bundle older readers open).
    #[arg(long, value_name = "K")]
    pub original_top_k: Option<u64>,

    /// Replace an existing bundle at --out (atomically; never a non-bundle directory).
    #[arg(long)]
    pub force: bool,

    /// Record the creation time in the manifest (makes the output differ between runs).
    #[arg(long)]
    pub timestamp: bool,

    /// Sign the new bundle with this private key (as `bundle sign` does, before it is
    /// published at --out).
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
}

/// Quantization settings shared by `create`. Unset, they take the defaults below, or for a
/// directory with online BitNet quantization transformers' (tensor, epsilon 1e-5, threshold
/// 0.5); given trits keep their own scales (only --encoding applies).
#[derive(Debug, Args)]
pub struct QuantFlags {
    /// How trits are packed: trit5 (5 per byte, 1.6 bits/weight) or trit2 (4 per byte, 2 bits).
    #[arg(long, value_enum, default_value_t = EncodingArg::Trit5)]
    pub encoding: EncodingArg,

    /// Which weights share a scale: one per tensor, per output channel (row), or per group of
    /// --group-size consecutive columns of a row. [default: channel]
    #[arg(long, value_enum)]
    pub granularity: Option<GranularityArg>,

    /// Columns per scale group (with --granularity group).
    #[arg(long, value_name = "G", required_if_eq("granularity", "group"))]
    pub group_size: Option<u64>,

    /// A weight becomes a non-zero trit when |w / scale| exceeds this (0.5 = round-to-nearest).
    /// [default: 0.5]
    #[arg(long, value_name = "T")]
    pub sparsity_threshold: Option<f32>,

    /// Smallest allowed scale (scale = max(mean |w|, epsilon)). [default: 0.00001]
    #[arg(long, value_name = "E")]
    pub epsilon: Option<f32>,
}

/// `--original-forward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OriginalForwardArg {
    /// The weights as read.
    Dense,
    /// The quantized tensors as t x scale of this bundle's quantization.
    Ternary,
}

/// `--encoding`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EncodingArg {
    /// Five trits per byte (the default).
    Trit5,
    /// Four trits per byte.
    Trit2,
}

/// `--granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per output channel (row); the default.
    Channel,
    /// One scale per --group-size columns of each row.
    Group,
}

/// `bundle demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the demo bundle (replaced if it is a bundle from an earlier run).
    #[arg(value_name = "DIR", default_value = "demo-bundle")]
    pub dir: PathBuf,

    /// Seed of the demo model.
    #[arg(long, default_value_t = ternary_bundle::write::demo::DEFAULT_SEED)]
    pub seed: u64,

    /// Which demo: `mlp` (the 25 M-parameter classifier) or `lm` (a small trained
    /// character-level language model).
    #[arg(long, value_enum, default_value_t = DemoModel::Mlp)]
    pub model: DemoModel,
}

/// The built-in demo models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoModel {
    /// The 512 -> 4096 -> 4096 -> 1536 -> 100 classifier.
    Mlp,
    /// The tiny BitNet b1.58 language model.
    Lm,
}

/// `bundle inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Print one JSON object (schema: spec/inspect.schema.json) instead of text.
    #[arg(long)]
    pub json: bool,

    /// List every tensor (name, shape, storage, bytes, sparsity, scale range).
    #[arg(long)]
    pub tensors: bool,
}

const VERIFY_HELP: &str = "\
Checks, in order (each PASS, FAIL or SKIP with a one-line detail):
  manifest        manifest.json parses; format and version understood (rules 2.x)
  files           required files present, regular, sizes as declared (1.x, 3.1); extras fail with --strict
  checksums       whole-file and per-tensor SHA-256 (7.1, 7.2), hashed in parallel
  structure       headers valid and consistent with the manifest and the layer chain (3.x, 4.1, 4.2, 5.1, 6.1)
  encoding        every packed byte valid and canonical; zero counts exact (4.3, 4.4, 4.6)
  scales          finite, positive, representable in F16 (4.5, 4.6)
  dequantization  every FP16 value equals f16(t * scale) bit for bit (4.7, 5.2, 5.3)
  signature       with --trusted-key: model.sig (OpenSSF Model Signing, section 10.1) is a valid
                  signature by one of the trusted keys over exactly the bundle's files: fails on
                  a missing signature, an untrusted key, a bad signature, and any changed,
                  missing or extra file (symlinks too), each named (9.1 to 9.4). Without a key:
                  skipped with the signer's hint, or failed with --require-signature if
                  unsigned; a model.sig that does not parse fails (rule 9.1) with or without one
  agreement       the two forms of the bundle compute the same model: the reference model on the
                  ternary path (trits and scales only) and on the FP16 path agree on
                  >= --min-agreement of the inputs (the validation set, or --samples synthetic inputs)
  retention       the handoff's criterion: the FP16 model keeps >= --min-retention of the ORIGINAL
                  (pre-quantization) model's decisions: its argmax equals the original's
                  predictions, stored in the validation set by `bundle create` (rule 6.3) or
                  recomputed from --reference. Skipped, with the reason, when neither exists
  fidelity        the FP16 model's distribution stays close to the original's, as quantized
                  language models are judged: per scored sample KL(original || path) of the FP16
                  and ternary paths (mean, median, p99, p99.9, max; exact from a stored full
                  distribution, a lower bound with its error bound from a stored top-K), and the
                  cross-entropy of the labels (perplexity for a language model) of the original,
                  FP16 and ternary models; passes when the FP16 mean KL <= --max-kl. Needs the
                  original distributions (format 5.0, stored by `bundle create`) or --reference
  gradient_check  f64 backprop vs central differences (sampled coordinates and random directions),
                  each within --grad-tol relative plus the round-off bound of the difference
  gradient_flow   every parameter tensor gets a finite, non-zero gradient; per-tensor norm and variance
  reference       with --reference: the original checkpoint run again; its agreement with the FP16
                  model, and its predictions must equal the stored ones (up to near-ties) and its
                  distributions the stored ones (KL(stored || recomputed) <= 1e-4 at every sample;
                  top-K: log-sum-exp and label log-probabilities within 1e-3 relative)
A check whose prerequisite failed is reported as not run (SKIP), never as passed.

Language models (decoder bundles, format 3.0): a sample is a position of a token sequence (every
position but the last, whose label is the next token); the synthetic inputs are --samples / 16
sequences of 16 random ids; the gradient checks use the next-token cross-entropy and, above
2^26 parameters, stream the f64 model from fp16.safetensors (one sequence, one entry of each
tensor of the last layer, the embedding and the final norm, directions over all parameters);
--reference takes the original model directory (config.json and safetensors) or checkpoint.

Metrics (--json `metrics`): phase4_to_5/dequantization_accuracy_retention is the retention
above, never another figure; accuracy_original, accuracy_fp16 and accuracy_ternary are label
accuracies on the validation set. A metric that cannot be computed is null and `null_reasons`
says why (no validation set, no original predictions, a check not selected...).

Examples:
  bundle verify my-bundle
  bundle verify my-bundle --json > verify.json --junit verify.xml
  bundle verify my-bundle --only checksums,dequantization
  bundle verify my-bundle --min-retention 0.99
  bundle verify my-bundle --max-kl 0.01
  bundle verify my-bundle --reference original.safetensors
  bundle verify my-bundle --trusted-key stage4.pub.pem";

/// `bundle verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Print one JSON object (schema: spec/verify.schema.json) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also write a JUnit XML report (one test case per check) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Run only these checks (comma-separated names; see below).
    #[arg(long, value_name = "CHECKS", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Do not run these checks (comma-separated names).
    #[arg(long, value_name = "CHECKS", value_delimiter = ',')]
    pub skip: Vec<String>,

    /// Fail when the bundle directory holds undeclared files.
    #[arg(long)]
    pub strict: bool,

    /// Least share of inputs on which the ternary and FP16 paths must agree.
    #[arg(long, value_name = "FRACTION", default_value_t = ternary_bundle::verify::DEFAULT_MIN_AGREEMENT)]
    pub min_agreement: f64,

    /// Synthetic standard-normal inputs when the bundle has no validation set.
    #[arg(long, value_name = "N", default_value_t = ternary_bundle::verify::DEFAULT_SAMPLES)]
    pub samples: usize,

    /// Seed of synthetic inputs and labels, sampled coordinates and directions.
    #[arg(long, default_value_t = ternary_bundle::verify::DEFAULT_SEED)]
    pub seed: u64,

    /// Relative part of the gradient check's allowance: an analytic derivative a and its
    /// central difference n agree when |a - n| <= TOL * max(|a|, |n|) + the round-off bound of
    /// the difference (spec section 16.1). Correct f64 gradients agree to about 1e-8; a wrong
    /// backward pass is off by 1e-2 or more.
    #[arg(long, value_name = "TOL", default_value_t = ternary_bundle::model::gradcheck::DEFAULT_GRAD_TOL)]
    pub grad_tol: f64,

    /// Least share of inputs on which the FP16 model must predict what the original model
    /// predicted (the retention check; 0.995 is the handoff's threshold).
    #[arg(long, value_name = "FRACTION", alias = "min-reference-agreement", default_value_t = ternary_bundle::verify::DEFAULT_MIN_RETENTION)]
    pub min_retention: f64,

    /// Largest mean KL divergence KL(original || FP16), in nats per scored sample, of the FP16
    /// model's distribution from the original model's (the fidelity check; spec section 16.3
    /// says why 0.05). 0 disables the gate; the figures are still reported.
    #[arg(long, value_name = "NATS", default_value_t = ternary_bundle::verify::DEFAULT_MAX_KL)]
    pub max_kl: f64,

    /// The pre-quantization checkpoint (a language model's: its model directory or its
    /// safetensors file): run it again (the reference check), and take the original
    /// predictions from it when the bundle stores none.
    #[arg(long, value_name = "ORIGINAL.safetensors|MODEL_DIR")]
    pub reference: Option<PathBuf>,

    /// A public key (SPKI PEM, EC P-256 or P-384) whose signature the signature check
    /// accepts; repeat it to accept any of several. With one, an unsigned bundle fails.
    #[arg(long, value_name = "PUB.pem")]
    pub trusted_key: Vec<PathBuf>,

    /// Fail the signature check when the bundle has no model.sig, even without
    /// --trusted-key.
    #[arg(long)]
    pub require_signature: bool,
}

/// `bundle export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// What to write: safetensors (one state dict file), hf (a language model's directory for
    /// transformers: config.json, the carried tokenizer, model.safetensors or shards; spec
    /// section 18.4) or hf-bitnet (a packed autobitlinear checkpoint directory; section 18.2).
    #[arg(long, value_enum, default_value_t = FormatArg::Safetensors)]
    pub format: FormatArg,

    /// Output file (safetensors, gguf) or directory (hf, hf-bitnet).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,

    /// f16: the FP16 weights as stored; f32: trits times scales in single precision; bf16 (hf
    /// only): the bfloat16 rounding of the f32 values. hf-bitnet always writes F32 scales and
    /// float tensors, with config dtype float16.
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    pub dtype: DtypeArg,

    /// hf: the largest shard (bytes, or with kB, MB, GB, KiB, MiB, GiB); above it the weights
    /// are split into shards listed by model.safetensors.index.json.
    #[arg(long, value_name = "SIZE", default_value = "5GB", value_parser = parse_size)]
    pub max_shard_size: u64,

    /// hf, hf-bitnet: config.json's max_position_embeddings; gguf: `<arch>.context_length` (the
    /// bundle does not record it).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_position_embeddings: u64,

    /// gguf: the type of the ternary tensors: tq1_0 (1.69 bits per weight) or tq2_0 (2.06),
    /// llama.cpp's, for rows of a multiple of 256 columns; or i2_s (2 bits, bitnet.cpp's), for
    /// rows of a multiple of 128 columns and one scale per tensor.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub gguf_type: Option<GgufTypeArg>,

    /// gguf: the type of the tensors that are not ternary (embeddings, norms): f32 (the stored
    /// values) or f16.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub float_type: Option<FloatTypeArg>,

    /// gguf: write no tokenizer (tokenizer.ggml.model "none" with the vocabulary size).
    /// Without it the carried tokenizer is converted: a BPE tokenizer.json to gpt2, a
    /// SentencePiece tokenizer.model to llama; a bundle without one is refused.
    #[arg(long)]
    pub no_tokenizer: bool,

    /// gguf: keep a quantized tensor the type cannot hold exactly (its columns, or scales that
    /// differ within a block or an I2_S tensor) as F16 of its FP16 values, with a warning
    /// naming it, instead of refusing the export. Never re-quantized either way.
    #[arg(long)]
    pub allow_float_fallback: bool,

    /// Replace an existing output (a file, or a model directory: never a bundle).
    #[arg(long)]
    pub force: bool,
}

/// `--type` of `bundle export --format gguf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GgufTypeArg {
    /// ggml's TQ1_0: five trits per byte, 54 bytes per 256 weights.
    #[value(name = "tq1_0")]
    Tq1_0,
    /// ggml's TQ2_0: 2 bits per trit, 66 bytes per 256 weights.
    #[value(name = "tq2_0")]
    Tq2_0,
    /// bitnet.cpp's I2_S: 2 bits per trit, one f32 scale per tensor.
    #[value(name = "i2_s")]
    I2S,
}

/// `--float-type` of `bundle export --format gguf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FloatTypeArg {
    /// Single precision.
    F32,
    /// Half precision.
    F16,
}

/// `bundle export --help` examples.
const EXPORT_HELP: &str = "\
Examples:
  bundle export my-bundle --out model-fp16.safetensors
  bundle export lm-bundle --format hf --out lm-hf            # AutoModelForCausalLM.from_pretrained(\"lm-hf\")
  bundle export lm-bundle --format hf --dtype bf16 --max-shard-size 2GB --out lm-hf
  bundle export lm-bundle --format hf-bitnet --out lm-packed
  bundle export lm-bundle --format gguf --type tq2_0 --out model.gguf
  bundle export lm-bundle --format gguf --type i2_s --allow-float-fallback --out model.gguf
  bundle create --from model.gguf --out back        # the same trits, scales and FP16 bytes

hf-bitnet takes per-tensor scales only (a bundle of channel or group scales whose every tensor's
scales are equal is written with that one scale) and quantized projections only; loaded in
float16, each layer's unpacked weights times weight_scale are exactly the bundle's FP16 weights,
and `bundle create --from lm-packed` gives back the same trits, scales and FP16 bytes.

gguf writes every quantized tensor from its trits (never re-quantized): TQ1_0/TQ2_0 blocks with
d = f16(scale), or I2_S with the f32 scale; the bundle's exact scales go in bundle.scale.* keys
so that `bundle create --from model.gguf` gives the bundle's trits, scales and FP16 bytes back.
llama.cpp runs tq1_0 and tq2_0 (a bitnet model with SiLU where BitNet uses relu², unless the
runtime maps bitnet.hidden_activation); i2_s needs bitnet.cpp.";

/// `--format` of `bundle export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// One safetensors state dict.
    Safetensors,
    /// A model directory for transformers.
    Hf,
    /// A packed BitNet (autobitlinear) model directory.
    HfBitnet,
    /// One GGUF file for llama.cpp, ternary tensors as TQ1_0 or TQ2_0 (--type).
    Gguf,
}

/// A size in bytes: digits with an optional unit (kB, MB, GB: powers of 1000; KiB, MiB, GiB:
/// of 1024), as transformers' `max_shard_size`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a size such as 5GB, found {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (kB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("expected a size of at least 1 byte and at most 2^64, found {s:?}"))
}

/// `bundle run --help` examples.
const RUN_HELP: &str = "\
Examples:
  bundle run my-bundle --input x.safetensors --out logits.safetensors
  bundle run my-bundle --input x.safetensors --out t.safetensors --path ternary

In Python: safetensors.numpy.load_file(\"logits.safetensors\")[\"logits\"] is an array
[N, classes]; torch.allclose it with your model's output on the same inputs.";

/// `bundle run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The inputs: a safetensors file with tensor `inputs` F32/F16/BF16 [N, input_dim], or
    /// for a language model `input_ids` I64/I32 [N, T].
    #[arg(long, value_name = "X.safetensors")]
    pub input: PathBuf,

    /// Output file: `logits` F32 [N, classes] and `predictions` I64 [N] (a language model:
    /// [N, T, vocab] and [N, T]).
    #[arg(long, value_name = "Y.safetensors")]
    pub out: PathBuf,

    /// Which weights to run: fp16 (fp16.safetensors, what training starts from) or ternary
    /// (trits and scales from ternary.safetensors, what inference runs).
    #[arg(long, value_enum, default_value_t = PathArg::Fp16)]
    pub path: PathArg,

    /// Write only the K largest logits of each row (or position) and their indices, largest
    /// first: `top_logits` F32 [N, K] and `top_ids` I64 [N, K] (a language model: [N, T, K]),
    /// beside `predictions`: for comparing decisions without the whole vocabulary on disk.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// `--path`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PathArg {
    /// The FP16 weights.
    Fp16,
    /// The trits and their scales.
    Ternary,
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// Half precision.
    F16,
    /// bfloat16 (export --format hf only).
    Bf16,
    /// Single precision.
    F32,
}

/// `bundle requantize`.
#[derive(Debug, Args)]
pub struct RequantizeArgs {
    /// The original bundle (its architecture, settings and validation set are reused).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The fine-tuned weights (safetensors, F32, F16 or BF16), with the bundle's tensor names.
    #[arg(long, value_name = "WEIGHTS.safetensors")]
    pub from: PathBuf,

    /// Destination of the new bundle.
    #[arg(long, value_name = "DIR2")]
    pub out: PathBuf,

    /// Quantize with the original bundle's stored scales instead of fresh absmean scales.
    #[arg(long)]
    pub keep_scales: bool,

    /// Replace an existing bundle at --out.
    #[arg(long)]
    pub force: bool,
}

const ASSESS_HELP: &str = "\
For each difficulty level of the labelled data (the bundle's validation set with its
`difficulty` column, or --data FILE in the same layout: inputs F32 [N, input_dim], labels I64 [N],
difficulty U8 [N]):
  examples            how many examples have that level
  FP16 / ternary acc  share of the labels the FP16 model / the ternary path predicts
  mean CE             mean cross-entropy of the FP16 model
  gradient variance   as the receiving stage computes it: per batch (default: the whole level;
                      --batch-size N splits it, in data order), the gradient of the mean
                      cross-entropy with respect to every parameter tensor of the FP16 model (f64);
                      per tensor the unbiased variance of its entries (torch's Tensor.var());
                      summed over tensors; averaged over the level's batches. The variance is
                      over a tensor's entries, so a level of one example has one; a tensor of
                      one entry has none and is left out (counted in skipped_tensors)
The chosen level is the one whose FP16 accuracy is closest to --target-accuracy (ties: the lower
level); the assessment succeeds when it lies in --zone. Otherwise the report says where the
model stands: too easy at every level, too hard at every level, or a gap between two levels.

Metrics (--json `metrics`, schema spec/assess.schema.json): phase5/edge_of_chaos_assessment_completed,
phase5/edge_of_chaos_optimal_level, phase5/edge_of_chaos_target_accuracy,
phase5/gradient_variance_optimal, phase5/model_format, phase5/model_size_mb.

Exit codes: 0 the chosen level is in the zone; 1 it is not, or the bundle is damaged; 2 usage
error, or no labelled data with a difficulty column.

Examples:
  bundle assess demo-bundle
  bundle assess my-bundle --data curriculum.safetensors --batch-size 32 --json";

/// `bundle assess`.
#[derive(Debug, Args)]
pub struct AssessArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Accuracy the chosen level should be closest to.
    #[arg(long, value_name = "FRACTION", default_value_t = ternary_bundle::assess::DEFAULT_TARGET)]
    pub target_accuracy: f64,

    /// Accuracies that count as the edge of chaos: LO,HI (bounds included).
    #[arg(long, value_name = "LO,HI", value_parser = parse_zone, default_value = "0.70,0.80")]
    pub zone: (f64, f64),

    /// Examples per gradient batch (default: the whole level).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Labelled data with a difficulty column, instead of the bundle's validation set.
    #[arg(long, value_name = "DATA.safetensors")]
    pub data: Option<PathBuf>,

    /// Print one JSON object (schema: spec/assess.schema.json) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--zone LO,HI`.
fn parse_zone(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("expected two fractions LO,HI such as 0.70,0.80, found {s:?}");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    Ok((lo, hi))
}

const REPORT_HELP: &str = "\
The page runs `bundle verify` (all checks, default thresholds) and `bundle assess` (defaults)
and shows:
  summary      format, architecture, parameters, sizes, bits per weight, compression
  checks       every verify check with its status and detail
  metrics      retention of the original model's decisions; accuracy of the original, FP16 and
               ternary models on the validation set (n/a, with the reason, when unknown)
  tensors      per quantized tensor: shares of -1 / 0 / +1 trits, a histogram of its scales
               (log-spaced bins shared by all tensors); per parameter tensor the norm of its
               gradient (from verify's gradient_flow check, log scale)
  assessment   FP16 accuracy and gradient variance by difficulty level, the target line, the
               zone and the chosen level (or why there is no assessment)
A bundle that does not open still gets a page, with verify's findings.

The file is one HTML document with inline CSS and SVG: no script, font, image or network
fetch, and a Content-Security-Policy that forbids them. Every name from the bundle is escaped.
It is written atomically: an existing --out is replaced only with --force.

Exit codes: 0 the page was written and every verify check passed; 1 the page was written but
the bundle failed a check (the page says which), or it could not be written.

Examples:
  bundle report demo-bundle --out report.html
  bundle report my-bundle --out report.html --reference original.safetensors --force";

/// `bundle report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The HTML file to write.
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,

    /// The pre-quantization checkpoint, for verify's reference and retention checks.
    #[arg(long, value_name = "ORIGINAL.safetensors")]
    pub reference: Option<PathBuf>,

    /// Least retention of verify's retention gate (see `bundle verify --help`).
    #[arg(long, value_name = "FRACTION", default_value_t = ternary_bundle::verify::DEFAULT_MIN_RETENTION)]
    pub min_retention: f64,

    /// Largest mean KL(original || FP16) of verify's fidelity gate, in nats; 0 disables it
    /// (see `bundle verify --help`).
    #[arg(long, value_name = "NATS", default_value_t = ternary_bundle::verify::DEFAULT_MAX_KL)]
    pub max_kl: f64,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}
