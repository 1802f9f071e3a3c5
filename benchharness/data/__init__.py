"""The data the harness reads, in three parts by who uses it.

- :mod:`~benchharness.data.voc`: PASCAL VOC as it lies on disk (the devkit readers, SBD, the
  classes, ``data check``, ``data fetch``, a data root's identity), read by the tasks and evaluators;
- :mod:`~benchharness.data.synthetic`: the generator of the synthetic world in that layout;
- :mod:`~benchharness.data.loading`: images and clips as training batches (decoded, cached or
  streamed; the batched transforms), shared by the methods and the tasks.

:mod:`~benchharness.data.datasets` names every dataset and where it lies under a data root.
"""
