"""Text from logs made safe to show: control characters become visible escapes.

An attacker writes the paths, User-Agents and messages gatewatch reads. Shown
raw, an ESC starts a terminal escape sequence (recolouring, moving the cursor,
rewriting what the operator sees), a CR or LF forges a line of a table or log
(in editors and some viewers, so do U+2028 and U+2029, the line and paragraph
separators), and a bidi override reorders what is read. :func:`visible` turns
each such character into the escape a Python string literal would use
(``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``), so the text stays readable and
shows exactly what was logged. Markup is a separate matter, solved where text is drawn:
rich renders data as ``Text``, never as markup.
"""

from __future__ import annotations

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_BIDI = [0x061C, *range(0x200E, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SEPARATORS = [0x2028, 0x2029]  # line and paragraph separator: a line break to editors and some viewers
_TABLE: dict[int, str] = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}")
    for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))
}
_TABLE.update({code: f"\\u{code:04x}" for code in (*_BIDI, *_SEPARATORS)})


def visible(text: str) -> str:
    """``text`` with every C0/C1 control, DEL, bidi control and line/paragraph separator written as an escape.

    Printable text (the common case) is returned as it is. Backslashes are
    left alone, so escaping twice changes nothing: an alert summary is escaped
    when the alert is made and again when a table draws it.
    """
    if text.isprintable():
        return text
    return text.translate(_TABLE)


def quoted(text: str) -> str:
    """``text`` as one ``key=value`` log value: bare if it is a plain word, else in double quotes.

    Inside quotes, ``\\`` is ``\\\\``, ``"`` is ``\\"`` and every control character
    is escaped (:func:`visible`), so a value can neither end the line nor fake another key.
    """
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return '"' + visible(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
