"""Read JSON request bodies the way the daemon's Go ``encoding/json`` does.

The daemon decodes bodies into Go structs, which differs from ``json.loads`` into a dict:

* object keys match struct fields case-insensitively (Unicode simple case folding, so
  U+017F LATIN SMALL LETTER LONG S matches 's' and U+212A KELVIN SIGN matches 'k', but
  U+0131 LATIN SMALL LETTER DOTLESS I matches nothing), and every matching key is applied
  in order, so the last one wins;
* ``null`` is a no-op for strings, booleans and value structs, and resets pointers, slices
  and maps;
* a struct or map that appears twice is merged, not replaced;
* invalid UTF-8 and lone surrogate escapes become U+FFFD; NaN/Infinity are syntax errors.

Objects therefore decode to :class:`JsonObject`, which keeps every key/value pair in order.
A value of the wrong JSON type for a field is a :class:`BodyError`: Go fails the request
with 400, so the caller must deny rather than ignore it.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "GO_REPLACE",
    "BodyError",
    "JsonObject",
    "bool_field",
    "decode",
    "field",
    "go_fold",
    "key_set_field",
    "list_of_str_field",
    "obj_field",
    "obj_list_field",
    "opt_bool_field",
    "opt_list_of_str_field",
    "str_field",
    "str_map_field",
]

GO_REPLACE: Final = "fixeduser-go-replace"
"""Codec error handler: one U+FFFD per invalid byte, like Go."""


def _go_replace(err: UnicodeError) -> tuple[str, int]:
    """Replace each invalid byte with one U+FFFD, as Go's utf8.DecodeRune does."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return "\ufffd" * (err.end - err.start), err.end


codecs.register_error(GO_REPLACE, _go_replace)

_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATES: Final = re.compile("[\ud800-\udfff]")


class BodyError(ValueError):
    """A request body the daemon would reject (or that we cannot read unambiguously)."""


class JsonObject(Mapping[str, Any]):
    """A decoded JSON object that keeps every key/value pair, duplicates included, in order.

    As a Mapping it behaves like ``json.loads`` (last exact key wins); use :func:`field`
    and the typed helpers for Go struct semantics.
    """

    __slots__ = ("_folded", "_last", "_pairs")

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        self._pairs: tuple[tuple[str, Any], ...] = tuple(pairs)
        self._last: dict[str, Any] = dict(self._pairs)
        self._folded: dict[str, list[Any]] | None = None

    def by_folded_key(self, folded: str) -> list[Any]:
        """Values of every key whose Go fold is `folded`, in document order.

        The index is built once per object: each field lookup would otherwise fold every key.
        """
        if self._folded is None:
            index: dict[str, list[Any]] = {}
            for key, value in self._pairs:
                index.setdefault(go_fold(key), []).append(value)
            self._folded = index
        return self._folded.get(folded, [])

    @property
    def pairs(self) -> tuple[tuple[str, Any], ...]:
        """Every key/value pair in document order."""
        return self._pairs

    def __getitem__(self, key: str) -> Any:
        return self._last[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def __repr__(self) -> str:
        return f"JsonObject({list(self._pairs)!r})"


def _reject_constant(name: str) -> Any:
    raise BodyError(f"invalid JSON: {name} is not a JSON value")


def _fix_surrogates(value: Any) -> Any:
    """Turn lone surrogates (from ``\\ud800`` escapes) into U+FFFD like Go does."""
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, list):
        return [_fix_surrogates(v) for v in value]
    if isinstance(value, JsonObject):
        return JsonObject((_fix_surrogates(k), _fix_surrogates(v)) for k, v in value.pairs)
    return value


