"""The ``benchharness`` command line: run, plugins, leaderboard, report, data."""

from __future__ import annotations

from inspect import cleandoc
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
      benchharness leaderboard --view layers --reference   # layer-wise results (probes), Table 5.2
      benchharness report --reference                      # one HTML page: table, figures, cost
      benchharness plugins                                 # what methods/tasks are installed
    """


@main.command()
@click.option("--suite", default="smoke", show_default=True,
              help="Suite name (a file in benchmarks/: smoke, table53, voc-transfer) or path to a suite TOML.")
@click.option("--method", "methods", multiple=True, metavar="SPEC",
              help="Method to run (repeatable), replacing the suite's list: a registered method "
                   "(`benchharness plugins`) or a variant the suite declares ([methods.\"NAME\"] "
                   "with base = \"METHOD\": the base's section overlaid with its own keys), e.g. "
                   "--method bigan-112e. Use checkpoint:PATH to evaluate your own weights.")
@click.option("--task", "tasks", multiple=True, metavar="NAME",
              help="Task to run (repeatable), replacing the suite's list: voc07-cls, voc07-det, "
                   "voc12-seg, source-cls (Table 5.2: source-set top-1 above frozen convN).")
@click.option("--protocol", "protocols", multiple=True, metavar="NAME",
              help="Only these protocols (repeatable), each applied to the tasks that have it: "
                   "fc8, fc6-8, all (voc07-cls); probe-conv1..probe-fc7 (voc07-cls: linear probes); "
                   "conv1..conv5 (source-cls: conv1..convN frozen); knn-conv1..knn-fc7 (voc07-cls, "
                   "source-cls: k-NN on that stage). A protocol none of the selected tasks has is an "
                   "error listing theirs.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Number of transfer seeds (0..N-1); default from the suite.")
@click.option("--results", "results_dir", default=DEFAULT_RESULTS, show_default=True,
              type=click.Path(file_okay=False), help="Results store (JSON per job under runs/).")
@click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False),
              help="Representation cache [default: RESULTS/cache].")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Your PASCAL VOC (or a synthetic world), in any of the layouts DIR/VOCdevkit/VOC2007, "
                   "DIR = VOCdevkit holding VOC2007/, or DIR holding VOC2007/ (VOC2012/) directly; the "
                   "layout found is logged. Only read: never written into, never replaced by synthetic "
                   "data. Default: the suite's data_root (the smoke suite generates its synthetic world "
                   "there when missing).")
@click.option("--device", default=None, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where to train [default: the suite's, usually auto].")
@click.option("--rescale", is_flag=True,
              help="Apply Krahenbuhl et al.'s magic_init before transfer: data-dependent init of "
                   "the stages the method did not learn, then equalised change rates over all "
                   "layers (magic_init.py -cs); recorded in each result (the published rows marked "
                   "rescaled used it).")
@click.option("--schedule-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True, metavar="F",
              help="Multiply every iteration and epoch count (epochs, iterations, steps, "
                   "warmup_epochs, stepsize; not lr_steps) of the suite's method and task sections, "
                   "and the tasks' own defaults, by F (at least 1), to check a suite's whole pipeline "
                   "on a small machine. A method's own defaults that the suite does not set are not "
                   "scaled. F is part of every job's hash, recorded in its result, and the "
                   "leaderboard marks such rows.")
@click.option("--backbone", default=None, metavar="NAME",
              help="Backbone replacing the suite's: caffenet (Caffe CaffeNet, for .caffemodel "
                   "checkpoints), alexnet (torchvision layout), alexnet-small.")
@click.option("--executor", default=None, type=click.Choice(["inline", "pool", "submitit"]),
              help="inline: one job after the other in this process; pool: worker processes on "
                   "this machine (pretraining first; the CPU's threads divided among them, or one "
                   "GPU each); submitit: cluster jobs through submitit (SLURM job arrays per wave, "
                   "or cluster=local / cluster=debug). Same result files; a job's numbers depend "
                   "on its thread count. [default: the suite's [executor] name, else inline]")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the pool executor [default: the suite's [executor] "
                   "workers, else one per visible GPU, or 1 on a CPU], or jobs at a time of "
                   "submitit's local executor [default 1]. Same as --executor-option workers=N.")
@click.option("--executor-option", "executor_options", multiple=True, metavar="KEY=VALUE",
              help="Set any [executor] key (repeatable), over the suite's: workers, nproc, cluster "
                   "(slurm|local|debug), partition, gpus, cpus, mem_gb, timeout_min, account, qos, "
                   "constraint, array_parallelism, setup, max_num_timeout, folder, wait, poll_s. "
                   "VALUE is read as TOML (4, true, [\"module load cuda\"]) or else as text. "
                   "The README's \"Running on a cluster\" explains each.")
@click.option("--gpus-per-job", "nproc", type=int, default=None, metavar="N",
              help="Train each job on N processes with torch.distributed, launched by torchrun "
                   "(NCCL, one GPU each, on CUDA; gloo on a CPU): supervised pretraining and the "
                   "`all` fine-tuning of voc07-cls, voc07-det and voc12-seg; the rest runs in one "
                   "process. The global batch and lr stay the suite's (results state them under "
                   "info.distributed). Inline and submitit executors (not pool). [default: the suite's [executor] "
                   "nproc, else 1]")
@click.option("--dry-run", is_flag=True, help="Print the jobs that would run and exit.")
def run(suite, methods, tasks, protocols, seeds, results_dir, cache_dir, data_root, device, rescale,
        schedule_fraction, backbone, executor, workers, executor_options, nproc, dry_run):
    """Run a suite: pretrain (or load) each method once, transfer it to each task under each
    protocol and seed, score it, and store one JSON result per job.

    Finished jobs are skipped, so re-running the same command after a kill resumes the grid.
    `benchharness status` shows what a run (of any executor) is doing. Method, variant, task and
    protocol names are checked before any data is read or generated; a selection that leaves
    no job is an error.
    """
    from .executors import check_executor, parse_option, run_plan
    from .plugins import get_registry
    from .runner import Runner, plan as make_plan, prepare_data_root
    from .selection import select
    from .suite import load_suite

    registry = get_registry()
    for failure in registry.failures:
        click.echo(f"warning: plugin {failure.name} failed to load: {failure.error}", err=True)
    the_suite = load_suite(suite)
    if backbone:
        the_suite.backbone = backbone
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    options = dict(the_suite.executor)
    options.update(parse_option(text) for text in executor_options)
    if executor:
        options["name"] = executor
    if workers:
        options["workers"] = workers
    options = check_executor(options, "run options")
    # every name first: a typo must not cost a generated world or a built model
    select(the_suite, registry, list(methods), list(tasks), list(protocols), seeds)
    root = prepare_data_root(the_suite, data_root, log)
    the_plan = make_plan(the_suite, registry, root, list(methods), list(tasks), list(protocols), seeds,
                         {"rescale": True} if rescale else None, schedule_fraction)
    if dry_run:
        for job in the_plan.jobs:
            click.echo(f"{job.method}\t{job.task}\t{job.protocol}\tseed {job.seed}\t{job.config_hash}")
        return
    runner = Runner(registry, Path(results_dir), cache_dir, device or the_suite.device, log)
    partial = f", schedule fraction {schedule_fraction:g}" if schedule_fraction != 1 else ""
    log(f"suite {the_suite.name}: {len(the_plan.jobs)} jobs on {runner.device}, data {root} "
        f"({the_plan.data.tag}){partial}, results {results_dir}")
    runner.nproc = options["nproc"] = _processes_per_job(nproc, options, runner)
    counts = run_plan(options, the_plan, runner, log)
    log(f"finished: {counts['done']} run, {counts['skipped']} already done, {counts['failed']} failed")
    if counts["failed"]:
        sys.exit(1)


def _processes_per_job(nproc, options: dict, runner) -> int:
    """``--gpus-per-job`` (else ``[executor] nproc``), checked against the device and the
    executor (a pool worker cannot launch torchrun's processes on GPUs it does not own)."""
    from .distributed import check_nproc

    n = check_nproc(nproc if nproc is not None else options.get("nproc", 1), runner.device)
    executor = options.get("name", "inline")
    if n > 1 and executor == "pool":
        raise BenchharnessError(f"--gpus-per-job {n} needs the inline or submitit executor (got pool)")
    return n


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


VIEWS = ("table", "layers", "per-class", "cost")


@main.command()
@click.option("--results", "results_dir", default=DEFAULT_RESULTS, show_default=True,
              type=click.Path(file_okay=False), help="Results store to read.")
@click.option("--format", "fmt", default="markdown", show_default=True,
              type=click.Choice(["markdown", "latex", "html", "csv"]))
@click.option("--view", type=click.Choice(VIEWS), default=None,
              help="table: the transfer table, Table 5.3's shape (the default); layers: Table 5.2's "
                   "shape, one column per layer (conv1..conv5, fc6, fc7) and one row per method, a "
                   "table per task and protocol family (probe-<layer>, knn-<layer>, <layer>); "
                   "per-class; cost.")
@click.option("--reference", is_flag=True,
              help="Add the published rows, marked: results/reference/published_voc_transfer.csv "
                   "(table view) or published_layers.csv (layers view).")
@click.option("--suite", default=None, help="Only results of this suite.")
@click.option("--per-class", "per_class", is_flag=True,
              help="Per-class view (same as --view per-class): one row per method and "
                   "task/protocol, one column per class (mean over seeds).")
@click.option("--cost", is_flag=True,
              help="Cost view (same as --view cost): per method, pretraining and transfer seconds, "
                   "device, GPU-hours (CUDA only) and peak memory.")
def leaderboard(results_dir, fmt, view, reference, suite, per_class, cost):
    """Print the transfer leaderboard: rows by supervision group, columns cls fc8 / fc6-8 / all,
    det, seg; mean +- std over seeds; best measured value per column marked.

    \b
    --format latex gives a booktabs table (needs \\usepackage{booktabs}) with the notes in
    its caption. --view layers prints the layer-wise results (e.g. the voc07-cls probes,
    `run --protocol probe-conv5`), which the transfer table leaves out; --per-class and --cost
    print the other two views.
    """
    from . import leaderboard as lb

    chosen = {v for v, on in (("per-class", per_class), ("cost", cost), (view, view is not None)) if on}
    if len(chosen) > 1:
        raise click.UsageError(f"{', '.join(sorted(chosen))} are different views; ask for one")
    view = chosen.pop() if chosen else "table"
    if reference and view not in ("table", "layers"):
        raise click.UsageError("--reference adds published rows to the table and layers views only")
    df = lb.load_results(Path(results_dir))
    if suite is not None and not df.empty:
        df = df[df["suite"] == suite]
    ref = None
    if view == "layers":
        from . import leaderboard_layers as layers

        if reference:
            ref = layers.load_layer_reference(find_reference(Path(results_dir), layers.LAYERS_CSV))
        if ref is None and not any(layers.layer_of(p) for p in df.get("protocol", [])):
            raise BenchharnessError(f"no layer-wise results under {Path(results_dir) / 'runs'} (protocols "
                                    "conv1..fc7, probe-<layer>, knn-<layer>); e.g. `benchharness run "
                                    "--protocol probe-conv5`, or add --reference")
        click.echo(layers.render_layers(df, ref, fmt))
        return
    if reference:
        ref = lb.load_reference(find_reference(Path(results_dir)))
    if df.empty and ref is None:
        raise BenchharnessError(f"no results under {Path(results_dir) / 'runs'}; run `benchharness run` first")
    if view in ("per-class", "cost"):
        from . import leaderboard_views as views

        click.echo(views.render_per_class(df, fmt) if view == "per-class" else views.render_cost(df, fmt))
        return
    click.echo(lb.render(df, ref, fmt))


@main.command()
@click.option("--results", "results_dir", default=DEFAULT_RESULTS, show_default=True,
              type=click.Path(file_okay=False), help="Results store to read.")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write [default: RESULTS/report.html].")
@click.option("--reference", is_flag=True,
              help="Add the published rows (results/reference/published_voc_transfer.csv, and "
                   "published_layers.csv in the layer-wise section), in their own block.")
@click.option("--suite", default=None, help="Only results of this suite.")
@click.option("--pr-method", "pr_methods", multiple=True, metavar="METHOD",
              help="Draw the precision-recall curves of this method (repeatable; a leaderboard row "
                   "label) [default: the best and the worst of each column].")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="The data the results were scored on, when it has moved since [default: the "
                   "path each result recorded].")
