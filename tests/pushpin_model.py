"""A model of what Pushpin 1.36 does to content, for fast property tests.

Checked against the real Pushpin by the end-to-end tests (tests/test_e2e_content.py).
"""

from __future__ import annotations


def pushpin_build_id(content: str, id: str) -> str:
    """Pushpin's build-id content rendering: "%%" -> "%", "%I" -> id, other "%" fails."""
    out: list[str] = []
    i = 0
    while i < len(content):
        if content[i] != "%":
            out.append(content[i])
            i += 1
            continue
        directive = content[i + 1 : i + 2]
        if directive == "%":
            out.append("%")
        elif directive == "I":
            out.append(id)
        else:
            raise ValueError(f"Pushpin would fail the message at {i}")
        i += 2
    return "".join(out)