def decode(data: bytes) -> Any:
    """Parse one JSON value; objects become :class:`JsonObject`.

    Raises BodyError for invalid JSON, NaN/Infinity, trailing content or excessive nesting.
    """
    text = data.decode("utf-8", errors=GO_REPLACE)
    try:
        value = json.loads(text, object_pairs_hook=JsonObject, parse_constant=_reject_constant)
    except BodyError:
        raise
    except RecursionError as exc:
        raise BodyError("invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and int() digit limits
        raise BodyError(f"invalid JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text):
        value = _fix_surrogates(value)
    return value


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    if c < "\x80":
        return c.lower()
    folded = c.casefold()  # full folding; equals simple folding when it is one char
    if len(folded) == 1:
        return folded
    lower = c.lower()  # e.g. U+1E9E -> U+00DF, whose simple fold is itself
    return lower if len(lower) == 1 else c


@lru_cache(maxsize=8192)
def go_fold(s: str) -> str:
    """A key such that ``go_fold(a) == go_fold(b)`` iff Go's ``bytes.EqualFold(a, b)``."""
    if s.isascii():
        return s.lower()
    return "".join(_fold_char(c) for c in s)


def _pairs(obj: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    return obj.pairs if isinstance(obj, JsonObject) else obj.items()


def _occurrences(obj: Mapping[str, Any], name: str) -> list[Any]:
    """Values of every key that names struct field `name`, in document order."""
    want = go_fold(name)
    if isinstance(obj, JsonObject):
        return obj.by_folded_key(want)
    return [v for k, v in obj.items() if k == name or go_fold(k) == want]


def field(obj: Mapping[str, Any], name: str) -> Any | None:
    """The raw value of the last key in `obj` that Go would match to field `name`."""
    found = _occurrences(obj, name)
    return found[-1] if found else None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _type_error(name: str, want: str, got: Any) -> BodyError:
    return BodyError(f"field {name!r}: expected {want}, got {_kind(got)}")


def str_field(obj: Mapping[str, Any], name: str, default: str = "") -> str:
    """A Go ``string`` field: null keeps the previous value."""
    out = default
    for v in _occurrences(obj, name):
        if v is None:
            continue
        if not isinstance(v, str):
            raise _type_error(name, "a string", v)
        out = v
    return out


def bool_field(obj: Mapping[str, Any], name: str) -> bool:
    """A Go ``bool`` field: null keeps the previous value."""
    out = False
    for v in _occurrences(obj, name):
        if v is None:
            continue
        if not isinstance(v, bool):
            raise _type_error(name, "a boolean", v)
        out = v
    return out


def opt_bool_field(obj: Mapping[str, Any], name: str) -> bool | None:
    """A Go ``*bool`` field: null resets it to nil (None = daemon default)."""
    out: bool | None = None
    for v in _occurrences(obj, name):
        if v is not None and not isinstance(v, bool):
            raise _type_error(name, "a boolean", v)
        out = v
    return out


def _str_list_state(obj: Mapping[str, Any], name: str, *, str_slice: bool) -> list[str] | None:
    out: list[str] | None = None
    for v in _occurrences(obj, name):
        if v is None:
            out = None
            continue
        if str_slice and isinstance(v, str):
            out = [v]
            continue
        if not isinstance(v, list):
            raise _type_error(name, "an array of strings", v)
        if not str_slice and out and any(x is None for x in v):
            raise BodyError(f"field {name!r}: null element in a repeated key is ambiguous")
        new: list[str] = []
        for x in v:
            if x is not None and not isinstance(x, str):
                raise _type_error(f"{name}[]", "a string", x)
            new.append(x or "")
        out = new
    return out


def list_of_str_field(obj: Mapping[str, Any], name: str, *, str_slice: bool = False) -> list[str]:
    """A Go ``[]string`` field (``str_slice``: Docker's StrSlice, which also takes one string).

    null elements are "" in a fresh slice; Go reuses the old elements when a plain slice is
    decoded twice, so null elements in a repeated key are rejected as ambiguous.
    """
    return _str_list_state(obj, name, str_slice=str_slice) or []


def opt_list_of_str_field(obj: Mapping[str, Any], name: str) -> list[str] | None:
    """Like :func:`list_of_str_field`, keeping Go's nil (absent or null) apart from ``[]``."""
    return _str_list_state(obj, name, str_slice=False)


def obj_field(obj: Mapping[str, Any], name: str, *, pointer: bool = True) -> JsonObject | None:
    """A Go struct (``pointer``: ``*struct``) field; repeated keys merge, as in Go.

    null resets a pointer to nil and is a no-op for a value struct. None means "not set".
    """
    out: list[tuple[str, Any]] | None = None
    for v in _occurrences(obj, name):
        if v is None:
            if pointer:
                out = None
            continue
        if not isinstance(v, Mapping):
            raise _type_error(name, "an object", v)
        out = [*(out or []), *_pairs(v)]
    return None if out is None else JsonObject(out)


def obj_list_field(obj: Mapping[str, Any], name: str) -> list[JsonObject]:
    """A Go ``[]struct`` field. A repeated non-empty key is rejected: Go would merge the new
    elements into the old ones (and into stale capacity), which we cannot mirror exactly."""
    out: list[JsonObject] = []
    for v in _occurrences(obj, name):
        if v is None:
            out = []
            continue
        if not isinstance(v, list):
            raise _type_error(name, "an array of objects", v)
        if out and v:
            raise BodyError(f"field {name!r}: repeated non-empty key is ambiguous")
        new: list[JsonObject] = []
        for x in v:
            if x is not None and not isinstance(x, Mapping):
                raise _type_error(f"{name}[]", "an object", x)
            new.append(JsonObject(_pairs(x)) if x is not None else JsonObject())
        out = new
    return out


def str_map_field(obj: Mapping[str, Any], name: str) -> dict[str, str]:
    """A Go ``map[string]string`` field. Keys are data (not folded); repeated keys merge;
    null resets the map; a null value is ""."""
    out: dict[str, str] = {}
    for v in _occurrences(obj, name):
        if v is None:
            out = {}
            continue
        if not isinstance(v, Mapping):
            raise _type_error(name, "an object of strings", v)
        for k, x in _pairs(v):
            if x is not None and not isinstance(x, str):
                raise _type_error(f"{name}[{k!r}]", "a string", x)
            out[k] = x or ""
    return out


def key_set_field(obj: Mapping[str, Any], name: str) -> list[str]:
    """A Go ``map[string]struct{}`` field (e.g. Config.Volumes): its keys, in order."""
    out: dict[str, None] = {}
    for v in _occurrences(obj, name):
        if v is None:
            out = {}
            continue
        if not isinstance(v, Mapping):
            raise _type_error(name, "an object", v)
        for k, x in _pairs(v):
            if x is not None and not isinstance(x, Mapping):
                raise _type_error(f"{name}[{k!r}]", "an object", x)
            out[k] = None
    return list(out)
