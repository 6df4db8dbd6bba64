"""Two corrections to Typer's rich help output.

Typer 0.29.2 shows every option's type in its rich help panels, flags included, so
``--help``, ``--version`` and ``--local-model / --no-local-model`` appear as if they took a
``<bool>`` value. Typer's plain help (``TyperOption.get_help_record``) already leaves the
type out for flags and counters, and :func:`hide_flag_placeholders` makes the rich panels do
the same.

Typer 0.29.2 also keeps the line breaks of a command's docstring after its first paragraph,
so in an 80-column terminal each source line wraps on its own and the text is ragged.
:func:`reflow_help_paragraphs` joins those lines, as Typer already does for the first
paragraph and for option help. A paragraph that starts with ``\b`` keeps its line breaks.
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


def reflow_help_paragraphs() -> None:
    """Make Typer's rich help join the lines of each docstring paragraph. Safe to call twice.

    Does nothing when the installed Typer has no ``rich_utils._fix_linebreaks``.
    NOTE: only Typer 0.29.2 was checked.
    """
    try:
        from typer import rich_utils
    except ImportError:
        return
    fix_linebreaks = getattr(rich_utils, "_fix_linebreaks", None)
    if fix_linebreaks is None or getattr(fix_linebreaks, _PATCHED_ATTRIBUTE, False):
        return

    def join_lines(paragraphs: list[str], markup_mode: Any) -> str:
        if markup_mode == "markdown":
            return fix_linebreaks(paragraphs, markup_mode)
        joined = [paragraph if paragraph.startswith("\b") else paragraph.replace("\n", " ")
                  for paragraph in paragraphs]
        return "\n\n".join(joined)

    setattr(join_lines, _PATCHED_ATTRIBUTE, True)
    rich_utils._fix_linebreaks = join_lines
