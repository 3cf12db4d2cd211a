"""Response blocks checked and decoded once per connection give what the functions give."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from h2pool._core.headers import CheckedResponses, decode_headers, response_problem

_field = st.tuples(
    st.sampled_from([b":status", b":path", b"server", b"Bad Name", b"te", b"x-\xc3\xa9"]),
    st.sampled_from([b"200", b"abc", b"9999", b"", b" padded", b"trailers", b"caf\xc3\xa9"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_field, max_size=4), min_size=1, max_size=6), st.booleans())
def test_checked_responses_match_the_functions(
    blocks: list[list[tuple[bytes, bytes]]], strict: bool
) -> None:
    checked = CheckedResponses(strict=strict)
    for block in blocks + blocks:  # each block twice: computed, then remembered
        problem, fields = checked.check(block)
        assert problem == response_problem(block, trailers=False, strict=strict)
        assert fields == ([] if problem is not None else decode_headers(block))


def test_each_answer_is_a_list_of_its_own() -> None:
    checked = CheckedResponses(strict=True)
    block = [(b":status", b"200"), (b"server", b"x")]
    first = checked.check(block)[1]
    first.append(("changed", "by the caller"))
    assert checked.check(block)[1] == [(":status", "200"), ("server", "x")]
