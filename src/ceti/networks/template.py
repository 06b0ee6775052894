"""Command templates: an operator's command line with `{placeholder}` fields, filled with checked values.

A workload's command is a list of arguments run without a shell, so the danger is not shell injection but a value
that changes what the program does: a value starting with `-` read as an option, a path that leaves the working
directory, a space or newline that a wrapper script splits. Templates are checked when they are configured
(unknown placeholders, format specs and attribute access are refused) and values when they are filled (a narrow
character set, no leading `-`). Nothing here is specific to one network; the Render adapter uses it too.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence

from ceti.networks.base import NetworkError

SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/#:+=@-]*$")
FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def placeholders(template: Sequence[str]) -> set[str]:
    """The placeholder names a template uses; a `NetworkError` for anything but plain `{name}` fields."""
    if isinstance(template, str) or not template:
        raise NetworkError("a command template is a non-empty list of arguments")
    names: set[str] = set()
    for arg in template:
        if not isinstance(arg, str):
            raise NetworkError(f"command template argument {arg!r} is not a string")
        try:
            parsed = list(string.Formatter().parse(arg))
        except ValueError as exc:
            raise NetworkError(f"command template argument {arg!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if not FIELD_RE.match(name) or spec or conversion:
                raise NetworkError(f"command template argument {arg!r}: only plain {{name}} placeholders are "
                                   f"allowed, not {{{name}{'!' + conversion if conversion else ''}"
                                   f"{':' + spec if spec else ''}}}")
            names.add(name)
    return names


def check_template(template: Sequence[str], allowed: Iterable[str], required: Iterable[str] = ()) -> tuple[str, ...]:
    """A template that uses only `allowed` placeholders and all of `required`, as a tuple."""
    allowed = set(allowed)
    used = placeholders(template)
    unknown = sorted(used - allowed)
    if unknown:
        raise NetworkError(f"command template uses unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}"
                           f"; known: {', '.join('{' + a + '}' for a in sorted(allowed))}")
    missing = sorted(set(required) - used)
    if missing:
        raise NetworkError(f"command template must use {', '.join('{' + m + '}' for m in missing)}")
    return tuple(template)


def check_value(name: str, value: object) -> str:
    text = str(value)
    if not SAFE_VALUE_RE.match(text) or ".." in text.split("/"):
        raise NetworkError(f"{name} {text!r} is not safe in a command line: use letters, digits and . _ / # : + = @ -, "
                           f"not starting with '-' or '.', without '..' parts")
    return text


def fill(template: Sequence[str], values: Mapping[str, object]) -> list[str]:
    """The command line: every placeholder replaced by its checked value."""
    used = placeholders(template)
    missing = sorted(used - set(values))
    if missing:
        raise NetworkError(f"no value for placeholder(s) {', '.join('{' + m + '}' for m in missing)}")
    safe = {name: check_value(name, values[name]) for name in used}
    return [arg.format_map(safe) for arg in template]
