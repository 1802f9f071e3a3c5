"""``leaderboard --view layers``: layer tables from hand-written result files, published rows."""

from __future__ import annotations

import io
import statistics

import pandas as pd
import pytest
from click.testing import CliRunner

from benchharness import leaderboard as lb
from benchharness.cli import main
from benchharness.interfaces import DataError
from benchharness.leaderboard_layers import LAYERS_CSV, layer_tables, load_layer_reference, render_layers
from benchharness.report import build_report

from test_leaderboard import write_result


@pytest.fixture
def results_dir(tmp_path):
    w = write_result
    # written out of layer order on purpose
    w(tmp_path, "s/fc7.json", method="supervised", protocol="probe-fc7", value=61.0)
    w(tmp_path, "s/conv3-0.json", method="supervised", protocol="probe-conv3", value=50.0, seed=0)
    w(tmp_path, "s/conv3-1.json", method="supervised", protocol="probe-conv3", value=53.0, seed=1)
    w(tmp_path, "s/conv1.json", method="supervised", protocol="probe-conv1", value=31.5)
    w(tmp_path, "r/conv1.json", method="random", group="none", protocol="probe-conv1", value=40.0)
    w(tmp_path, "r/fc7.json", method="random", group="none", protocol="probe-fc7", status="failed",
      value=None, error="boom")
    w(tmp_path, "s/src-conv2.json", method="supervised", task="source-cls", protocol="conv2",
      metric="top1", value=70.0)
    w(tmp_path, "s/knn.json", method="supervised", protocol="knn-conv5", value=45.0)
    w(tmp_path, "s/fc8.json", method="supervised", protocol="fc8", value=65.0)  # not layer-wise
    return tmp_path


