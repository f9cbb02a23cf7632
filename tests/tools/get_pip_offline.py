"""Stand-in for pip's get-pip.py bootstrap script, for ansible-test.

ansible-test bootstraps pip into the virtualenvs of its sanity tests with get-pip.py, which it
downloads from a host these machines cannot reach. This script does the same job from a pip
wheel fetched from PyPI by ``scripts/testground.sh`` (stored next to this file's installed copy):
it puts the wheel on sys.path and runs ``pip install --upgrade --force-reinstall`` with the
arguments ansible-test passes, honouring get-pip's own ``--no-setuptools`` / ``--no-wheel`` flags.
"""

import glob
import os
import sys


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    wheels = sorted(glob.glob(os.path.join(here, "pip-*.whl")))
    if not wheels:
        sys.exit(f"no pip wheel next to {__file__}: run scripts/testground.sh ansible-test")
    sys.path.insert(0, wheels[-1])
    from pip._internal.cli.main import main as pip_main

    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    sys.exit(pip_main(["install", "--upgrade", "--force-reinstall", *args]))


if __name__ == "__main__":
    main()
