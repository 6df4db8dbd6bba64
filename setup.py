"""Build hook that puts the default policy into the router package of every wheel.

The policy stays at policies/default.yaml beside the packages, where the checkout and the
container images use it. A wheel contains only packages, so this step copies the file to
router/bundled_policies/default.yaml, where router/settings.py looks when no checkout
is around it. Everything else is configured in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

POLICY_SOURCE = Path("policies") / "default.yaml"
POLICY_TARGET = Path("router") / "bundled_policies" / "default.yaml"


class BuildPyWithPolicy(build_py):
    """The standard build_py step, plus a copy of the default policy into the router package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / POLICY_TARGET
        self.mkpath(str(target.parent))
        self.copy_file(str(POLICY_SOURCE), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / POLICY_TARGET)]


setup(cmdclass={"build_py": BuildPyWithPolicy})