def _table(md: str, title: str) -> list[list[str]]:
    block = md.split(f"### {title}\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if "---" not in line]


def test_one_table_per_task_and_family_with_layers_in_network_order(results_dir):
    tables = layer_tables(lb.load_results(results_dir))
    assert [(t.task, t.family) for t in tables] == [("source-cls", ""), ("voc07-cls", "probe"),
                                                    ("voc07-cls", "knn")]
    md = render_layers(lb.load_results(results_dir))
    probe = _table(md, "voc07-cls, protocols probe-<layer>")
    assert probe[0] == ["group", "method", "source", "conv1", "conv3", "fc7"]
    sup = next(r for r in probe if r[1] == "supervised")
    spread = statistics.stdev([50.0, 53.0])
    # one seed: the file's value; two: mean ± sample std, and (n=2) since most cells have one seed;
    # conv1's best is random's 40.0; conv3 and fc7 (random's failed) are supervised's
    assert sup[3:] == ["31.5", f"**{51.5:.1f} ± {spread:.1f} (n=2)**", "**61.0**"]
    rnd = next(r for r in probe if r[1] == "random")
    assert rnd[3:] == ["**40.0**", "", "failed"]
    assert [r[1] for r in probe[1:]] == ["supervised", "random"]  # sup before none
    assert _table(md, "source-cls, protocols <layer>")[1][3:] == ["**70.0**"]
    assert _table(md, "voc07-cls, protocols knn-<layer>")[1][3:] == ["**45.0**"]
    assert "65.0" not in md  # fc8 belongs to the transfer table
    means = tables[1].means
    assert means.loc["supervised", "conv3"] == pytest.approx(51.5) and pd.isna(means.loc["random", "fc7"])


def test_the_transfer_table_leaves_layer_results_out_and_says_where_they_are(results_dir):
    md = lb.render(lb.load_results(results_dir))
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header == ["group", "method", "source", "cls fc8", "cls fc6-8", "cls all", "det", "seg"]
    assert "8 layer-wise result(s)" in md and "random" not in md and "--view layers" in md


def test_published_rows_join_the_tables_they_stand_for(results_dir):
    ref = load_layer_reference(LAYERS_CSV)
    md = render_layers(lb.load_results(results_dir), ref)
    probe = _table(md, "voc07-cls, protocols probe-<layer>")
    assert probe[0] == ["group", "method", "source", "conv1", "conv3", "conv5", "max5", "fc6", "fc7"]
    imagenet = next(r for r in probe if r[1].startswith("ImageNet (Krizhevsky et al.) [published: owens2016_sound]"))
    # Owens et al.: max5 63.6, pool5 65.6 (shown under conv5), fc6 69.6, fc7 73.6
    assert imagenet[5:] == ["65.6", "63.6", "69.6", "73.6"] and imagenet[3:5] == ["", ""]
    assert [r[1] for r in probe[1:3]] == ["supervised", "ImageNet (Krizhevsky et al.) [published: owens2016_sound]"]
    source = _table(md, "source-cls, protocols <layer>")
    bigan = next(r for r in source if r[1] == "BiGAN [published: donahue2017_thesis]")
    assert bigan[3:] == ["56.2", "54.4", "49.4", "43.9", "33.3"]
    assert "sun397, protocols probe-<layer>" in md  # a published task without measured results
    assert "different base network" in md  # the jigsaw row's note
    csv = pd.read_csv(io.StringIO(render_layers(lb.load_results(results_dir), ref, "csv")))
    places = csv[(csv["method"].str.startswith("Places")) & (csv["task"] == "voc07-cls")]
    assert dict(zip(places["layer"], places["value"])) == {"conv5": 63.2, "max5": 59.0, "fc6": 65.3, "fc7": 66.2}
    assert not csv[csv["published"]]["best"].any()


def test_the_reference_file_is_checked(tmp_path):
    bad = tmp_path / "layers.csv"
    bad.write_text("source,method\nx,y\n")
    with pytest.raises(DataError, match="layers.csv.*missing column"):
        load_layer_reference(bad)
    both = tmp_path / "both.csv"
    frame = pd.read_csv(LAYERS_CSV)
    frame.loc[frame["method"] == "Texton-CNN", "conv5"] = 1.0
    frame.to_csv(both, index=False)
    with pytest.raises(DataError, match="Texton-CNN.*both conv5 and pool5"):
        load_layer_reference(both)


def test_the_command_line_view(results_dir, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--view", "layers", "--reference"])
    assert out.exit_code == 0, out.output
    assert "### voc07-cls, protocols probe-<layer>" in out.output and "[published: donahue2017_thesis]" in out.output
    latex = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--view", "layers", "--format", "latex"])
    assert latex.exit_code == 0 and latex.output.count(r"\begin{table}") == 3 and r"\textbf{61.0}" in latex.output
    default = runner.invoke(main, ["leaderboard", "--results", str(results_dir)])
    assert default.exit_code == 0 and "probe" not in default.output.split("\n\n")[0]
    conflict = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--view", "layers", "--cost"])
    assert conflict.exit_code == 2 and "different views" in conflict.output
    write_result(tmp_path / "plain", "a.json", protocol="fc8")
    none = runner.invoke(main, ["leaderboard", "--results", str(tmp_path / "plain"), "--view", "layers"])
    assert none.exit_code == 2 and "no layer-wise results" in none.output and "probe-conv5" in none.output


def test_the_report_shows_the_same_layer_rows(results_dir):
    page = build_report(results_dir, reference=True, pr_methods=["nobody"])
    section = page.split('<section id="layerwise">', 1)[1].split("</section>", 1)[0]
    assert section.count('<table class="layerwise">') == 4  # source-cls, sun397, voc07-cls probe, knn
    assert "<h3>voc07-cls, protocols probe-&lt;layer&gt;</h3>" in section
    assert f"51.5 ± {statistics.stdev([50.0, 53.0]):.1f} (n=2)" in section
    assert "BiGAN [published: donahue2017_thesis]" in section and 'tbody class="published"' in section
