#!/usr/bin/env python3
"""The browser test of `bundle report`: headless Chromium loads report pages and this script
checks what it rendered.

  check_report.py hostile-checkpoint DIR
      writes DIR/model.safetensors, a three-layer MLP whose tensor names are markup that would
      run a script if a page rendered it raw (each payload sets document.body.dataset.pwned),
      DIR/validation.safetensors (labels and a difficulty column) and DIR/names.json (the
      tensor names). Every weight row is a permutation of the same trits, times 0.5 (so every
      row has the same absmean), and the biases are zero: quantization gives back the trits
      with one scale per layer, which moves no decision of a ReLU network without biases, so
      every verify check passes.

  check_report.py browse PAGE... --shots DIR [--names PAGE NAMES.json] [--chosen PAGE LEVEL]
      for every PAGE: Chromium (--dump-dom, console logged to stderr) must log no console
      message at all (a blocked script or resource is logged as a CSP violation); the DOM after
      load must hold every section and chart (#verdict, #summary, #verify-checks, #metrics,
      #chart-trits, #chart-scales, #chart-gradients, #chart-assessment, #chosen-level) and no
      script, img, iframe, object, embed or link element, no on* attribute and no
      data-pwned attribute (set by an injected script that ran); a 1280-pixel-wide
      screenshot is taken into DIR and must be a PNG of that size with more than a few colours.
      --names: each name is in the page's text, as text.
      --chosen: the chart marks that level as chosen.
      With --names, two controls show that the checks catch an injection: the page with one
      name spliced in raw must fail them, and so must that page without its
      Content-Security-Policy, where the payload runs.

Exits non-zero if any check failed; prints one line per check and a closing count.
"""
import argparse
import html
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

IDS = [
    "verdict",
    "summary",
    "verify-checks",
    "metrics",
    "chart-trits",
    "chart-scales",
    "chart-gradients",
    "chart-assessment",
    "chosen-level",
]
FORBIDDEN = {"script", "img", "iframe", "object", "embed", "link"}
WIDTH, HEIGHT = 1280, 3100

PAYLOADS = [
    "<script>document.body.dataset.pwned=1</script>",
    '"><img src=x onerror="document.body.dataset.pwned=2">',
    "a&amp;b 'q' </text></svg><svg onload=\"document.body.dataset.pwned=3\">",
]


