"""The strict SXP parser: grammar, located errors, and the dumps/parse round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovsvnet.errors import ConfigError, SxpError
from ovsvnet.sxp import Atom, SList, dumps, parse_all, parse_one


def error_of(text: str, source: str = "<input>") -> SxpError:
    with pytest.raises(SxpError) as info:
        parse_all(text, source)
    return info.value


def one_error_of(text: str) -> SxpError:
    with pytest.raises(SxpError) as info:
        parse_one(text)
    return info.value


# --- accepted input --------------------------------------------------------------------------


def test_nested_lists_and_positions() -> None:
    tree = parse_one("(vnet\n  (id 97)\n\t(bridge vnet97))")
    assert tree == ["vnet", ["id", "97"], ["bridge", "vnet97"]]
    assert isinstance(tree, SList)
    assert (tree.line, tree.column) == (1, 1)
    head = tree[0]
    assert isinstance(head, Atom) and (head.line, head.column, head.quoted) == (1, 2, False)
    idlist = tree[1]
    assert isinstance(idlist, SList) and (idlist.line, idlist.column) == (2, 3)
    value = idlist[1]
    assert isinstance(value, Atom) and (value.line, value.column) == (2, 7)
    bridge = tree[2]
    assert isinstance(bridge, SList) and (bridge.line, bridge.column) == (3, 2)


def test_comments_and_whitespace() -> None:
    text = "# leading comment\n(a # inline ) comment\n b)\v\f\r\n# trailing"
    assert parse_all(text) == [["a", "b"]]
    assert parse_all("a#comment") == ["a"]
    assert parse_all("") == []
    assert parse_all("   # only a comment") == []


def test_atoms_end_at_delimiters() -> None:
    assert parse_all("(a(b)c)") == [["a", ["b"], "c"]]
    assert parse_all("x.y-z_1:2/3~ é") == ["x.y-z_1:2/3~", "é"]
    # Quotes inside an atom are part of it, as in Xen's parser.
    assert parse_all("it's") == ["it's"]


def test_empty_list() -> None:
    tree = parse_one("()")
    assert tree == [] and isinstance(tree, SList)


def test_strings_and_escapes() -> None:
    text = r"""("a b" 'c"d' "\a\b\t\n\v\f\r\\\'\"" "\x41\x7a\x7A" "\101\000\377" '')"""
    tree = parse_one(text)
    assert tree == ["a b", 'c"d', "\a\b\t\n\v\f\r\\'\"", "Azz", "A\x00\xff", ""]
    assert isinstance(tree, SList)
    first = tree[0]
    assert isinstance(first, Atom) and first.quoted and (first.line, first.column) == (1, 2)


def test_string_may_span_lines_and_hold_anything() -> None:
    tree = parse_one("('line1\nline2\x01#(' after)")
    assert tree == ["line1\nline2\x01#(", "after"]
    after = tree[1]
    assert isinstance(after, Atom) and (after.line, after.column) == (2, 11)


def test_parse_one_returns_single_expression() -> None:
    assert parse_one("  # c\n atom # c") == "atom"


# --- errors, each with exact position --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("(a\n (b c)\n", 3, 1, "unexpected end of input: list opened at 1:1 is not closed"),
        ("(a\n\n(b (c)", 3, 7, "unexpected end of input: list opened at 3:1 is not closed"),
        ("(a) )", 1, 5, "unexpected ')' at top level"),
        (")", 1, 1, "unexpected ')' at top level"),
        ("(a\n  'abc)", 2, 3, "unterminated string"),
        ('"abc\\', 1, 1, "unterminated string"),
        ("(a [b])", 1, 4, "unexpected character '['"),
        ("x]", 1, 2, "unexpected character ']'"),
        ("{", 1, 1, "unexpected character '{'"),
        ("}", 1, 1, "unexpected character '}'"),
        ("<", 1, 1, "unexpected character '<'"),
        ("a>", 1, 2, "unexpected character '>'"),
        ("(a !)", 1, 4, "unexpected character '!'"),
        ("; comment", 1, 1, "unexpected character ';' (comments start with '#')"),
        ("(a\n b\x01)", 2, 3, "unexpected control character U+0001"),
        ("\x00", 1, 1, "unexpected control character U+0000"),
        ("\x7f", 1, 1, "unexpected control character U+007F"),
        ("a\u00a0b", 1, 2, "unexpected non-printable character U+00A0"),
        ("(x\n  \"ab\\qc\")", 2, 6, "bad escape '\\q'"),
        ("'\\x4g'", 1, 2, "\\x needs exactly 2 hex digits"),
        ("'\\x4'", 1, 2, "\\x needs exactly 2 hex digits"),
        ("'\\12'", 1, 2, "octal escapes need exactly 3 digits"),
        ("'\\0'", 1, 2, "octal escapes need exactly 3 digits"),
        ("'\\400'", 1, 2, "\\400 is above \\377"),
        ("'\\8'", 1, 2, "bad escape '\\8'"),
        ("'\\\n'", 1, 2, "bad escape: backslash before control character U+000A"),
    ],
)
def test_syntax_errors(text: str, line: int, column: int, words: str) -> None:
    err = error_of(text, "f.sxp")
    assert (err.line, err.column, err.source) == (line, column, "f.sxp")
    assert words in str(err)
    assert str(err).startswith(f"f.sxp:{line}:{column}: ")
    assert isinstance(err, ConfigError)


def test_bad_escape_lists_known_ones() -> None:
    assert r"\xHH \ooo" in str(error_of(r"'\q'"))


def test_parse_one_refuses_a_second_expression() -> None:
    err = one_error_of("(a)\n  (b)")
    assert (err.line, err.column) == (2, 3)
    assert "expected exactly one expression, found a second one" in str(err)
    err = one_error_of("a b")
    assert (err.line, err.column) == (1, 3)


@pytest.mark.parametrize(("text", "line", "column"), [("", 1, 1), ("# c\n  ", 2, 3)])
def test_parse_one_refuses_nothing(text: str, line: int, column: int) -> None:
    err = one_error_of(text)
    assert (err.line, err.column) == (line, column)
    assert "no expression found" in str(err)


def test_deep_nesting_does_not_recurse() -> None:
    depth = 50_000
    tree = parse_one("(" * depth + ")" * depth)
    assert isinstance(tree, SList)
    err = error_of("(" * depth)
    assert f"list opened at 1:{depth}" in str(err)


# --- dumps -----------------------------------------------------------------------------------


def test_dumps_bare_and_quoted() -> None:
    assert dumps(["vnet", ["id", "0000:0097"], ["b", "x.y-z_/~"]]) == (
        "(vnet (id 0000:0097) (b x.y-z_/~))"
    )
    assert dumps("") == "''"
    assert dumps("a b") == "'a b'"
    assert dumps("it's") == "'it\\'s'"
    assert dumps('q"') == "'q\"'"
    assert dumps("a\\b") == "'a\\\\b'"
    assert dumps("\n\t\x00\x7f\xa0") == "'\\n\\t\\x00\\x7f\\xa0'"
    assert dumps("#") == "'#'"
    assert dumps(("a", ())) == "(a ())"


def test_dumps_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        dumps(["a", 1])  # type: ignore[list-item]


trees = st.recursive(
    st.text(),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


@given(trees)
@settings(max_examples=300)
def test_dumps_parse_round_trip(tree: object) -> None:
    text = dumps(tree)  # type: ignore[arg-type]
    assert parse_one(text) == tree
    if isinstance(tree, list):
        assert "\n" not in text


# --- robustness: any text raises only SxpError -----------------------------------------------


def parse_or_sxp_error(text: str) -> None:
    try:
        parse_all(text)
        parse_one(text)
    except SxpError as e:
        assert e.line >= 1 and e.column >= 1
        assert e.line <= text.count("\n") + 1


@given(st.text())
@settings(max_examples=300)
def test_any_text_raises_only_sxp_error(text: str) -> None:
    parse_or_sxp_error(text)


fragments = st.sampled_from(
    [
        "(", ")", "(", ")", " ", "\n", "\t", "#c\n", "#", "a", "vnet", "97", "'", '"',
        "\\", "\\x", "\\x4", "\\x41", "\\0", "\\101", "\\777", "\\q", "\\n", "[", ";", "!",
        "\x00", "\x01", "\r\n", "é", "\u2028", "\ud800",
    ]
)


@given(st.lists(fragments, max_size=40).map("".join))
@settings(max_examples=400)
def test_grammar_fragments_raise_only_sxp_error(text: str) -> None:
    parse_or_sxp_error(text)
