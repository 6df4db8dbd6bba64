"""Redis key names of published versions, all under one hash tag."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["classifier", "policy"]
KINDS: tuple[Kind, ...] = ("classifier", "policy")
DEFAULT_NAMESPACE = "tw"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def check_version(version: str) -> str:
    """Return ``version``; raise ValueError unless it is 1-128 letters, digits or ``._+-``."""
    if not _VERSION.match(version):
        raise ValueError(
            f"invalid version {version!r}: use 1 to 128 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
    return version


@dataclass(frozen=True)
class DistributionKeys:
    """Key names in one namespace; ``{namespace}`` is the Redis Cluster hash tag."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def prefix(self) -> str:
        return f"{{{self.namespace}}}"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:published"

    def current(self, kind: Kind) -> str:
        return f"{self.prefix}:{kind}:current"

    def version(self, kind: Kind, version: str) -> str:
        return f"{self.prefix}:{kind}:v:{version}"

    def versions(self, kind: Kind) -> str:
        return f"{self.prefix}:{kind}:versions"