def report(results_dir, out, reference, suite, pr_methods, data_root):
    """Write one self-contained HTML report: the leaderboard, per-class AP, precision-recall
    curves, layer-wise results, pretext against transfer, cost and provenance. Figures are
    embedded; the page fetches nothing and opens offline."""
    from .leaderboard_layers import LAYERS_CSV
    from .report import write_report

    ref_path = find_reference(Path(results_dir)) if reference else None
    layers_path = find_reference(Path(results_dir), LAYERS_CSV) if reference else None
    path = write_report(Path(out) if out else Path(results_dir) / "report.html", Path(results_dir),
                        reference=reference, suite=suite, pr_methods=list(pr_methods) or None,
                        data_root=data_root, reference_path=ref_path, layers_reference_path=layers_path)
    click.echo(f"report written: {path.resolve()}")


@main.command()
@click.option("--results", "results_dir", default=DEFAULT_RESULTS, show_default=True,
              type=click.Path(file_okay=False), help="Results store to look at.")
@click.option("--all", "show_all", is_flag=True, help="Also list the finished jobs per method.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per job (method, task, "
              "protocol, seed, state, run, executor, where, error, log).")
def status(results_dir, show_all, as_json):
    """What the runs on a results directory are doing: each job queued, pretraining, running,
    done, failed (with its error and log) or stopped (its run ended before it), across inline
    runs, pool workers and cluster jobs.

    \b
    It reads what every executor leaves: the result files, their locks (held by live
    processes), and the run records under RESULTS/queue/ that each `run` writes.
    """
    from dataclasses import asdict

    from .status import collect, render

    states, records = collect(Path(results_dir))
    if as_json:
        for state in states:
            click.echo(json.dumps(asdict(state)))
        return
    click.echo(render(states, records, Path(results_dir), show_all))


