"""MLflow tracker: one MLflow run per result.

On when ``BENCHHARNESS_MLFLOW_URI`` is set to a tracking URI (``sqlite:///PATH.db``, a folder,
or a server's ``http://``); needs the ``mlflow`` package. Runs go to the experiment
``$BENCHHARNESS_MLFLOW_EXPERIMENT`` (default ``benchharness``), named ``<method> <task>
<protocol> seed <k>``, with the result's tags (:func:`benchharness.trackers.tags`), its numbers
as metrics (:func:`benchharness.trackers.scalars`) and the status FINISHED or FAILED. It uses an
``MlflowClient`` of its own and never touches MLflow's active run.
"""

from __future__ import annotations

import os
import time

from benchharness import hookimpl
from benchharness.trackers import MLFLOW_EXPERIMENT, require, run_name, scalars, setting, tags

_CLIENTS: dict[str, object] = {}
_ERROR_TAG_LIMIT = 5000  # MLflow caps tag values; the full error is in the result's log


@hookimpl
def benchharness_on_result(result):
    """Record ``result`` as a finished (or failed) MLflow run."""
    uri = setting("mlflow")
    if uri is None:
        return
    require("mlflow", "mlflow", "mlflow")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    if uri not in _CLIENTS:  # a client (and its database connection) per URI, kept
        _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    client = _CLIENTS[uri]
    name = os.environ.get(MLFLOW_EXPERIMENT) or "benchharness"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run_tags = tags(result)
    if result.get("error"):
        run_tags["error"] = str(result["error"])[:_ERROR_TAG_LIMIT]
    run = client.create_run(experiment_id, tags=run_tags, run_name=run_name(result))
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in scalars(result).items()]
    if metrics:
        client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id, status="FINISHED" if result.get("status") == "ok" else "FAILED")