def hostile_checkpoint(out: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(11)
    dims = [8, 6, 5, 4]
    tensors, names = {}, []
    for i, payload in enumerate(PAYLOADS):
        row = np.resize([1, -1, 0], dims[i])
        trits = np.stack([rng.permutation(row) for _ in range(dims[i + 1])])
        w = f"{i}{payload}.weight"
        b = f"{i}{payload}.bias"
        tensors[w] = (trits * 0.5).astype(np.float32)
        tensors[b] = np.zeros(dims[i + 1], dtype=np.float32)
        names += [w, b]
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    n = 200
    save_file(
        {
            "inputs": rng.standard_normal((n, dims[0])).astype(np.float32),
            "labels": rng.integers(0, dims[-1], size=n).astype(np.int64),
            "difficulty": (np.arange(n) % 10 + 1).astype(np.uint8),
        },
        str(out / "validation.safetensors"),
    )
    (out / "names.json").write_text(json.dumps(names))


class Dom(HTMLParser):
    """Element ids, forbidden elements and attributes, and the text of a dumped DOM."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.problems, self.text, self.by_id = set(), [], [], {}
        self.open_ids = []

    def handle_starttag(self, tag, attrs):
        if tag in FORBIDDEN:
            self.problems.append(f"a <{tag}> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"an {name} attribute on <{tag}>")
            if name == "data-pwned":
                self.problems.append(f"data-pwned={value}: an injected script ran")
            if name == "id":
                self.ids.add(value)
                self.open_ids.append((tag, value, len(self.text)))

    def handle_endtag(self, tag):
        if self.open_ids and self.open_ids[-1][0] == tag:
            _, ident, start = self.open_ids.pop()
            self.by_id[ident] = "".join(self.text[start:])

    def handle_data(self, data):
        self.text.append(data)


def chromium() -> str:
    for name in ["chromium", "chromium-browser", "google-chrome"]:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_report.py: no Chromium found (scripts/test.sh installs Debian's chromium package)")


def run_chromium(page: Path, profile: Path, extra: list) -> subprocess.CompletedProcess:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def png_problems(path: Path) -> list:
    """The PNG must exist, be WIDTH x HEIGHT and not be one flat colour."""
    if not path.exists():
        return ["no screenshot was written"]
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return ["the screenshot is not a PNG"]
    width, height = struct.unpack(">II", data[16:24])
    if (width, height) != (WIDTH, HEIGHT):
        return [f"the screenshot is {width}x{height}, expected {WIDTH}x{HEIGHT}"]
    idat, pos = b"", 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    if len(set(pixels[: 4 * WIDTH * 400])) < 8:
        return ["the screenshot is (nearly) one flat colour"]
    return []


def check_page(page: Path, shots: Path, names=None, chosen=None) -> list:
    """Everything wrong with how Chromium renders `page`."""
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        dumped = run_chromium(page, Path(profile), ["--dump-dom"])
    if dumped.returncode != 0:
        return [f"chromium exited {dumped.returncode}: {dumped.stderr[-2000:]}"]
    console = [l for l in dumped.stderr.splitlines() if ":CONSOLE" in l]
    problems += [f"console: {l}" for l in console]
    dom = Dom()
    dom.feed(dumped.stdout)
    problems += dom.problems
    problems += [f"no element #{i}" for i in IDS if i not in dom.ids]
    text = "".join(dom.text)
    for name in names or []:
        if name not in text:
            problems.append(f"the name {name!r} is not in the page's text")
    if chosen is not None:
        mark = dom.by_id.get("chosen-level", "")
        if mark != f"chosen: level {chosen}":
            problems.append(f"#chosen-level says {mark!r}, expected level {chosen}")
    shot = shots / (page.stem + ".png")
    with tempfile.TemporaryDirectory() as profile:
        run_chromium(page, Path(profile), [f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}"])
    problems += png_problems(shot)
    return problems


def browse(args) -> int:
    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    names = {Path(p).resolve(): json.loads(Path(f).read_text()) for p, f in args.names or []}
    chosen = {Path(p).resolve(): int(level) for p, level in args.chosen or []}
    failed = checks = 0

    def report(label, problems, expect_problems=False):
        nonlocal failed, checks
        checks += 1
        ok = bool(problems) == expect_problems
        failed += not ok
        what = "caught: " + problems[0][:160] if expect_problems and problems else "; ".join(problems)
        print(f"{'ok  ' if ok else 'FAIL'} {label}" + (f": {what}" if what else ""))

    for page in map(Path, args.pages):
        key = page.resolve()
        report(f"{page.name} renders", check_page(page, shots, names.get(key), chosen.get(key)))
        if key not in names:
            continue
        # Controls: splice the first name in raw; with the page's CSP the payload is blocked but
        # the element is there (and the console reports the violation); without it, it runs.
        source = page.read_text()
        raw_name = names[key][0]
        escaped = html.escape(raw_name, quote=False)
        if escaped not in source:
            report(f"{page.name}: control", [f"{escaped!r} not found in the page source"])
            continue
        with tempfile.TemporaryDirectory() as tmp:
            injected = Path(tmp) / "injected.html"
            injected.write_text(source.replace(escaped, raw_name, 1))
            report(f"{page.name}: control, one name spliced in raw", check_page(injected, Path(tmp)), True)
            no_csp = Path(tmp) / "injected-no-csp.html"
            start = source.index('<meta http-equiv="Content-Security-Policy"')
            end = source.index(">", start) + 1
            no_csp.write_text(injected.read_text().replace(source[start:end], "", 1))
            ran = [p for p in check_page(no_csp, Path(tmp)) if "data-pwned" in p]
            report(f"{page.name}: control, raw and without CSP, the payload runs", ran, True)
    print(f"{checks - failed} of {checks} checks passed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hostile-checkpoint")
    h.add_argument("dir")
    b = sub.add_parser("browse")
    b.add_argument("pages", nargs="+")
    b.add_argument("--shots", required=True)
    b.add_argument("--names", nargs=2, action="append", metavar=("PAGE", "NAMES_JSON"))
    b.add_argument("--chosen", nargs=2, action="append", metavar=("PAGE", "LEVEL"))
    args = parser.parse_args()
    if args.command == "hostile-checkpoint":
        hostile_checkpoint(Path(args.dir))
        return 0
    return browse(args)


if __name__ == "__main__":
    sys.exit(main())
