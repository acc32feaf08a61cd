"""Prefect flows over the DVC pipeline: dvc.yaml stays the single source of the DAG.

- ``flows.dag``: the stage graph read with DVC's Python API (what to run, in which order).
- ``flows.pipeline``: ``dvc_pipeline``, one Prefect task per stage (``dvc --wait-for-lock repro --single-item``),
  run in parallel on threads or a Dask cluster.
- ``flows.fanout``: ``classprune_fanout``, scenarios x seeds (x datasets), metrics published as artifacts.
"""
