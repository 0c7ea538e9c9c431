"""deploy/install.sh's link step (deploy/link-command.sh), run into a temporary directory.

The real step links /usr/local/bin/shardd as root; SHARDD_BIN_DIR points it
at tmp_path here, so the machine's own link is never touched.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import ROOT

SCRIPT = ROOT / "deploy" / "link-command.sh"
TARGET = ROOT / ".venv" / "bin" / "shardd"


def link(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SHARDD_BIN_DIR": str(bin_dir)},
    )


def test_link_step_puts_shardd_on_the_path_and_says_so(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # missing: made
    result = link(bin_dir)
    assert result.returncode == 0, result
    assert result.stdout == f"install: linked {bin_dir}/shardd to {TARGET}\n", result
    assert os.readlink(bin_dir / "shardd") == str(TARGET)
    # a new shell finds the command by its PATH alone
    shell = subprocess.run(
        ["sh", "-c", "shardd --version && shardd status --port 1"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert shell.stdout.startswith("shardd "), shell
    assert shell.returncode == 1, shell  # no server on port 1: the command ran
    assert "no shardd is running here" in shell.stderr, shell

    again = link(bin_dir)
    assert again.returncode == 0, again
    assert again.stdout == f"install: {bin_dir}/shardd already links to {TARGET}\n"


def test_link_step_repoints_an_old_link(tmp_path: Path) -> None:
    (tmp_path / "shardd").symlink_to("/opt/old-checkout/.venv/bin/shardd")
    result = link(tmp_path)
    assert result.returncode == 0, result
    assert "it linked to /opt/old-checkout/.venv/bin/shardd" in result.stdout, result
    assert os.readlink(tmp_path / "shardd") == str(TARGET)


def test_link_step_leaves_a_file_that_is_not_a_link_and_warns(tmp_path: Path) -> None:
    theirs = tmp_path / "shardd"
    theirs.write_text("#!/bin/sh\necho someone else's shardd\n")
    result = link(tmp_path)
    assert result.returncode == 0, result
    assert result.stdout == ""
    assert "exists and is not a link; left as it is" in result.stderr, result
    assert not theirs.is_symlink()
    assert theirs.read_text() == "#!/bin/sh\necho someone else's shardd\n"


def test_install_sh_installs_a_telnet_client_without_test_and_runs_the_link_step() -> None:
    """The base install brings the client the Quick start tries the server with."""
    script = (ROOT / "deploy" / "install.sh").read_text()
    base = script.split('if [ "$with_test" = 1 ]', 1)[0]
    assert "inetutils-telnet" in base
    assert "sh deploy/link-command.sh" in script
    assert subprocess.run(["sh", "-n", str(ROOT / "deploy" / "install.sh")]).returncode == 0