def find_reference(results_dir: Path, source_csv: Path | None = None) -> Path:
    """A published-numbers CSV (by default the transfer table's, ``source_csv`` names another of
    the source tree's): the file of that name in the results store, else the source tree's."""
    from .leaderboard import REFERENCE_CSV

    source_csv = source_csv or REFERENCE_CSV
    candidate = results_dir / "reference" / source_csv.name
    return candidate if candidate.is_file() else source_csv


@main.command()
@click.argument("task", type=click.Choice(["cls", "det", "seg"]))
@click.option("--devkit", "devkit_dir", required=True, type=click.Path(file_okay=False),
              help="The VOCdevkit directory, the folder holding it, or a folder holding VOC2007/ "
                   "(VOC2012/) directly.")
@click.option("--year", required=True, type=click.Choice(["2007", "2012"]),
              help="Which VOC<year> of the devkit holds the split.")
@click.option("--split", required=True, metavar="NAME",
              help="Image set: ImageSets/Main/NAME.txt (cls, det) or "
                   "ImageSets/Segmentation/NAME.txt (seg), e.g. test, val.")
@click.option("--results", "results_dir", required=True, type=click.Path(file_okay=False),
              help="Folder holding the results files (formats above).")
@click.option("--metric", default=None, metavar="ID",
              help="Evaluator id [default: voc07-11pt for cls and det, miou for seg].")
