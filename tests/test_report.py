"""``benchharness report``: the HTML page of a tiny run, its numbers, figures and failures."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchharness import leaderboard as lb
from benchharness.cli import main
from benchharness.evaluators.voc_ap import ap_voc07_11pt
from benchharness.report import build_report
from benchharness.report.curves import pr_curves

SUITE = """
name = "tiny"
backbone = "alexnet-small"
seeds = 1
[methods]
use = ["random", "supervised", "checkpoint:{bad}"]
[methods.supervised]
epochs = 1
[tasks]
use = ["voc07-cls", "voc07-det"]
[tasks.voc07-cls]
protocols = ["fc8"]
epochs = 1
batch_size = 16
test_crops = 1
[tasks.voc07-det]
protocols = ["all"]
epochs = 1
scale = 96
max_size = 160
rois_per_image = 16
"""

SECTIONS = ("leaderboard", "per-class", "pr-curves", "layerwise", "pretext", "cost", "provenance")


@pytest.fixture(scope="module")
def tiny_run(tiny_world, tmp_path_factory) -> Path:
    """A finished run: two methods on cls fc8 and det, and a third whose checkpoint is broken
    (its two jobs fail)."""
    root = tmp_path_factory.mktemp("report")
    bad = root / "bad.pt"
    bad.write_text("not a checkpoint")
    suite = root / "tiny.toml"
    suite.write_text(SUITE.format(bad=bad))
    results = root / "results"
    out = CliRunner().invoke(main, ["run", "--suite", str(suite), "--data-root", str(tiny_world),
                                    "--results", str(results), "--device", "cpu"])
    assert out.exit_code == 1 and "4 run, 0 already done, 2 failed" in out.output, out.output
    return results


@pytest.fixture(scope="module")
def page(tiny_run) -> str:
    return build_report(tiny_run)


class _Page(HTMLParser):
    """Section ids, image sources, and every table as rows of (attrs, text) cells."""

    def __init__(self):
        super().__init__()
        self.ids, self.images, self.tables = [], [], {}
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.ids.append(attrs.get("id"))
        elif tag == "img":
            self.images.append(attrs.get("src"))
        elif tag == "table":
            key = attrs.get("id") or attrs.get("class") or str(len(self.tables))
            key = f"{key}:{attrs['data-column']}" if "data-column" in attrs else key
            self._table = self.tables.setdefault(key, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [attrs, ""]
            self._row.append(self._cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def stored(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").rglob("*.json"))]


def test_the_report_holds_every_section_and_each_figure_decodes(page):
    parsed = parse(page)
    assert all(section in parsed.ids for section in SECTIONS)
    # heat maps of cls fc8 and det, curves of both, pretext against transfer, cost
    assert len(parsed.images) >= 6
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            image.load()
            assert image.format == "PNG" and image.width > 100 and image.height > 100
    # nothing is fetched: no external URL, stylesheet or script source anywhere
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<link" not in page and "<script src" not in page
    assert "No layer-wise results exist yet" in page


def test_leaderboard_cells_are_the_leaderboards_and_equal_the_results(tiny_run, page):
    board = parse(page).tables["board"]
    header = [text for _, text in board[0]]
    markdown = lb.render(lb.load_results(tiny_run), fmt="markdown")
    md_rows = {cells[1]: cells for cells in
               ([c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()
                if line.startswith("|") and "---" not in line)}
    results = stored(tiny_run)
    checked = 0
    for row in board[1:]:
        texts = [text.strip() for _, text in row]
        method = texts[1]
        for (attrs, text), column in zip(row[3:], header[3:]):
            assert text.strip() == md_rows[method][header.index(column)].strip("*")
            if "data-value" not in attrs:
                continue
            values = [r["value"] for r in results if r["status"] == "ok" and r["method"] == method
                      and lb._column_of(r["task"], r["protocol"]) == column]
            assert float(attrs["data-value"]) == pytest.approx(float(np.mean(values)), abs=1e-12)
            assert text.strip() == f"{np.mean(values):.1f}"
            checked += 1
    assert checked == 4  # two methods x (cls fc8, det)


def test_per_class_numbers_equal_the_results(tiny_run, page):
    tables = parse(page).tables
    results = [r for r in stored(tiny_run) if r["status"] == "ok"]
    for column in ("cls fc8", "det"):
        table = tables[f"per-class:{column}"]
        classes = [text for _, text in table[0][1:]]
        for row in table[1:]:
            method = row[0][1]
            (result,) = [r for r in results if r["method"] == method
                         and lb._column_of(r["task"], r["protocol"]) == column]
            assert classes == list(result["per_class"])
            for (attrs, text), name in zip(row[1:], classes):
                assert float(attrs["data-value"]) == result["per_class"][name]
                assert text == f"{result['per_class'][name]:.1f}"


def test_a_failed_job_appears_with_its_error(tiny_run, page):
    failed = [r for r in stored(tiny_run) if r["status"] != "ok"]
    assert len(failed) == 2
    parsed = parse(page)
    errors = [row[-1][1] for row in parsed.tables["failures"][1:]]
    assert sorted(errors) == sorted(r["error"] for r in failed)
    row = next(r for r in parsed.tables["board"][1:] if r[1][1].startswith("checkpoint:"))
    assert [text for _, text in row[3:4]] == ["failed"]
    assert failed[0]["error"][:40] in row[3][0]["title"]


def test_pr_curves_are_the_curves_the_stored_ap_came_from(tiny_run):
    for path in sorted((tiny_run / "runs").rglob("*.json")):
        result = json.loads(path.read_text())
        if result["status"] != "ok":
            continue
        kind, curves = pr_curves(result, path)
        assert kind == {"voc07-cls": "cls", "voc07-det": "det"}[result["task"]]
        for name, curve in curves.items():
            stored_ap = result["per_class"][name]
            if curve.n_pos == 0:
                assert stored_ap is None or math.isnan(stored_ap)
                continue
            assert 100 * ap_voc07_11pt(curve.recall, curve.precision) == pytest.approx(stored_ap, abs=1e-9)


def test_layerwise_section_appears_with_layer_results(tiny_run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(tiny_run / "runs", results / "runs")
    source = next(p for p in (results / "runs").rglob("*.json") if "random" in str(p) and "cls" in p.name)
    for k, layer in enumerate(("conv1", "conv3", "conv5")):
        result = json.loads(source.read_text())
        result.update(protocol=layer, value=10.0 + k, per_class={})
        (source.parent / f"voc07-cls__{layer}__seed0__x.json").write_text(json.dumps(result))
    page = build_report(results, pr_methods=["random"])
    assert "No layer-wise results exist yet" not in page
    table = parse(page).tables["layerwise"]
    assert [text for _, text in table[0]] == ["method", "conv1", "conv3", "conv5"]
    assert [text for _, text in table[1]] == ["random", "10.0", "11.0", "12.0"]


def test_the_cli_writes_the_report_with_published_rows(tiny_run, tmp_path):
    out = tmp_path / "r.html"
    run = CliRunner().invoke(main, ["report", "--results", str(tiny_run), "--out", str(out), "--reference"])
    assert run.exit_code == 0, run.output
    assert str(out.resolve()) in run.output
    page = out.read_text()
    assert 'tbody class="published"' in page and "[published:" in page
    empty = CliRunner().invoke(main, ["report", "--results", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "no results" in empty.output


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)


def test_report_in_headless_chromium(tiny_run, tmp_path):
    """A real browser loads the page offline: no console error, every image decoded."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium; .ci/run does it)")
    report = tmp_path / "report.html"
    report.write_text(build_report(tiny_run, reference=True))
    shot = tmp_path / "report.png"
    base = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
            "--v=0", "--window-size=1400,3000", f"--user-data-dir={tmp_path / 'profile'}"]
    url = report.resolve().as_uri()
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    loaded = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert loaded, "the page's load script did not run"
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) == len(parse(report.read_text()).images)
    snap = subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert snap.returncode == 0, snap.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1400, 3000)


