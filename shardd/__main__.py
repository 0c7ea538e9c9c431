import os
import sys

# `python -m shardd` puts the current directory first on sys.path. An
# operator's project there may have a `workers/` package of its own, which
# would shadow ours: the current directory is searched last instead
# (workers/loader.py puts it back, at the end, for --shell module:callable).
_source_root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_cwd = os.getcwd()
if (
    sys.path
    and os.path.abspath(sys.path[0] or ".") == _cwd
    and os.path.realpath(_cwd) != _source_root
):
    del sys.path[0]

from shardd.cli import main  # noqa: E402 - after the path is settled

sys.exit(main())
