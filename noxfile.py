"""Nox sessions for the sl monorepo.

``nox`` with no arguments runs everything CI needs: lint, typecheck, each package's
tests alone with sl-core, the combos (all packages together), the registry fixture
plugins and the parity check against the JAX reference.

Every virtualenv installs torch first from ``SL_TORCH_SPEC`` (default
``torch==2.13.0``, the CPU wheel held on the development machines; a bare ``torch``
requirement pulls a multi-GB CUDA build). Override it elsewhere, e.g.
``SL_TORCH_SPEC="torch==2.13.0+cu126" nox``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ["sl-core", "sl-dsp", "sl-attention", "sl-recurrent", "sl-conv"]
PLUGINS = PACKAGES[1:]
TORCH_SPEC = os.environ.get("SL_TORCH_SPEC", "torch==2.13.0")
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider", "-n", "auto", "--durations=10"]

nox.options.sessions = ["lint", "typecheck", "tests", "combos", "registry_fixtures", "parity"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


def _install_torch(session: nox.Session) -> None:
    session.install(TORCH_SPEC)


def _pkg(name: str) -> str:
    return str(ROOT / "packages" / name)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) over the whole tree."""
    session.install("ruff==0.17.6")  # pinned: newer releases change what `format --check` covers (Markdown code blocks)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over every package's sources."""
    _install_torch(session)
    session.install("mypy>=1.10", *[_pkg(p) for p in PACKAGES])
    mypypath = os.pathsep.join(str(ROOT / "packages" / p / "src") for p in PACKAGES)
    modules = ["sl"] + [p.replace("-", "_") for p in PLUGINS]
    args = [arg for m in modules for arg in ("-p", m)]
    session.run("mypy", *args, env={"MYPYPATH": mypypath})


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package's tests, installed alone with sl-core (plugins never see siblings)."""
    _install_torch(session)
    reqs = [f"{_pkg('sl-core')}[test]"]
    if package != "sl-core":
        reqs.append(f"{_pkg(package)}[test]")
    session.install(*reqs)
    session.run(*PYTEST, f"packages/{package}/tests", *session.posargs)


@nox.session
def combos(session: nox.Session) -> None:
    """Every package together: cross-package tests and the examples."""
    _install_torch(session)
    session.install(*[f"{_pkg(p)}[test]" for p in PACKAGES])
    paths = ["tests"] + (["examples"] if any((ROOT / "examples").glob("test_*.py")) else [])
    session.run(*PYTEST, *paths, *session.posargs)


@nox.session
def registry_fixtures(session: nox.Session) -> None:
    """Real installed fixture plugins: one broken, one clashing, one third-party."""
    _install_torch(session)
    fixtures = sorted(str(p) for p in (ROOT / "packages/sl-core/tests/fixtures").glob("sl-fixture-*"))
    session.install(f"{_pkg('sl-core')}[test]", *fixtures)
    session.run(*PYTEST, "packages/sl-core/tests/registry_fixtures", *session.posargs)
    session.run("python", "-m", "sl", "plugins")
    session.run("python", "-m", "sl", "check", "thirdparty")


@nox.session
def parity(session: nox.Session) -> None:
    """Layer-by-layer agreement with the JAX reference (sequence-layers 0.2 from PyPI)."""
    _install_torch(session)
    session.install("sequence-layers==0.2", *[_pkg(p) for p in PACKAGES])
    output = session.posargs[0] if session.posargs else "docs/parity.md"
    session.run("python", "parity/run_parity.py", "--output", output)


@nox.session
def bench(session: nox.Session) -> None:
    """sl beside plain torch.nn and the JAX reference (``benchmarks/run.py``; not in the default run).

    ``nox -s bench -- --quick`` for a smoke run; other arguments go to ``benchmarks/run.py``
    (``--workloads``, ``--threads``, ``--markdown FILE``).
    """
    _install_torch(session)
    session.install("sequence-layers==0.2", f"{_pkg('sl-core')}[onnx]", *[_pkg(p) for p in PLUGINS])
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Trains the streaming speech enhancer briefly, streams 10 s of audio live, writes a figure."""
    _install_torch(session)
    session.install(f"{_pkg('sl-core')}[demo]", *[_pkg(p) for p in PLUGINS])
    session.run("python", "examples/demo.py", *session.posargs)
