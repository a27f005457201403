"""Peer libraries the benchmarks compare against, each in a benchmark-only virtualenv.

ChannelAttribution (PyPI ``channelattribution``, GPL-3) must never be a dependency of crmbook: it
is installed only into ``benchmarks/.peers-venv/`` (git-ignored), made on demand with
``python3.11 -m venv`` and ``pip install`` of PACKAGES, and reused while it still imports. The
peer's code runs in a fresh process of that venv's interpreter and nothing of it is imported
here. When the venv cannot be made (no python3.11, no network, no wheel), :func:`ensure` says why
and the benchmark falls back to its quoted figures.

PACKAGES: ChannelAttribution pinned (the baseline's version is part of the result), pandas (its
input is a DataFrame), pyarrow (to read the Parquet input the benchmark writes) and matplotlib
(ChannelAttribution 2.2.5 imports it at import time without declaring it).

lifetimes (PyPI ``lifetimes``, archived, MIT) must never be a dependency of crmbook either: it gets
its own venv ``benchmarks/.peers-venv-lifetimes/`` the same way, because it breaks with pandas 3
(PACKAGES: lifetimes pinned, ``pandas<3``; numpy, scipy and autograd come with it). Each peer is a
:class:`Peer` (venv folder, packages, probe); :func:`ensure` takes one, ChannelAttribution by default.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = "python3.11"
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class Peer:
    """One peer library: its venv folder, what pip installs there, and a probe that imports the
    packages and prints their versions as a JSON object."""
    name: str
    venv: Path
    packages: tuple[str, ...]
    probe: str


CHANNELATTRIBUTION = Peer("ChannelAttribution", HERE / ".peers-venv",
                          ("channelattribution==2.2.5", "pandas", "pyarrow", "matplotlib"), """
import json, importlib.metadata as m
import pandas, pyarrow
import ChannelAttribution
print(json.dumps({name: m.version(name) for name in ("ChannelAttribution", "pandas", "pyarrow")}))
""")
LIFETIMES = Peer("lifetimes", HERE / ".peers-venv-lifetimes", ("lifetimes==0.11.3", "pandas<3"), """
import json, importlib.metadata as m
import numpy, pandas, scipy, autograd
from lifetimes import BetaGeoFitter
print(json.dumps({name: m.version(name) for name in ("lifetimes", "pandas", "numpy", "scipy", "autograd")}))
""")
VENV, PACKAGES, PROBE = CHANNELATTRIBUTION.venv, CHANNELATTRIBUTION.packages, CHANNELATTRIBUTION.probe


def peer_env() -> dict:
    """The environment of a peer process: nothing of crmbook's interpreter leaks into it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _probe(peer: Peer) -> dict | None:
    """The peer packages' versions if the venv imports them, else None."""
    python = _python(peer.venv)
    if not python.exists():
        return None
    try:
        out = subprocess.run([str(python), "-c", peer.probe], capture_output=True, text=True, env=peer_env(), timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _tail(text: str, lines: int = 1) -> str:
    """The last lines of a failed command's output, on one line (it ends up in a table cell)."""
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip()).replace("|", "/")


def ensure(peer: Peer = CHANNELATTRIBUTION, log=print) -> tuple[Path | None, dict | str]:
    """(the venv's python, the peer packages' versions) when the venv works, making or repairing it
    first if needed; else (None, why not). Reused as is when it already imports the packages."""
    venv, packages = peer.venv, peer.packages
    versions = _probe(peer)
    if versions is not None:
        return _python(venv), versions
    try:
        if not _python(venv).exists():
            base = shutil.which(PYTHON)
            if base is None:
                return None, f"{PYTHON} not found"
            log(f"making the peer venv {venv} ({PYTHON} -m venv) ...")
            made = subprocess.run([base, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True,
                                  env=peer_env(), timeout=300)
            if made.returncode:
                return None, f"{PYTHON} -m venv failed: {_tail(made.stderr)}"
        log(f"installing {' '.join(packages)} into {venv} ...")
        installed = subprocess.run([str(_python(venv)), "-m", "pip", "install", "--quiet", "--timeout", "30", "--retries", "1",
                                    *packages], capture_output=True, text=True, env=peer_env(),
                                   timeout=INSTALL_TIMEOUT_S)
        if installed.returncode:
            log(installed.stderr[-3000:] or installed.stdout[-3000:])
            return None, f"pip install failed ({_tail(installed.stderr or installed.stdout)})"
    except subprocess.TimeoutExpired as exc:
        return None, f"{exc.cmd[0]} timed out after {exc.timeout:.0f} s"
    except OSError as exc:
        return None, f"cannot make the peer venv: {exc}"
    versions = _probe(peer)
    if versions is None:
        return None, f"the peer venv was made but does not import {peer.name} and its packages"
    return _python(venv), versions


def run(python: Path, code: str, *args, timeout: float | None = None) -> dict:
    """Run ``code`` in a fresh process of the peer venv's interpreter; its last output line is a
    JSON object (ChannelAttribution prints a banner on import before it)."""
    out = subprocess.run([str(python), "-c", code, *map(str, args)], capture_output=True, text=True,
                         env=peer_env(), timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"peer benchmark failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