@click.option("--classes", default=None, metavar="A,B,...",
              help="Evaluate only these classes (comma-separated); only their files are read.")
@click.option("--iou-strict", is_flag=True,
              help="det: match with IoU > 0.5 (the Python ports) instead of the devkit's >= 0.5.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object {"metric", "mean", "per_class"} (fractions in [0, 1]; '
                   'seg adds pixel_acc, mean_acc, fw_iou).')
def evaluate(task, devkit_dir, year, split, results_dir, metric, classes, iou_strict, as_json):
    """Score VOC results files (cls, det or seg) against a VOCdevkit's ground truth.

    \b
    Results formats (the official VOC ones):
      cls  comp1_cls_<split>_<class>.txt   lines: <image_id> <score>
      det  comp3_det_<split>_<class>.txt   lines: <image_id> <score> <xmin> <ymin> <xmax> <ymax>
           (1-based inclusive pixel coordinates, as in the annotations)
      seg  <image_id>.png per image        pixel values = class indices, 0 background,
           1..20 the VOC classes (palette or greyscale PNG, the ground truth's size)

    \b
    Metrics (--metric):
      voc07-11pt  VOC2007 devkit 11-point interpolated AP (cls, det)   [default cls/det]
      voc10-area  VOC2010+ devkit AP, area under the precision envelope (cls, det)
      sklearn-ap  non-interpolated AP as sklearn's average_precision_score (cls)
      coco-ap50   pycocotools COCOeval AP at IoU 0.5 (det; difficult objects as iscrowd)
      coco-ap     pycocotools COCOeval AP at IoU 0.50:0.95 (det)
      miou        FCN mean IoU over one confusion matrix, 255 ignored (seg)   [default seg]
                  also reports pixel_acc, mean_acc, fw_iou

    \b
    Rules, as the VOC devkit applies them:
      cls: images labelled 0 (difficult) count neither as positives nor negatives; an image
           missing from a file gets score -inf.
      det: detections ranked by score (ties in file order); each takes the box of highest IoU
           among all boxes of its image and class (difficult and matched ones included);
           IoU >= 0.5 on a difficult box: ignored; on an unmatched box: true positive; on a
           matched box, or below 0.5: false positive. Width = xmax - xmin + 1.

    Without --classes every class's file must exist. A malformed line, an unknown image id or
    a mask of the wrong size is an error naming the file (and line), exit status 2.
    """
    from .evaluators.offline import evaluate_results_dir, metrics_json, metrics_table, parse_classes

    chosen = parse_classes(task, classes)
    found = evaluate_results_dir(task, Path(devkit_dir), year, split, Path(results_dir),
                                 metric=metric, classes=chosen, iou_strict=iou_strict)
    if as_json:
        click.echo(json.dumps(metrics_json(found.metrics, task, iou_strict)))
        return
    rule = " (IoU > 0.5)" if task == "det" and iou_strict else ""
    click.echo(f"{found.metrics.metric}{rule} on VOC{year} {split} ({task}, {found.n_images} images, "
               f"{len(found.classes)} classes, results {results_dir})")
    click.echo(metrics_table(found.metrics, task))


