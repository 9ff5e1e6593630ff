"""gojson: JSON read with Go encoding/json's struct semantics."""

from __future__ import annotations

import pytest

from fixeduser.docker_api.gojson import (
    BodyError,
    JsonObject,
    bool_field,
    decode,
    field,
    go_fold,
    key_set_field,
    list_of_str_field,
    obj_field,
    obj_list_field,
    opt_bool_field,
    opt_list_of_str_field,
    str_field,
    str_map_field,
)


def obj(text: str) -> JsonObject:
    value = decode(text.encode())
    assert isinstance(value, JsonObject)
    return value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "{",
        '{"a": 1,}',
        "NaN",
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        '{"a": 1} {"b": 2}',
        '{"a": 1} x',
        "\ufeff{}",
        '{"a": "x\ty"}',
        "[" * 100_000,
        "1" * 5000,
        "01",
        "'a'",
    ],
)
def test_decode_rejects(text: str) -> None:
    """Invalid JSON, NaN/Infinity, trailing content, BOM and huge nesting are BodyErrors."""
    with pytest.raises(BodyError):
        decode(text.encode())


def test_decode_values() -> None:
    """Plain JSON values decode as json.loads would, objects as JsonObject."""
    assert decode(b' [1, 2.5, "x", true, null] ') == [1, 2.5, "x", True, None]
    value = decode(b'{"a": {"b": [1]}}')
    assert isinstance(value, JsonObject)
    assert isinstance(value["a"], JsonObject)


def test_invalid_utf8_becomes_one_replacement_per_byte() -> None:
    """Each invalid byte becomes one U+FFFD, like Go's utf8.DecodeRune."""
    assert decode(b'"a\xffb"') == "a\ufffdb"
    assert decode(b'"\xe2\x82A"') == "\ufffd\ufffdA"
    assert decode(b'"\xed\xa0\x80"') == "\ufffd" * 3


def test_lone_surrogate_escape_becomes_replacement() -> None:
    """A lone surrogate escape is U+FFFD; a valid pair combines."""
    value = obj('{"\\ud800k": ["\\udc00", "\\ud83d\\ude00"]}')
    assert value.pairs == (("\ufffdk", ["\ufffd", "\U0001f600"]),)


def test_invalid_utf8_outside_strings_is_rejected() -> None:
    """A stray invalid byte between tokens is a syntax error."""
    with pytest.raises(BodyError):
        decode(b'{"a": 1 \xff}')


def test_json_object_keeps_duplicates_in_order() -> None:
    """JsonObject keeps every pair; as a Mapping the last exact key wins."""
    value = obj('{"a": 1, "A": 2, "a": 3}')
    assert value.pairs == (("a", 1), ("A", 2), ("a", 3))
    assert value["a"] == 3
    assert dict(value) == {"a": 3, "A": 2}
    assert len(value) == 2


@pytest.mark.parametrize(
    ("key", "matches"),
    [
        ("Privileged", True),
        ("privileged", True),
        ("PRIVILEGED", True),
        ("pRiViLeGeD", True),
        ("Priv\u0131leged", False),  # U+0131 dotless i: its own fold orbit in Go
        ("Pr\u0130vileged", False),  # U+0130 dotted capital I: likewise
        ("Privileged ", False),
        ("Privileged\u0000", False),
    ],
)
def test_field_fold_privileged(key: str, matches: bool) -> None:
    """Go matches keys by simple case folding, which leaves the Turkish i's alone."""
    value = obj(f'{{"{key}": true}}'.replace("\u0000", "\\u0000"))
    assert (field(value, "Privileged") is True) is matches