def test_cost_counts_gpu_hours_on_cuda_and_pretraining_once():
    from benchharness.report.sections import cost

    def job(method, device, transfer, key="k"):
        return dict(label=method, device=device, representation_key=key,
                    representation={"pretrain_seconds": 3600.0, "device": device},
                    timing={"transfer": transfer}, info={"peak_memory_mb": transfer})
    rows = {r["method"]: r for r in cost([job("a", "cuda:0", 1800.0), job("a", "cuda:0", 1800.0),
                                          job("b", "cpu", 60.0)])}
    assert rows["a"]["pretrain_s"] == 3600.0 and rows["a"]["transfer_s"] == 3600.0
    assert rows["a"]["gpu_hours"] == pytest.approx(2.0) and rows["a"]["devices"] == "cuda:0"
    assert rows["a"]["peak_memory_mb"] == 1800.0
    assert rows["b"]["gpu_hours"] is None and not rows["b"]["on_gpu"]


def test_pretext_relative_to_chance_turns_lower_is_better_around():
    from benchharness.report.sections import relative_to_chance

    assert relative_to_chance({"metric": "acc", "value": 0.5, "chance": 0.125}) == 4.0
    assert relative_to_chance({"metric": "l2 (lower is better)", "value": 0.1, "chance": 0.2}) == 2.0
    assert relative_to_chance({"metric": "acc", "value": 0.5}) is None


def test_names_are_escaped(tiny_run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(tiny_run / "runs", results / "runs")
    for path in (results / "runs").rglob("*.json"):
        result = json.loads(path.read_text())
        if result["status"] != "ok":
            result["error"] = "ValueError: <script>alert(1)</script>"
            path.write_text(json.dumps(result))
    page = build_report(results, pr_methods=["none-such"])
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_pretext_table_shows_the_untrained_networks_figure_beside_the_trained_one(tiny_run, page):
    pretext = next(r["pretext"] for r in stored(tiny_run) if r["method"] == "supervised" and r.get("pretext"))
    rows = parse(page).tables["pretext"]
    header = [text for _, text in rows[0]]
    assert header[2:5] == ["at init", "value", "chance"]
    supervised = next(row for row in rows[1:] if row[0][1] == "supervised")
    assert float(supervised[2][0]["title"]) == pretext["value_at_init"]
    assert float(supervised[3][0]["title"]) == pretext["value"]
    random_row = next(row for row in rows[1:] if row[0][1] == "random")
    assert random_row[2][1] == ""  # random records no pretext
