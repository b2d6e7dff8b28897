//! The report's charts, as inline SVG written with [`maud`] (every label escaped): trit
//! distribution, scale distribution and gradient norm per tensor, and the assessment curve.

use maud::{html, Markup};

use crate::assess::AssessReport;
use crate::report::figures::{scale_histogram, GradientNorm, TensorFigures, SCALE_BINS};

const WIDTH: f64 = 760.0;
const LABEL: f64 = 230.0;
const ROW: f64 = 22.0;

fn f(x: f64) -> String {
    format!("{x:.1}")
}

/// A tensor's label: its name, shortened to fit, the full name in a tooltip.
fn label(name: &str, y: f64) -> Markup {
    let short: String = if name.chars().count() > 32 {
        name.chars().take(31).chain(['…']).collect()
    } else {
        name.to_string()
    };
    html! {
        text x="0" y=(f(y)) class="label" { title { (name) } (short) }
    }
}

/// One stacked bar per quantized tensor: the shares of -1, 0 and +1 trits.
pub fn trit_distribution(tensors: &[TensorFigures]) -> Markup {
    let bar = WIDTH - LABEL - 150.0;
    let height = ROW * tensors.len() as f64 + 30.0;
    html! {
        svg id="chart-trits" class="chart" xmlns="http://www.w3.org/2000/svg" width=(f(WIDTH)) height=(f(height)) viewBox={"0 0 " (f(WIDTH)) " " (f(height))} role="img" aria-label="Trit distribution per tensor" {
            @for (i, t) in tensors.iter().enumerate() {
                @let y = ROW * i as f64;
                @let total = t.trits.iter().sum::<u64>().max(1) as f64;
                @let shares = t.trits.map(|c| c as f64 / total);
                (label(&t.name, y + 15.0))
                rect x=(f(LABEL)) y=(f(y + 4.0)) width=(f(bar * shares[0])) height="14" class="neg" {}
                rect x=(f(LABEL + bar * shares[0])) y=(f(y + 4.0)) width=(f(bar * shares[1])) height="14" class="zero" {}
                rect x=(f(LABEL + bar * (shares[0] + shares[1]))) y=(f(y + 4.0)) width=(f(bar * shares[2])) height="14" class="pos" {}
                text x=(f(LABEL + bar + 8.0)) y=(f(y + 15.0)) class="value" {
                    (format!("{:.0}% / {:.0}% / {:.0}%", shares[0] * 100.0, shares[1] * 100.0, shares[2] * 100.0))
                }
            }
            @let y = ROW * tensors.len() as f64 + 20.0;
            rect x=(f(LABEL)) y=(f(y - 10.0)) width="12" height="12" class="neg" {}
            text x=(f(LABEL + 16.0)) y=(f(y)) class="value" { "−1" }
            rect x=(f(LABEL + 60.0)) y=(f(y - 10.0)) width="12" height="12" class="zero" {}
            text x=(f(LABEL + 76.0)) y=(f(y)) class="value" { "0" }
            rect x=(f(LABEL + 120.0)) y=(f(y - 10.0)) width="12" height="12" class="pos" {}
            text x=(f(LABEL + 136.0)) y=(f(y)) class="value" { "+1" }
        }
    }
}

/// Per quantized tensor, a histogram of its scales over log-spaced bins shared by all tensors.
pub fn scale_distribution(tensors: &[TensorFigures]) -> Markup {
    let positive = || {
        tensors
            .iter()
            .flat_map(|t| t.scales.iter())
            .filter(|s| s.is_finite() && **s > 0.0)
            .map(|&s| s as f64)
    };
    let lo = positive().fold(f64::INFINITY, f64::min);
    let hi = positive().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 1.0) };
    let plot = WIDTH - LABEL - 170.0;
    let cell = plot / SCALE_BINS as f64;
    let row = 28.0;
    let height = row * tensors.len() as f64 + 34.0;
    html! {
        svg id="chart-scales" class="chart" xmlns="http://www.w3.org/2000/svg" width=(f(WIDTH)) height=(f(height)) viewBox={"0 0 " (f(WIDTH)) " " (f(height))} role="img" aria-label="Scale distribution per tensor" {
            @for (i, t) in tensors.iter().enumerate() {
                @let y = row * i as f64;
                @let bins = scale_histogram(&t.scales, lo, hi);
                @let most = bins.iter().copied().max().unwrap_or(1).max(1) as f64;
                (label(&t.name, y + 18.0))
                @for (b, &count) in bins.iter().enumerate() {
                    @let h = 22.0 * count as f64 / most;
                    rect x=(f(LABEL + cell * b as f64)) y=(f(y + 24.0 - h)) width=(f(cell - 1.0)) height=(f(h)) class="bar" { title { (count) " scales" } }
                }
                @let (min, max) = t.scales.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &s| (a.min(s), b.max(s)));
                text x=(f(LABEL + plot + 8.0)) y=(f(y + 18.0)) class="value" {
                    @if min == max { (t.scales.len()) " × " (format!("{min:.3e}")) } @else { (format!("{min:.2e} – {max:.2e}")) }
                }
            }
            @let y = row * tensors.len() as f64 + 20.0;
            text x=(f(LABEL)) y=(f(y)) class="value" { (format!("{lo:.3e}")) }
            text x=(f(LABEL + plot)) y=(f(y)) class="value end" { (format!("{hi:.3e}")) " (log scale)" }
        }
    }
}