CHECKPOINT_HELP = """CHECKPOINT is a .caffemodel (Caffe CaffeNet/AlexNet: use --backbone caffenet;
a <stem>.prototxt or deploy.prototxt beside it, or --prototxt, gives the layer settings), a
.safetensors file (stage names, torchvision AlexNet names, or written by `convert`), a torch.save
state dict (read weights-only) or a benchharness representation directory."""


def _checkpoint_help(f):
    """Append what CHECKPOINT may be to a command's help."""
    f.__doc__ = cleandoc(f.__doc__) + "\n\n" + CHECKPOINT_HELP
    return f


def _checkpoint_options(f):
    for option in reversed([
        click.option("--backbone", default="caffenet", show_default=True, metavar="NAME",
                     help="caffenet, alexnet or alexnet-small."),
        click.option("--prototxt", default=None, type=click.Path(dir_okay=False),
                     help="deploy.prototxt of a .caffemodel (layer settings and order)."),
        click.option("--mean-file", default=None, type=click.Path(dir_okay=False),
                     help="Mean .binaryproto: its per-channel mean replaces (104, 117, 123)."),
        click.option("--map", "layer_map", multiple=True, metavar="STAGE=LAYER",
                     help="Read a stage from a differently named layer (repeatable); "
                          "STAGE= leaves it random."),
    ]):
        f = option(f)
    return f


