#!/usr/bin/env python3
"""Where `bundle verify`'s time goes: one stacked bar per verify report (`bundle verify --json`
output, such as the one benches/scale.sh leaves in WORK_DIR/verify.out), a segment per check.

    python3 benches/verify_time_chart.py OUT.png LABEL=REPORT.json [LABEL=REPORT.json ...]

Writes OUT.svg beside OUT.png and renders the PNG with headless Chromium (Debian's `chromium`
package, which scripts/test.sh installs); without Chromium only the SVG is written.
"""
import html
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COLOURS = {
    "checksums": "#8a93a3",
    "dequantization": "#c9ced8",
    "agreement": "#2f6fb5",
    "gradient_check": "#d1495b",
    "gradient_flow": "#c56a1a",
    "other": "#5b6475",
}


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    bars = []
    for arg in sys.argv[2:]:
        label, _, path = arg.partition("=")
        report = json.loads(Path(path).read_text())
        seconds = {name: 0.0 for name in COLOURS}
        for c in report["checks"]:
            key = c["name"] if c["name"] in COLOURS else "other"
            seconds[key] += c.get("seconds", 0.0)
        bars.append((label, seconds))
    longest = max(sum(s.values()) for _, s in bars)
    width, left, bar_h, gap = 900, 150, 34, 22
    plot = width - left - 90
    height = 60 + len(bars) * (bar_h + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="system-ui, sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="24" font-size="15" font-weight="600">Where bundle verify\'s time goes '
        "(seconds, per check)</text>",
    ]
    y = 50
    for label, seconds in bars:
        x = left
        parts.append(f'<text x="10" y="{y + bar_h / 2 + 5}">{html.escape(label)}</text>')
        for name, s in seconds.items():
            w = plot * s / longest
            if w <= 0:
                continue
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLOURS[name]}">'
                f"<title>{name} {s:.1f} s</title></rect>"
            )
            if w > 34:
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + bar_h / 2 + 5}" text-anchor="middle" '
                    f'fill="white">{s:.0f}</text>'
                )
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + bar_h / 2 + 5}">{sum(seconds.values()):.0f} s</text>')
        y += bar_h + gap
    x = left
    for name, colour in COLOURS.items():
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{y + 11}">{name}</text>')
        x += 16 + 8 * len(name) + 24
    parts.append("</svg>")
    svg = out.with_suffix(".svg")
    svg.write_text("\n".join(parts) + "\n")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print(f"wrote {svg}; no Chromium, so no PNG")
        return 0
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--screenshot={out.resolve()}",
             f"--window-size={width},{height}", svg.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    print(f"wrote {svg} and {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
