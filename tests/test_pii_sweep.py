"""The PII sweep itself must find what it looks for, in every form, and say where, not what."""

from __future__ import annotations

import base64

from tests.fixtures import people
from tests.fixtures.pii_sweep import find_pii, value_forms


def test_sweep_finds_every_form_and_reports_only_labels() -> None:
    value = people.id_number()
    for index, form in enumerate(value_forms(value)):
        blob = b"header" + form + b"trailer"
        hits = find_pii({"db.sqlite3": blob}, {value})
        assert f"db.sqlite3 (form #{index})" in hits
        assert value not in hits[0]
    assert find_pii({"clean": b"5***************12"}, {value}) == []
    name = people.name()
    assert find_pii({"log": base64.b64encode(name.encode())}, {name})
    assert find_pii({"log": name.encode("utf-16-le")}, {name})