def _load(checkpoint, backbone, prototxt, mean_file, layer_map):
    from .checkpoint_io import LoadOptions, load_checkpoint

    mapping = {}
    for item in layer_map:
        stage, sep, layer = item.partition("=")
        if not sep:
            raise BenchharnessError(f"--map {item!r}: expected STAGE=LAYER")
        mapping[stage] = layer
    return load_checkpoint(Path(checkpoint), backbone,
                           LoadOptions(prototxt=prototxt, mean_file=mean_file, layer_map=mapping))


@main.command()
@_checkpoint_help
@click.argument("checkpoint", type=click.Path(exists=True))
@_checkpoint_options
@click.option("--layer", required=True, type=click.Choice(["conv1", "conv2", "conv3", "conv4", "conv5",
                                                           "fc6", "fc7"]),
              help="Stage whose output is written (conv stages after ReLU, pool and LRN; fc after ReLU).")
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images; one row per image file, in sorted file-name order.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npy file [N, D].")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]), show_default=True)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
def features(checkpoint, backbone, prototxt, mean_file, layer_map, layer, images_dir, out, device,
             batch_size):
    """Write one stage's output for every image of a folder as a float32 .npy [N, D].

    An image already at the backbone's input size (227 for caffenet) is used unchanged; any other
    is resized to 256 x 256 and centre-cropped (Caffe's reference test transform). Dropout is off.
    The file names, in row order, are written beside it as OUT.txt.
    """
    import io

    import numpy as np

    from . import atomic
    from .features import extract, image_files
    from .runner import progress_bar, resolve_device

    rep, _ = _load(checkpoint, backbone, prototxt, mean_file, layer_map)
    paths = image_files(Path(images_dir))
    rows = extract(rep, paths, layer, resolve_device(device), batch_size, progress_bar)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    out = Path(out)
    atomic.write_bytes(out, buffer.getvalue())
    atomic.write_bytes(out.with_suffix(out.suffix + ".txt"), "".join(f"{p.name}\n" for p in paths).encode())
    click.echo(f"{out}: {rows.shape[0]} images x {rows.shape[1]} ({layer} of {Path(checkpoint).name})")


@main.command()
@_checkpoint_help
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("dst", type=click.Path(dir_okay=False))
@_checkpoint_options
def convert(checkpoint, dst, backbone, prototxt, mean_file, layer_map):
    """Convert CHECKPOINT to DST.safetensors under stage names, with the trunk's layout and input
    convention in its header; `--method checkpoint:DST.safetensors` then needs no prototxt.
    """
    from .checkpoint_io import save_converted

    rep, report = _load(checkpoint, backbone, prototxt, mean_file, layer_map)
    save_converted(rep, Path(dst))
    click.echo(f"{dst}: stages {', '.join(rep.learned_stages)} ({backbone}); not used: "
               f"{', '.join(report.get('unused') or []) or 'nothing'}")


