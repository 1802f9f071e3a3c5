"""Weights & Biases tracker: one W&B run per result.

On when ``BENCHHARNESS_WANDB_PROJECT`` names a project; needs the ``wandb`` package. W&B's own
settings apply (``WANDB_MODE=offline`` writes the run locally for a later ``wandb sync``,
``WANDB_ENTITY``...); ``BENCHHARNESS_WANDB_DIR`` says where its folders go. Each run is named
``<method> <task> <protocol> seed <k>``, grouped by method, its job type ``<task> <protocol>``,
its config the result's tags (:func:`benchharness.trackers.tags`), its summary the result's
numbers (:func:`benchharness.trackers.scalars`); a failed result's run ends with exit code 1.
"""

from __future__ import annotations

import os

from benchharness import hookimpl
from benchharness.trackers import WANDB_DIR, require, run_name, scalars, setting, tags


@hookimpl
def benchharness_on_result(result):
    """Log ``result`` as a W&B run of ``$BENCHHARNESS_WANDB_PROJECT``."""
    project = setting("wandb")
    if project is None:
        return
    wandb = require("wandb", "wandb", "wandb")
    config = tags(result)
    if result.get("error"):
        config["error"] = str(result["error"])
    # console="off": W&B must not take over the driver's stdout/stderr; no system-stats sampler
    settings = wandb.Settings(console="off", silent=True, x_disable_stats=True)
    run = wandb.init(project=project, name=run_name(result), group=str(result.get("method")),
                     job_type=f"{result.get('task')} {result.get('protocol')}", config=config,
                     dir=os.environ.get(WANDB_DIR) or None, reinit="create_new", settings=settings)
    try:
        numbers = scalars(result)
        if numbers:
            run.log(numbers)
            run.summary.update(numbers)
    finally:
        run.finish(exit_code=0 if result.get("status") == "ok" else 1)
