"""The one code location, built the `dg` way: everything under ``fraud_assets/defs/``.

``dagster dev``, ``dg dev``, ``dg check defs``, the root ``definitions.py`` and
the ``fraud-assets`` CLI all load this one object.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
