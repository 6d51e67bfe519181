"""Builds the `trust` executable from trust/cli/console.c; everything else is in pyproject.toml.

The executable is C so that a command handed to `trust agent` does not wait for a Python
interpreter to start (docs/runtime.md, "The agent"); what it does not hand over it runs through
`trust-python`, the console script of `trust.cli.console`. Without a C compiler, `trust` is a
Python script that does the same as `trust-python`, only ~15 ms slower through an agent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# isort: split
# setuptools has no build_scripts of its own: it runs distutils' (the copy it carries, once imported)
from distutils.command.build_scripts import build_scripts

SOURCE = Path("trust/cli/console.c")
PYTHON_STAND_IN = "#!python\nfrom trust.cli.console import console\n\nconsole()\n"
"""`trust` where nothing compiles C: the console script pip would have written."""


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', Path("trust/__init__.py").read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit("setup.py: no __version__ in trust/__init__.py")
    return match.group(1)


class BuildExecutable(build_scripts):  # type: ignore[misc]
    """Compiles `trust` into the scripts folder (distutils would read a binary as a Python script,
    and `install_scripts` installs whatever that folder holds)."""

    def run(self) -> None:
        build_dir = Path(self.build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        executable = build_dir / "trust"
        executable.unlink(missing_ok=True)
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        command = [compiler or "cc", "-O2", "-std=c11", "-Wall", "-Wextra",
                   f'-DTRUST_VERSION="{version()}"', "-o", str(executable), str(SOURCE)]  # fmt: skip
        if compiler is None or subprocess.run(command, check=False).returncode != 0:
            print("setup.py: no C compiler built trust/cli/console.c: `trust` is a Python script", flush=True)
            executable.write_text(PYTHON_STAND_IN)  # pip writes the interpreter into `#!python`
        executable.chmod(0o755)


class BuildPy(build_py):
    """build_py, then the executable: `pip install -e` (editable) runs build_py, not build_scripts."""

    def run(self) -> None:
        super().run()
        self.run_command("build_scripts")


if __name__ == "__main__":  # as setuptools runs it; tests/test_console.py imports it
    setup(scripts=[str(SOURCE)], cmdclass={"build_scripts": BuildExecutable, "build_py": BuildPy})
