"""What an installed denoise looks like from outside the clone."""

import subprocess
import sys


def test_installed_import_names_are_the_projects_own(tmp_path):
    """pip puts denoise.engine and denoise.cli into site-packages, never the
    generic top-level names engine and cli (run outside the clone, where the
    folders themselves are not on the path)."""
    code = ("import importlib.util as u; print(u.find_spec('engine'), u.find_spec('cli')); "
            "from denoise.engine import Batch, BatchOptions, plan_jobs; "
            "from denoise.cli.main import main; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "ok"]