@main.command()
@_checkpoint_help
@click.argument("checkpoint", type=click.Path(exists=True))
@_checkpoint_options
@click.option("--json", "as_json", is_flag=True, help="Print the load report as JSON.")
def inspect(checkpoint, backbone, prototxt, mean_file, layer_map, as_json):
    """Show what a checkpoint holds and what a run will use: layers, shapes, the input
    convention, the stages taken and the layers left out.
    """
    rep, report = _load(checkpoint, backbone, prototxt, mean_file, layer_map)
    shapes = {k: list(v.shape) for k, v in rep.network.state_dict().items()
              if k.split(".")[0] in rep.learned_stages}
    if as_json:
        click.echo(json.dumps({**report, "shapes": shapes, "backbone": backbone}, indent=2, default=str))
        return
    click.echo(f"{checkpoint}: {report['format']}" + (f", layout from {report['prototxt']}"
                                                       if report.get("prototxt") else ""))
    stages = report.get("stages")
    for key, shape in shapes.items():
        stage = key.split(".")[0]
        origin = f"  <- {stages[stage]}" if isinstance(stages, dict) and key.endswith("weight") else ""
        click.echo(f"  {key:20s} {'x'.join(map(str, shape)):>16s}{origin}")
    random = [s for s in ("fc6", "fc7") if s not in rep.learned_stages]
    if random:
        click.echo(f"  random (not in the file): {', '.join(random)}")
    if report.get("spec"):
        click.echo("  layout: " + ", ".join(f"{k}={v}" for k, v in report["spec"].items()))
    click.echo("  input: " + ", ".join(f"{k}={v}" for k, v in report["input"].items())
               + (f" ({report['input_source']})" if report.get("input_source") else ""))
    click.echo("  not used: " + (", ".join(report.get("unused") or []) or "nothing"))


@main.group()
def data():
    """Datasets: generate the synthetic world, check a VOCdevkit tree, fetch PASCAL VOC / SBD."""


@data.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--year", "years", multiple=True, type=click.Choice(["2007", "2012"]),
              help="Years to check (repeatable) [default: the years present].")
@click.option("--quick", is_flag=True, help="Structure, split files and annotations only; no image decoding.")
def check(root, years, quick):
    """Validate a VOCdevkit tree and list every problem at once (file:line: message): unreadable
    or truncated images, malformed XML, boxes outside the image or inverted, unknown classes,
    split files naming missing files, masks with labels other than 0-20/255 or of the wrong size."""
    from .data.voc.check import check_devkit, format_problems
    from .runner import progress_bar

    problems = check_devkit(Path(root), years or None, quick=quick, progress=progress_bar)
    if problems:
        click.echo(format_problems(problems))
        raise click.ClickException(f"{len(problems)} problem(s) found in {root}")
    click.echo(f"{root}: no problems found" + (" (quick check)" if quick else ""))


@data.command()
@click.argument("dataset", type=click.Choice(["voc2007", "voc2012", "sbd"]))
@click.option("--dest", default="data/VOC", show_default=True, type=click.Path(file_okay=False),
              help="Where VOCdevkit/ (and SBD's benchmark_RELEASE/) will be; pass it as --data-root.")
@click.option("--mirror", "base_url", default=None, help="Base URL of a mirror holding the same file names.")
@click.option("--remove-archives", is_flag=True, help="Delete each archive once extracted.")
def fetch(dataset, dest, base_url, remove_archives):
    """Download the official archives (resuming partial downloads), verify their checksums and
    extract them safely (nothing outside DEST, no links out of it)."""
    from .data.voc.fetch import WHAT_IT_GIVES, fetch_dataset

    path = fetch_dataset(dataset, Path(dest), base_url=base_url, keep_archives=not remove_archives,
                         log=lambda m: click.echo(m, err=True))
    click.echo(f"{dataset}: {WHAT_IT_GIVES[dataset]} ready under {path}; "
               f"check it with `benchharness data check {path}`")


@data.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Where to write the world (VOCdevkit/, benchmark_RELEASE/ (SBD), source/, "
                   "unlabelled/, clips/).")
@click.option("--seed", default=0, show_default=True, help="The world is a pure function of the seed.")
@click.option("--size", default="small", show_default=True,
              type=click.Choice(["tiny", "small", "medium"]),
              help="small: the embedded default (minutes on a CPU); medium: ~4x; tiny: for tests.")
def synth(out, seed, size):
    """Generate the synthetic VOC-format world: VOC2007 (classification, detection), VOC2012
    (segmentation masks), a labelled source set (ImageNet stand-in), an unlabelled pool and
    video clips with sound (for tracking and sound)."""
    from .data.synthetic.world import generate_world
    from .runner import progress_bar

    path = generate_world(Path(out), seed=seed, size=size, progress=progress_bar)
    click.echo(f"synthetic world (seed {seed}, size {size}) written to {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
