"""Time to shell per real client: a measuring script, not a test.

Starts ``shardd serve`` (one process, ``--connect-maxwait 4``) with the
``timed`` shell of ``tests.shells_for_tests``, which records how long after
``connection_made`` it started (the server's own clock), then runs each
installed client through a pty against it, one at a time, ``--runs`` times.

    .venv/bin/python tests/time_to_shell.py [--runs 5] [--json]

Prints a table: client, median and max time to shell in ms (from the
connection), the median from the client's first byte (TinTin++ reads nothing
for 100 ms after it connects), and what the server saw (TERM, encoding).
Clients that are not installed are skipped. ``--root`` runs another
checkout's shardd with these helpers copied in, to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, ServerProcess

VENV_BIN = Path(sys.executable).parent


def _which(name: str, *extra: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *extra]))


def clients(port: int) -> dict[str, list[str] | None]:
    """Each client's command line, None when it is not installed."""
    tt = _which("tt++", "/usr/games")
    tf = _which("tf5") or _which("tf")
    telnet = _which("telnet")
    busybox = _which("busybox")
    plink = _which("plink")
    telnet_ssl = _which("telnet-ssl")
    tl3 = VENV_BIN / "telnetlib3-client"
    p = str(port)
    return {
        "TinTin++": [tt, "-e", f"#session s 127.0.0.1 {p}"] if tt else None,
        "tf": [tf, "-f", "127.0.0.1", p] if tf else None,
        "inetutils-telnet": [telnet, "127.0.0.1", p] if telnet else None,
        "telnetlib3 client": [str(tl3), "127.0.0.1", p] if tl3.exists() else None,
        "busybox telnet": [busybox, "telnet", "127.0.0.1", p] if busybox else None,
        "plink": [plink, "-telnet", "-P", p, "127.0.0.1"] if plink else None,
        "telnet-ssl": [telnet_ssl, "127.0.0.1", p] if telnet_ssl else None,
    }


def _records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def measure(command: list[str], log: Path, timeout: float = 10.0) -> dict[str, object]:
    before = len(_records(log))
    child = pexpect.spawn(
        command[0],
        command[1:],
        env={
            **os.environ,
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "HOME": tempfile.gettempdir(),
        },
        dimensions=(24, 80),
        timeout=timeout,
    )
    try:
        deadline = time.monotonic() + timeout
        while len(_records(log)) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[0]}: no shell within {timeout}s")
            try:
                child.read_nonblocking(65536, timeout=0.02)
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                raise RuntimeError(f"{command[0]} exited: {child.before!r}") from None
        return _records(log)[before]
    finally:
        child.close(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="one more argument for shardd serve (repeat it), e.g. --serve-arg=--compression",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the checkout whose shardd to run (e.g. an older one, unpacked with git archive)",
    )
    args = parser.parse_args()
    if args.root.resolve() != ROOT:
        # the shell and protocol that measure, into the other checkout's tests/
        for helper in ("shells_for_tests.py", "protocols_for_tests.py"):
            shutil.copy(ROOT / "tests" / helper, args.root / "tests" / helper)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "shells.jsonl"
        os.environ["SHARDD_TIMED_SHELL_LOG"] = str(log)
        server = ServerProcess(
            "--shell",
            "tests.shells_for_tests:timed",
            "--protocol",
            "tests.protocols_for_tests:FirstByteTimed",
            "--connect-maxwait",
            "4",
            *args.serve_arg,
            cwd=args.root,
        )
        results: dict[str, dict[str, object]] = {}
        try:
            for name, command in clients(server.port).items():
                if command is None:
                    results[name] = {"installed": False}
                    continue
                runs = [measure(command, log) for _ in range(args.runs)]
                times = [float(r["after"]) * 1000 for r in runs]  # type: ignore[arg-type]
                firsts = [float(r["after_first_byte"]) * 1000 for r in runs]  # type: ignore[arg-type]
                results[name] = {
                    "installed": True,
                    "median_ms": statistics.median(times),
                    "max_ms": max(times),
                    "first_byte_median_ms": statistics.median(firsts),
                    "TERM": runs[-1].get("TERM"),
                    "encoding": runs[-1].get("encoding"),
                }
        finally:
            server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{'client':<18} {'median ms':>10} {'max ms':>10} {'from 1st byte':>14}"
        "  TERM / encoding seen"
    )
    for name, r in results.items():
        if not r["installed"]:
            print(f"{name:<18} {'(not installed)':>21}")
            continue
        seen = f"{r['TERM']} / {r['encoding']}"
        print(
            f"{name:<18} {r['median_ms']:>10.1f} {r['max_ms']:>10.1f}"
            f" {r['first_byte_median_ms']:>14.1f}  {seen}"
        )


if __name__ == "__main__":
    main()