/// One bar per parameter tensor: the L2 norm of its gradient (log scale).
pub fn gradient_norms(norms: &[GradientNorm]) -> Markup {
    let positive: Vec<f64> = norms.iter().map(|g| g.norm).filter(|n| *n > 0.0).collect();
    let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = positive.iter().copied().fold(0.0, f64::max);
    let (llo, lhi) = if lo.is_finite() {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (0.0, 1.0)
    };
    let bar = WIDTH - LABEL - 110.0;
    let height = ROW * norms.len() as f64 + 30.0;
    html! {
        svg id="chart-gradients" class="chart" xmlns="http://www.w3.org/2000/svg" width=(f(WIDTH)) height=(f(height)) viewBox={"0 0 " (f(WIDTH)) " " (f(height))} role="img" aria-label="Gradient norm per tensor" {
            @for (i, g) in norms.iter().enumerate() {
                @let y = ROW * i as f64;
                @let w = if g.norm > 0.0 { bar * ((g.norm.log10() - llo) / (lhi - llo)).clamp(0.02, 1.0) } else { 0.0 };
                (label(&g.name, y + 15.0))
                rect x=(f(LABEL)) y=(f(y + 4.0)) width=(f(w)) height="14" class="bar" {}
                text x=(f(LABEL + w + 6.0)) y=(f(y + 15.0)) class="value" { (format!("{:.2e}", g.norm)) }
            }
            @let y = ROW * norms.len() as f64 + 20.0;
            text x=(f(LABEL)) y=(f(y)) class="value" { (format!("1e{llo}")) }
            text x=(f(LABEL + bar)) y=(f(y)) class="value end" { (format!("1e{lhi}")) " (log scale)" }
        }
    }
}