def test_fold_long_s_and_kelvin() -> None:
    """U+017F folds with 's' and U+212A KELVIN SIGN with 'k', as in Go."""
    assert go_fold("\u017fecurityOpt") == go_fold("SecurityOpt")
    assert go_fold("\u212aernelMemory") == go_fold("KernelMemory")
    assert field(obj('{"\u017fecurity\u212a": 1}'), "SecurityK") == 1
    assert go_fold("\u0131") != go_fold("i")
    assert go_fold("\u0131") != go_fold("I")
    assert go_fold("\u1e9e") == go_fold("\u00df")
    assert go_fold("\u03c2") == go_fold("\u03a3")


def test_field_last_folded_key_wins() -> None:
    """The last matching key wins, even over an earlier exact-case key."""
    assert field(obj('{"Privileged": false, "privileged": true}'), "Privileged") is True
    assert field(obj('{"privileged": true, "Privileged": false}'), "Privileged") is False
    assert field(obj('{"other": 1}'), "Privileged") is None
    assert field({"PRIVILEGED": 1}, "Privileged") == 1


def test_field_sees_duplicates_a_dict_would_reorder() -> None:
    """Exact duplicates around a folded key keep document order (dicts would not)."""
    value = obj('{"Privileged": false, "privileged": true, "Privileged": false}')
    assert bool_field(value, "Privileged") is False
    value = obj('{"Privileged": true, "privileged": false, "Privileged": true}')
    assert bool_field(value, "Privileged") is True


def test_null_is_a_no_op_for_scalars() -> None:
    """null after a value keeps the value for Go strings and bools."""
    assert bool_field(obj('{"Privileged": true, "privileged": null}'), "Privileged") is True
    assert str_field(obj('{"User": "root", "user": null}'), "User") == "root"
    assert str_field(obj('{"User": null}'), "User") == ""
    assert str_field(obj("{}"), "User", "dflt") == "dflt"


def test_null_resets_pointer_bool() -> None:
    """A *bool field is reset to nil (None) by null."""
    assert opt_bool_field(obj('{"Init": true, "init": null}'), "Init") is None
    assert opt_bool_field(obj('{"Init": false}'), "Init") is False
    assert opt_bool_field(obj("{}"), "Init") is None


@pytest.mark.parametrize(
    ("helper", "text"),
    [
        (str_field, '{"F": 1}'),
        (str_field, '{"F": true}'),
        (str_field, '{"F": ["a"]}'),
        (str_field, '{"F": "ok", "f": {}}'),
        (bool_field, '{"F": "true"}'),
        (bool_field, '{"F": 1}'),
        (opt_bool_field, '{"F": 0}'),
        (list_of_str_field, '{"F": "a"}'),
        (list_of_str_field, '{"F": [1]}'),
        (list_of_str_field, '{"F": {}}'),
        (opt_list_of_str_field, '{"F": [true]}'),
        (obj_field, '{"F": []}'),
        (obj_field, '{"F": "x"}'),
        (obj_list_field, '{"F": {}}'),
        (obj_list_field, '{"F": [1]}'),
        (str_map_field, '{"F": []}'),
        (str_map_field, '{"F": {"k": 1}}'),
        (str_map_field, '{"F": {"k": true}}'),
        (key_set_field, '{"F": ["a"]}'),
        (key_set_field, '{"F": {"/a": 1}}'),
    ],
)
def test_wrong_type_is_body_error(helper: object, text: str) -> None:
    """A JSON type Go cannot store in the field fails the request: BodyError."""
    assert callable(helper)
    with pytest.raises(BodyError, match=r"'F'|F\["):
        helper(obj(text), "F")


def test_str_slice_accepts_a_string() -> None:
    """Docker's StrSlice (CapAdd, Cmd) takes a single string or an array."""
    assert list_of_str_field(obj('{"CapAdd": "ALL"}'), "CapAdd", str_slice=True) == ["ALL"]
    assert list_of_str_field(obj('{"CapAdd": ["A", null]}'), "CapAdd", str_slice=True) == [
        "A",
        "",
    ]
    text = '{"CapAdd": ["A", "B"], "capadd": [null]}'
    assert list_of_str_field(obj(text), "CapAdd", str_slice=True) == [""]


