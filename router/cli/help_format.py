"""Two corrections to Typer's rich help output.

Typer 0.29.2 shows every option's type in its rich help panels, flags included, so
``--help``, ``--version`` and ``--local-model / --no-local-model`` appear as if they took a
``<bool>`` value. Typer's plain help (``TyperOption.get_help_record``) already leaves the
type out for flags and counters, and :func:`hide_flag_placeholders` makes the rich panels do
the same.

Typer 0.29.2 also keeps the line breaks of a command's docstring after its first paragraph,
so in an 80-column terminal each source line wraps on its own and the text is ragged.
:func:`reflow_help_paragraphs` joins those lines, as Typer already does for the first
paragraph and for option help. A paragraph that starts with ``\b`` keeps its line breaks,
and an ``Example:`` command is broken into lines with `` \\`` continuations.
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
        return "\n\n".join(_reflow(paragraph) for paragraph in paragraphs)

    setattr(join_lines, _PATCHED_ATTRIBUTE, True)
    rich_utils._fix_linebreaks = join_lines


EXAMPLE_PREFIX = "Example:"
EXAMPLE_LINE_WIDTH = 70
"""Maximum line length of a command in an ``Example:`` paragraph, so that it fits 80 columns."""


def _reflow(paragraph: str) -> str:
    """Join a paragraph's lines, or lay out an ``Example:`` command on lines of its own."""
    if paragraph.startswith("\b"):
        return paragraph
    if paragraph.startswith(EXAMPLE_PREFIX):
        return f"{EXAMPLE_PREFIX}\n\n" + format_example(paragraph[len(EXAMPLE_PREFIX):])
    return paragraph.replace("\n", " ")


def format_example(command: str, width: int = EXAMPLE_LINE_WIDTH) -> str:
    """Break a shell command into lines of at most ``width`` characters, joined by `` \\``.

    Lines break only at spaces outside quotes, so the printed lines paste into a shell as
    the same command. A word longer than ``width`` gets a line of its own, which the
    terminal may still wrap.
    """
    lines: list[str] = []
    line = ""
    for word in _shell_words(command):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return " \\\n".join(lines)


def _shell_words(command: str) -> list[str]:
    """Split ``command`` at runs of white space outside single and double quotes."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    for char in command:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words
