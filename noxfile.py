"""Developer sessions: ``nox -s tests lint typecheck`` is what CI runs.

``nox -l`` lists them all. Interpreters that are missing are skipped, not
failed, so ``nox -s tests`` works on a machine with any subset of 3.10-3.13.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
ROOT = Path(__file__).parent

# pyenv installs every version but puts only the global one behind its shims;
# make the others findable so `tests` really runs on all that are installed.
_pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
for _bin in sorted(glob.glob(os.path.join(_pyenv_root, "versions", "3.1[0-9]*", "bin"))):
    if _bin not in os.environ.get("PATH", ""):
        os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


def _install_with_tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest, pytest-trio, hypothesis)."""
    _install_with_tests(session)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library, then the typing tests (which must also fail where expected)."""
    _install_with_tests(session)
    # mypy checks as Python 3.10 (pyproject), whose dependencies include the
    # exceptiongroup and tomli backports; this interpreter does not install them by itself.
    session.install("mypy>=1.10", "exceptiongroup>=1.2", "tomli>=2")
    session.run("mypy", "--strict", "trioscope")
    session.run("pytest", "-q", "tests/type_tests")


@nox.session(python="3.11")
def soak(session: nox.Session) -> None:
    """The slow tests only: the foundation under a long steady load, its memory curve
    printed (-s), failing on growth. Count-bounded; about 1.5 minutes here."""
    _install_with_tests(session)
    session.run("pytest", "-m", "slow", "-s", *session.posargs)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Run the demos: a supervised application that crashes and recovers, the foundation,
    then the whole foundation observing an application (crash trail, metrics)."""
    session.install(".")
    session.run("python", "examples/supervised_app.py", *session.posargs)
    session.run("python", "examples/foundation_app.py")
    session.run("python", "examples/observed_app.py")


@nox.session(python="3.13")
def bench(session: nox.Session) -> None:
    """Benchmarks against the raw-Trio floor and triotp 0.3.1, measured in one run."""
    session.install(".", "triotp==0.3.1")
    session.run("python", "bench/run.py", *session.posargs)
