"""Leave the value placeholder out of the help line of flags in Typer's rich help panels.

Typer 0.29.2 shows every option's type in its rich help panels, flags included, so
``--help``, ``--version`` and ``--local-model / --no-local-model`` appear as if they took a
``<bool>`` value. Typer's plain help (``TyperOption.get_help_record``) already leaves the
type out for flags and counters, and :func:`hide_flag_placeholders` makes the rich panels do
the same.
"""

from __future__ import annotations

from typing import Any

from typer import core

_PATCHED_ATTRIBUTE = "_tierwise_hides_flag_placeholders"


def hide_flag_placeholders() -> None:
    """Make Typer's rich help panels show no type for flags and counters. Safe to call twice.

    Does nothing when the installed Typer has no ``TyperOption.display_type_rich``.
    NOTE: only Typer 0.29.2 was checked. Another version may render flags in another way.
    """
    option_class: Any = getattr(core, "TyperOption", None)
    display_type_rich = getattr(option_class, "display_type_rich", None)
    if display_type_rich is None or getattr(display_type_rich, _PATCHED_ATTRIBUTE, False):
        return

    def display_type_unless_flag(self: Any, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return display_type_rich(self, ctx)

    setattr(display_type_unless_flag, _PATCHED_ATTRIBUTE, True)
    option_class.display_type_rich = display_type_unless_flag
