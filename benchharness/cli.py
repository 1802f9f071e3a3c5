"""The ``benchharness`` command line: run, plugins, leaderboard, data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .interfaces import BenchharnessError

DEFAULT_RESULTS = "results"


class _Group(click.Group):
    """Prints BenchharnessError (bad input, missing data) as one clear line, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchharnessError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="benchharness")
def main():
    """Benchmark visual representations by transfer to the PASCAL VOC suite.

    \b
    Typical session:
      benchharness data synth --out data/synthetic-small   # the embedded default world
      benchharness run --suite smoke                       # pretrain, transfer, evaluate
      benchharness leaderboard --reference                 # the table, beside published rows
      benchharness plugins                                 # what methods/tasks are installed
    """


@main.command()
@click.option("--suite", default="smoke", show_default=True,
              help="Suite name (a file in benchmarks/: smoke, voc-transfer) or path to a suite TOML.")
@click.option("--method", "methods", multiple=True, metavar="SPEC",
              help="Method to run (repeatable), replacing the suite's list. "
                   "Use checkpoint:PATH to evaluate your own weights.")
@click.option("--task", "tasks", multiple=True, metavar="NAME",
              help="Task to run (repeatable), replacing the suite's list, e.g. voc07-cls.")
@click.option("--protocol", "protocols", multiple=True, metavar="NAME",
              help="Only these protocols (repeatable): fc8, fc6-8, all.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Number of transfer seeds (0..N-1); default from the suite.")
@click.option("--results", "results_dir", default=DEFAULT_RESULTS, show_default=True,
              type=click.Path(file_okay=False), help="Results store (JSON per job under runs/).")
@click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False),
              help="Representation cache [default: RESULTS/cache].")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Folder holding VOCdevkit/ (real PASCAL VOC or a synthetic world); default from "
                   "the suite (the smoke suite generates its synthetic world when missing).")
@click.option("--device", default=None, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where to train [default: the suite's, usually auto].")
@click.option("--dry-run", is_flag=True, help="Print the jobs that would run and exit.")
def run(suite, methods, tasks, protocols, seeds, results_dir, cache_dir, data_root, device, dry_run):
    """Run a suite: pretrain (or load) each method once, transfer it to each task under each
    protocol and seed, score it, and store one JSON result per job.

    Finished jobs are skipped, so re-running the same command after a kill resumes the grid.
    """
    from .plugins import get_registry
    from .runner import Runner, plan as make_plan, prepare_data_root
    from .suite import load_suite

    registry = get_registry()
    for failure in registry.failures:
        click.echo(f"warning: plugin {failure.name} failed to load: {failure.error}", err=True)
    the_suite = load_suite(suite)
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    root = prepare_data_root(the_suite, data_root, log)
    the_plan = make_plan(the_suite, registry, root, list(methods), list(tasks), list(protocols), seeds)
    if dry_run:
        for job in the_plan.jobs:
            click.echo(f"{job.method}\t{job.task}\t{job.protocol}\tseed {job.seed}\t{job.config_hash}")
        return
    runner = Runner(registry, Path(results_dir), cache_dir, device or the_suite.device, log)
    log(f"suite {the_suite.name}: {len(the_plan.jobs)} jobs on {runner.device}, data {root}, "
        f"results {results_dir}")
    counts = runner.run(the_plan)
    log(f"finished: {counts['done']} run, {counts['skipped']} already done, {counts['failed']} failed")
    if counts["failed"]:
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys: plugins, methods, tasks, "
              "evaluators, backbones, datasets, failed).")
def plugins(as_json):
    """List every loaded plugin, its hooks and what it registers; report plugins that failed."""
    from .plugins import get_registry

    info = get_registry().describe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for p in info["plugins"]:
        click.echo(f"{p['name']}  [{p['source']}]")
        click.echo(f"    hooks: {', '.join(p['hooks'])}")
        for kind, names in p["registers"].items():
            if names:
                click.echo(f"    {kind}: {', '.join(names)}")
    for f in info["failed"]:
        click.echo(f"{f['name']}  [FAILED to load {f['target']}]\n    {f['error']}")
    click.echo("")
    for kind in ("methods", "tasks", "evaluators", "backbones", "datasets"):
        click.echo(f"{kind}: {', '.join(info[kind])}")


@main.command()
@click.option("--results", "results_dir", default=DEFAULT_RESULTS, show_default=True,
              type=click.Path(file_okay=False), help="Results store to read.")
@click.option("--format", "fmt", default="markdown", show_default=True,
              type=click.Choice(["markdown", "latex", "html", "csv"]))
@click.option("--reference", is_flag=True,
              help="Add the published rows (results/reference/published_voc_transfer.csv), marked.")
@click.option("--suite", default=None, help="Only results of this suite.")
def leaderboard(results_dir, fmt, reference, suite):
    """Print the transfer leaderboard: rows by supervision group, columns cls fc8 / fc6-8 / all,
    det, seg; mean +- std over seeds; best measured value per column marked."""
    from . import leaderboard as lb

    df = lb.load_results(Path(results_dir))
    if suite is not None and not df.empty:
        df = df[df["suite"] == suite]
    ref = None
    if reference:
        ref = lb.load_reference(find_reference(Path(results_dir)))
    if df.empty and ref is None:
        raise BenchharnessError(f"no results under {Path(results_dir) / 'runs'}; run `benchharness run` first")
    click.echo(lb.render(df, ref, fmt))


def find_reference(results_dir: Path) -> Path:
    """The published-numbers CSV: in the results store, else the one in the source tree."""
    from .leaderboard import REFERENCE_CSV

    candidate = results_dir / "reference" / REFERENCE_CSV.name
    return candidate if candidate.is_file() else REFERENCE_CSV


@main.group()
def data():
    """Datasets: generate the synthetic world."""


@data.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Where to write the world (VOCdevkit/, source/, unlabelled/).")
@click.option("--seed", default=0, show_default=True, help="The world is a pure function of the seed.")
@click.option("--size", default="small", show_default=True,
              type=click.Choice(["tiny", "small", "medium"]),
              help="small: the embedded default (minutes on a CPU); medium: ~4x; tiny: for tests.")
def synth(out, seed, size):
    """Generate the synthetic VOC-format world: VOC2007 (classification, detection), VOC2012
    (segmentation masks), a labelled source set (ImageNet stand-in) and an unlabelled pool."""
    from .data.synth import generate_world
    from .runner import progress_bar

    path = generate_world(Path(out), seed=seed, size=size, progress=progress_bar)
    click.echo(f"synthetic world (seed {seed}, size {size}) written to {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
