"""The one parser of a store's JSON records: every way a record can be malformed gives one message shape."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from facescale.errors import ManifestError
from facescale.storage.records import parse_record


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sizes: list[int]


def test_a_valid_record_is_parsed() -> None:
    assert parse_record(Thing, b'{"name": "a", "sizes": [1, 2]}', "thing", "/x") == Thing(name="a", sizes=[1, 2])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"name": "\xc3\x28"}', "not JSON (not UTF-8 text)"),
        (b'{"name": ', "not JSON (Expecting value, line 1)"),
        (b'{"name": "a", "sizes": [1, "x"]}', "sizes.1: Input should be a valid integer, unable to parse string"),
        (b'{"name": "a", "sizes": [], "more": 1}', "more: Extra inputs are not permitted"),
        (b"[]", "(root): Input should be a valid dictionary or instance of Thing"),
    ],
)
def test_a_malformed_record_names_what_where_and_the_first_problem(data: bytes, problem: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_record(Thing, data, "thing record", "s3://bucket/things/t.json")
    assert str(info.value).startswith(f"malformed thing record s3://bucket/things/t.json: {problem}")
