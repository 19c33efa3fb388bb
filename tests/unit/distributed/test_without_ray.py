"""Everything but ``--ray`` works without Ray: nothing else imports it."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_server_and_options_do_not_import_ray() -> None:
    code = (
        "import sys\n"
        "import inferno, inferno.cli, inferno.serving.app, inferno.serving.server, inferno.distributed\n"
        "from inferno.distributed import RayOptions\n"
        "RayOptions(replicas=2)\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
