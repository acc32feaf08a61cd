"""Prefect flows over the DVC pipeline: dvc.yaml stays the single source of the DAG.

- ``flows.dag``: the stage graph read with DVC's Python API (what to run, in which order).
- ``flows.pipeline``: ``dvc_pipeline``, one Prefect task per stage (``dvc --wait-for-lock repro --single-item``),
  run in parallel on threads or a Dask cluster.
- ``flows.fanout``: ``classprune_fanout``, scenarios x seeds (x datasets), metrics and figure as artifacts.
- ``flows.serve``: the fan-out as a served deployment, started and re-parameterised from the Prefect UI.

Importing this package points PREFECT_HOME at the project's .prefect/ when it is unset (before Prefect is
imported), so runs started outside ``make`` land in the same database that ``make ui`` shows.
"""
import os
from pathlib import Path

os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parents[1] / ".prefect"))