/// Accuracy by difficulty level with the target line, the zone and the chosen level; below
/// it, the gradient variance by level.
pub fn assessment(r: &AssessReport) -> Markup {
    let (left, top, plot_w, plot_h) = (60.0, 20.0, WIDTH - 90.0, 180.0);
    let n = r.levels.len().max(1);
    let x = |i: usize| left + plot_w * (i as f64 + 0.5) / n as f64;
    let y_acc = |a: f64| top + plot_h * (1.0 - a.clamp(0.0, 1.0));
    let vmax = r
        .levels
        .iter()
        .map(|l| l.gradient_variance)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let top2 = top + plot_h + 50.0;
    let y_var = |v: f64| top2 + plot_h * (1.0 - (v / vmax).clamp(0.0, 1.0));
    let points = |g: &dyn Fn(usize) -> f64| {
        (0..r.levels.len())
            .map(|i| format!("{},{}", f(x(i)), f(g(i))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let acc_points = points(&|i| y_acc(r.levels[i].accuracy_fp16));
    let var_points = points(&|i| y_var(r.levels[i].gradient_variance));
    let chosen = r.levels.iter().position(|l| l.difficulty == r.chosen);
    let height = top2 + plot_h + 40.0;
    let [lo, hi] = r.zone;
    html! {
        svg id="chart-assessment" class="chart" xmlns="http://www.w3.org/2000/svg" width=(f(WIDTH)) height=(f(height)) viewBox={"0 0 " (f(WIDTH)) " " (f(height))} role="img" aria-label="Accuracy and gradient variance by difficulty level" {
            rect x=(f(left)) y=(f(y_acc(hi))) width=(f(plot_w)) height=(f(y_acc(lo) - y_acc(hi))) class="zone" { title { "zone " (lo) " to " (hi) } }
            line x1=(f(left)) x2=(f(left + plot_w)) y1=(f(y_acc(r.target_accuracy))) y2=(f(y_acc(r.target_accuracy))) class="target" {}
            text x=(f(left + plot_w)) y=(f(y_acc(r.target_accuracy) - 4.0)) class="value end" { "target " (format!("{:.0}%", r.target_accuracy * 100.0)) }
            @for a in [0.0, 0.25, 0.5, 0.75, 1.0] {
                line x1=(f(left - 4.0)) x2=(f(left)) y1=(f(y_acc(a))) y2=(f(y_acc(a))) class="axis" {}
                text x=(f(left - 8.0)) y=(f(y_acc(a) + 4.0)) class="value end" { (format!("{:.0}%", a * 100.0)) }
            }
            line x1=(f(left)) x2=(f(left)) y1=(f(top)) y2=(f(top + plot_h)) class="axis" {}
            line x1=(f(left)) x2=(f(left + plot_w)) y1=(f(top + plot_h)) y2=(f(top + plot_h)) class="axis" {}
            polyline points=(acc_points) class="acc" {}
            text x=(f(left)) y=(f(top - 6.0)) class="value" { "FP16 accuracy by difficulty" }
            line x1=(f(left)) x2=(f(left)) y1=(f(top2)) y2=(f(top2 + plot_h)) class="axis" {}
            line x1=(f(left)) x2=(f(left + plot_w)) y1=(f(top2 + plot_h)) y2=(f(top2 + plot_h)) class="axis" {}
            text x=(f(left)) y=(f(top2 - 6.0)) class="value" { "gradient variance by difficulty (max " (format!("{vmax:.3e}")) ")" }
            polyline points=(var_points) class="var" {}
            @for (i, l) in r.levels.iter().enumerate() {
                circle cx=(f(x(i))) cy=(f(y_acc(l.accuracy_fp16))) r="3.5" class="acc-point" { title { "level " (l.difficulty) ": " (format!("{:.1}%", l.accuracy_fp16 * 100.0)) } }
                circle cx=(f(x(i))) cy=(f(y_var(l.gradient_variance))) r="3.5" class="var-point" { title { "level " (l.difficulty) ": " (format!("{:.3e}", l.gradient_variance)) } }
                text x=(f(x(i))) y=(f(top2 + plot_h + 16.0)) class="value middle" { (l.difficulty) }
            }
            @if let Some(i) = chosen {
                line x1=(f(x(i))) x2=(f(x(i))) y1=(f(top)) y2=(f(top2 + plot_h)) class="chosen" {}
                text id="chosen-level" x=(f(x(i) + 5.0)) y=(f(top + 12.0)) class="value" { "chosen: level " (r.chosen) }
            }
            text x=(f(left + plot_w / 2.0)) y=(f(height - 4.0)) class="value middle" { "difficulty level" }
        }
    }
}

/// Per weight path, a histogram of the per-sample KL(original || path) by decade (spec section
/// 16.3): `paths` are (name, counts), `edges` the bins' upper edges in nats (a last bin above).
pub fn kl_histogram(edges: &[f64], paths: &[(&str, Vec<u64>)]) -> Markup {
    let bins = edges.len() + 1;
    let plot = WIDTH - LABEL - 20.0;
    let cell = plot / bins as f64;
    let row = 60.0;
    let height = row * paths.len() as f64 + 40.0;
    let bin_label = |b: usize| match b {
        0 => format!("<{:.0e}", edges[0]),
        b if b == edges.len() => format!("≥{:.0e}", edges[b - 1]),
        b => format!("{:.0e}", edges[b - 1]),
    };
    html! {
        svg id="chart-kl" class="chart" xmlns="http://www.w3.org/2000/svg" width=(f(WIDTH)) height=(f(height)) viewBox={"0 0 " (f(WIDTH)) " " (f(height))} role="img" aria-label="KL divergence from the original model per sample, by path" {
            @for (i, (name, counts)) in paths.iter().enumerate() {
                @let y = row * i as f64;
                @let most = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
                (label(&format!("{name} path"), y + 40.0))
                @for (b, &count) in counts.iter().enumerate() {
                    @let h = 50.0 * count as f64 / most;
                    rect x=(f(LABEL + cell * b as f64)) y=(f(y + 54.0 - h)) width=(f(cell - 2.0)) height=(f(h)) class="bar" { title { (count) " samples, KL " (bin_label(b)) " nats" } }
                }
            }
            @let y = row * paths.len() as f64 + 16.0;
            @for b in 0..bins {
                text x=(f(LABEL + cell * (b as f64 + 0.5))) y=(f(y)) class="value middle" { (bin_label(b)) }
            }
            text x=(f(LABEL)) y=(f(y + 18.0)) class="value" { "KL(original || path) per sample, nats (bins by decade)" }
        }
    }
}
