"""The one strict loader: TOML/JSON tables -> frozen dataclasses, checked against their types.

Recipes (``codesign.config``, ``codesign.recipe``), hardware (``codesign.hw.arch``) and energy
tables (``codesign.hw.energy``) all load through ``from_dict``: every field's value is checked
against the field's type annotation, so the dataclass definitions are the schema.

- ``bool`` takes true/false only; ``int`` an integer (not a bool, not 1.0); ``float`` an
  integer or a float that is finite (NaN and inf are never a setting); ``str`` a string.
- ``tuple[X, ...]`` takes an array (a string is not iterated as characters), each item an X.
- ``X | None``: None (JSON null) or an X. ``Literal[...]``: one of the values, exact type.
- a dataclass: a table, built recursively; unknown keys and missing required keys are errors
  that list the valid keys. A field's ``metadata["defaults"]`` fills keys its table leaves out
  (a recipe's ``[qat]`` takes the ``codesign qat`` settings).
- ``Annotated[X, Check(...)]`` adds a range: ``Annotated[int, at_least(1)]``.

Every error is one line: the TOML path, what was expected and what was found, e.g.
``digits.toml: variants[2].finetune.epochs: expected an integer >= 0, got 1.5``.
Cross-field rules stay in each class's ``__post_init__``; their errors get the table's path.
``check_fields`` runs the same checks on a spec built in code (CLI flags, the search), so a
``TrainSpec(lr=nan)`` fails the same way from anywhere.

Why not pydantic v2 (measured with 2.14): strict mode refuses the list a TOML array gives for a
``tuple`` field; lax mode turns ``true`` and ``1.0`` into ``1`` and ``"3"`` into ``3``; NaN
passes unless every model opts out; errors are several lines with a URL and do not list the
valid keys, so making them one line with the keys needs a walk over the schema anyway, which
is most of this module. This checker (under 300 lines, TOML reading included) keeps the
specs plain stdlib frozen dataclasses (``dataclasses.replace``/``fields``/``asdict`` unchanged)
and adds no dependency.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from codesign.errors import CodesignError, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

T = TypeVar("T")
Error = type[CodesignError]
# A location that ends like a file name is followed by ": ", every other one by ".".
FILE_SUFFIXES = (".toml", ".json")


@dataclasses.dataclass(frozen=True)
class Check:
    """A range on one field, attached with ``Annotated``; ``text`` follows the type's name."""

    ok: Callable[[Any], bool]
    text: str


def at_least(low: float) -> Check:
    return Check(lambda value: value >= low, f">= {low}")


def above(low: float) -> Check:
    return Check(lambda value: value > low, f"> {low}")


def between(low: float, high: float, text: str) -> Check:
    """Inclusive range; ``text`` says it the way users read it ("from 2 to 8", "in [0, 1]")."""
    return Check(lambda value: low <= value <= high, text)


NOT_EMPTY = Check(lambda value: len(value) > 0, "(at least one)")
NOT_BLANK = Check(lambda value: bool(value.strip()), "(not blank)")

Count = Annotated[int, at_least(0)]
PositiveInt = Annotated[int, at_least(1)]
PositiveFloat = Annotated[float, above(0)]
NonNegativeFloat = Annotated[float, at_least(0)]


def at(where: str, key: str | int) -> str:
    """The location of ``key`` inside ``where``: ``r.toml: data``, ``data.source``, ``v[0]``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if not where:
        return key
    return f"{where}: {key}" if where.endswith(FILE_SUFFIXES) else f"{where}.{key}"


def show(value: Any) -> str:
    """A value as the error message quotes it (TOML spelling for booleans)."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(hint: Any, plural: bool = False) -> str:
    """What ``hint`` accepts, in words ("an integer >= 1", "one of 'ws', 'os'")."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return f"{describe(args[0], plural)} {' '.join(c.text for c in args[1:])}"
    if origin in (Union, types.UnionType):
        return describe(next(a for a in args if a is not type(None)), plural)
    if origin is Literal:
        return ("values among " if plural else "one of ") + ", ".join(map(repr, args))
    if origin is tuple:
        return f"an array of {describe(args[0], plural=True)}"
    if dataclasses.is_dataclass(hint):
        return "tables" if plural else "a table"
    names = {bool: "booleans", int: "integers", float: "finite numbers", str: "strings"}
    if plural:
        return names[hint]
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[
        hint
    ]


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass, ``Annotated`` ranges kept."""
    return get_type_hints(cls, include_extras=True)