def test_slices_replace_and_null_resets() -> None:
    """A repeated []string key replaces the slice; null resets it."""
    assert list_of_str_field(obj('{"B": ["a", "b"], "b": ["c"]}'), "B") == ["c"]
    assert list_of_str_field(obj('{"B": ["a"], "b": null}'), "B") == []
    assert list_of_str_field(obj('{"B": [null]}'), "B") == [""]
    assert list_of_str_field(obj('{"B": ["a"], "b": [], "B": [null]}'), "B") == [""]


def test_repeated_slice_with_null_element_is_ambiguous() -> None:
    """Go reuses old elements for null entries in a repeated key: we refuse to guess."""
    with pytest.raises(BodyError, match="ambiguous"):
        list_of_str_field(obj('{"B": ["/etc:/x"], "b": [null]}'), "B")


def test_opt_list_distinguishes_nil_from_empty() -> None:
    """opt_list_of_str_field keeps Go's nil (None) apart from an empty slice."""
    assert opt_list_of_str_field(obj("{}"), "MaskedPaths") is None
    assert opt_list_of_str_field(obj('{"MaskedPaths": null}'), "MaskedPaths") is None
    assert opt_list_of_str_field(obj('{"MaskedPaths": []}'), "MaskedPaths") == []


def test_struct_keys_merge() -> None:
    """A struct given twice is merged field by field, like Go decoding into one value."""
    text = '{"HostConfig": {"Privileged": true}, "hostconfig": {"CapAdd": ["X"]}}'
    hc = obj_field(obj(text), "HostConfig")
    assert hc is not None
    assert bool_field(hc, "Privileged") is True
    assert list_of_str_field(hc, "CapAdd") == ["X"]


def test_pointer_struct_null_resets_value_struct_null_does_not() -> None:
    """null resets a *struct field but is a no-op for a value struct."""
    text = '{"HostConfig": {"Privileged": true}, "HOSTCONFIG": null}'
    assert obj_field(obj(text), "HostConfig") is None
    text = '{"RestartPolicy": {"Name": "always"}, "restartpolicy": null}'
    rp = obj_field(obj(text), "RestartPolicy", pointer=False)
    assert rp is not None
    assert str_field(rp, "Name") == "always"


def test_struct_list_fresh_and_ambiguous() -> None:
    """[]struct decodes fresh elements; a repeated non-empty key is refused."""
    items = obj_list_field(obj('{"Mounts": [{"Type": "bind"}, null]}'), "Mounts")
    assert [str_field(i, "Type") for i in items] == ["bind", ""]
    assert obj_list_field(obj('{"Mounts": [{"a": 1}], "mounts": null}'), "Mounts") == []
    kept = obj_list_field(obj('{"Mounts": [], "mounts": [{"Type": "x"}]}'), "Mounts")
    assert len(kept) == 1
    with pytest.raises(BodyError, match="ambiguous"):
        text = '{"Mounts": [{"Source": "/"}], "mounts": [{"Target": "/x"}]}'
        obj_list_field(obj(text), "Mounts")


def test_maps_keep_key_case_and_merge() -> None:
    """Map keys are data (no folding); repeated map keys merge; null resets; null value is ""."""
    value = obj('{"Labels": {"a": "1", "A": "2"}, "labels": {"b": null, "a": "3"}}')
    assert str_map_field(value, "Labels") == {"a": "3", "A": "2", "b": ""}
    value = obj('{"Labels": {"a": "1"}, "labels": null, "LABELS": {"b": "2"}}')
    assert str_map_field(value, "Labels") == {"b": "2"}


def test_key_set() -> None:
    """map[string]struct{} yields its keys; values may be objects or null."""
    value = obj('{"Volumes": {"/a": {}, "/b": null}, "volumes": {"/c": {"x": 1}}}')
    assert key_set_field(value, "Volumes") == ["/a", "/b", "/c"]
