"""Where the tests find shared material (the repository sits beside ../shared/) and the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLX5 = Path(os.environ.get("MBO_SAMPLE_DBN", REPO.parent / "shared" / "data" / "CLX5_mbo.dbn"))
#: The installed `mbo` console script of the environment running the tests.
MBO = str(Path(sys.executable).parent / "mbo")