def convert(
    value: Any,
    hint: Any,
    where: str,
    error: Error,
    defaults: Mapping[str, Any] | None = None,
    expected: str | None = None,
) -> Any:
    """``value`` checked against ``hint``: arrays become tuples, tables dataclasses.

    ``expected``: the words for the whole hint when an ``Annotated`` range wraps this one.
    """
    origin, args = get_origin(hint), get_args(hint)
    expected = expected or describe(hint)
    if origin is Annotated:
        converted = convert(value, args[0], where, error, defaults, expected)
        for check in args[1:]:
            if not check.ok(converted):
                raise error(f"{where}: expected {expected}, got {show(value)}")
        return converted
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only ``X | None`` is used
        return convert(value, inner, where, error, defaults, expected)
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(convert(v, args[0], at(where, i), error) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return from_dict(hint, {**(defaults or {}), **value}, where, error)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint in (bool, str):
        if isinstance(value, hint):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    else:  # a field type this loader has no rule for: a programming error, not a user's
        raise TypeError(f"{where}: no loading rule for type {hint!r}")
    raise error(f"{where}: expected {expected}, got {show(value)}")


def check_table(
    data: Any, valid: Any, where: str, error: Error, required: Any = ()
) -> Mapping[str, Any]:
    """``data`` if it is a table whose keys are all in ``valid`` and include ``required``."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a table, got {show(data)}")
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise error(
            f"unknown key {at(where, unknown[0])}: valid keys are {', '.join(sorted(valid))}"
        )
    missing = sorted(set(required) - set(data))
    if missing:
        raise error(
            f"missing key {at(where, missing[0])}: give all of {', '.join(sorted(required))}"
        )
    return data


def from_dict(cls: type[T], data: Any, where: str, error: Error = ConfigError) -> T:
    """Build dataclass ``cls`` from a table; every error names the path ``where``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    check_table(data, fields, where, error, required)
    hints = field_types(cls)
    kwargs = {
        name: convert(
            value, hints[name], at(where, name), error, fields[name].metadata.get("defaults")
        )
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except error as exc:  # a cross-field rule of __post_init__: prefix the table's path
        raise error(f"{where}: {exc}") from None


def check_fields(spec: Any, error: Error = ConfigError) -> None:
    """Check every field of a dataclass built in code, as ``from_dict`` checks a file's.

    Call from ``__post_init__``; arrays given as lists are stored as tuples, ints in float
    fields as floats. Errors name ``Class.field``.
    """
    hints = field_types(type(spec))
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        checked = convert(value, hints[f.name], f"{type(spec).__name__}.{f.name}", error)
        if checked is not value:
            object.__setattr__(spec, f.name, checked)


def to_dict(spec: Any) -> dict[str, Any]:
    """A JSON-able dict of a (nested) frozen dataclass; tuples become lists. A field whose
    metadata has ``omit_default`` is left out while it holds its default: a setting added to
    a spec later then leaves the dicts (and the cache keys hashed from them) of the specs that
    do not use it as they were."""

    def kept(value: Any, f: dataclasses.Field) -> bool:  # type: ignore[type-arg]
        return not (f.metadata.get("omit_default") and getattr(value, f.name) == f.default)

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {
                f.name: plain(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if kept(value, f)
            }
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(spec)


def check_schema_version(data: Any, expected: int, where: str, error: Error) -> None:
    """The file's ``schema_version`` must be ``expected``; the error says what to write."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a table, got {show(data)}")
    if "schema_version" not in data:
        raise error(
            f"{where}: no schema_version: write `schema_version = {expected}` at the top of the file"
        )
    version = data["schema_version"]
    if version != expected or type(version) is not int:
        raise error(
            f"{where}: schema_version = {show(version)}, but this codesign reads schema_version "
            f"= {expected}: write `schema_version = {expected}` at the top and check the file "
            "against the shipped ones in recipes/"
        )


def load_toml(path: str | Path, error: Error = ConfigError) -> dict[str, Any]:
    """Read a TOML file; a missing file, non-UTF-8 bytes or bad syntax is one line of ``error``."""
    source = Path(path)
    if not source.is_file():
        raise error(f"recipe not found: {source} (give the path of a .toml file)")
    try:
        with source.open("rb") as f:
            return tomllib.load(f)
    except UnicodeDecodeError as exc:
        raise error(
            f"{source} is not UTF-8 text (byte {exc.start}): save it as UTF-8, as TOML requires"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        reason = " ".join(str(exc).split())
        raise error(f"{source} is not valid TOML: {reason}; fix it there") from None
