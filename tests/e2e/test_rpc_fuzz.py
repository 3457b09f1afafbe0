"""Property-based fuzzing of every ``healthcode.v1`` RPC over real gRPC, on SQLite and PostgreSQL.

For each RPC (enumerated from the generated descriptors) two hypothesis properties run, with a
caller whose role METHOD_ROLES allows (drawn among all allowed roles; public RPCs anonymously):

- random requests built from the request descriptor: strings (empty, unicode, control
  characters, overlong, domain-looking values), integers (negative, huge, int32/int64 edges),
  doubles (NaN, infinities), enums (known and unknown numbers), bytes, nested messages, repeated
  fields up to 20 elements, timestamps out of range;
- mutated valid requests: a request that the handler would accept, with one field replaced by a
  random value, cleared, or an unknown field appended.

Properties: never INTERNAL or UNKNOWN; an allowed caller is never refused for its role; the server
still answers gRPC health checks afterwards; and a rejected request (any non-OK status) writes no
row to any server table except ``audit_events`` (refused officials' actions are audited by
design) and ``rate_limit_counters`` (refusals count against limits). Accepted requests may write.

Examples are derandomized (reproducible in CI). The example budget is ``HEALTHCODE_FUZZ_EXAMPLES``
random + half as many mutated examples per RPC (default 120), a few thousand calls per backend.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message
from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: N817 - read as a type tag
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from healthcode_sdk._gen.healthcode.v1 import (
    admin_service_pb2,
    auth_service_pb2,
    checkpoint_service_pb2,
    code_service_pb2,
    common_pb2,
    resident_service_pb2,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from healthcode.common.errors import error_info
from healthcode.server.auth.policy import METHOD_ROLES
from healthcode.server.auth.sessions import create_login_session
from healthcode.server.common.principal import Role
from healthcode.server.db import utcnow
from tests.e2e.test_authz_matrix import (
    RPCS,
    Caller,
    Outcome,
    Rpc,
    all_callers,
    call,
    resident,
)
from tests.fixtures import people
from tests.fixtures.platform import Stack

EXAMPLES = int(os.environ.get("HEALTHCODE_FUZZ_EXAMPLES", "120"))
#: Tables a refused request may legitimately write.
REFUSAL_TABLES = frozenset({"audit_events", "rate_limit_counters", "alembic_version"})
#: Public RPCs whose subject is a credential: UNAUTHENTICATED is their "wrong credential" answer.
CREDENTIAL_RPCS = frozenset(
    {"AuthService/RefreshToken", "AuthService/EnrollDevice", "AuthService/Login"}
)
#: Preferred order when a property needs one role (all allowed roles are drawn from anyway).
ROLE_ORDER = (
    Role.RESIDENT,
    Role.STAFF,
    Role.DEVICE,
    Role.DISTRICT_ADMIN,
    Role.HEALTH_AUTHORITY,
    Role.PARTNER,
    Role.PROVINCIAL,
    Role.SECURITY_OFFICER,
)
TS_MAX = 253402300800  # 10000-01-01, one past Timestamp's valid range
#: Fixed at import: strategies must not change between hypothesis runs of one test.
_NOW = int(dt.datetime.now(dt.UTC).timestamp())

# --- the environment: callers and valid references -----------------------------------------


@dataclass
class Env:
    """Everything the fuzzers need: callers, ids of real objects and pools of valid values."""

    stack: Stack
    callers: dict[str, Caller]
    tables: list[str]
    channel: grpc.Channel
    checkpoint_id: str
    subject_id: str
    dependent_id: str
    change_id: str
    correction_id: str
    codes: list[str]
    #: Synthetic people per RPC: one RPC's refusals (a phone now held by a staff account, an
    #: ID number on a risk list) do not turn the next RPC's valid requests into refusals.
    pools: dict[str, list[people.Person]]
    refresh_tokens: list[str]
    enrollment_codes: list[str]
    stats: Counter[str] = field(default_factory=Counter)

    def persons(self, rpc: Rpc) -> list[people.Person]:
        """Six synthetic people for ``rpc``'s valid requests."""
        if rpc.name not in self.pools:
            divisions = ("510402", "510402", "510402", "510403", "510411", "510402")
            self.pools[rpc.name] = [people.person(d) for d in divisions]
        return self.pools[rpc.name]

    def strings(self) -> list[str]:
        """Domain-looking strings: real ids, codes and tokens.

        Never the synthetic people's values: a random field (a request id, a purpose) may be
        stored verbatim, and the PII sweep would rightly flag it. They go in valid requests only.
        """
        return [
            self.checkpoint_id,
            self.subject_id,
            self.dependent_id,
            self.change_id,
            self.correction_id,
            *self.codes,
            *self.refresh_tokens,
            *self.enrollment_codes,
        ]

    def counts(self) -> dict[str, int]:
        """Row count of every server table (one query)."""
        sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in self.tables)
        with self.stack.platform.db.engine.connect() as conn:
            row = conn.execute(text(sql)).one()
        return dict(zip(self.tables, row, strict=True))


def _setup(stack: Stack) -> Env:
    callers = all_callers(stack)
    health = stack.client(callers["health_authority"].token)
    district = stack.client(callers["district_admin"].token)
    session = stack.client(callers["staff"].token).auth.GetSession
    checkpoint_id = session(auth_service_pb2.GetSessionRequest()).checkpoint_id
    res = stack.client(callers["resident"].token)
    subject_id = res.residents.GetProfile(
        resident_service_pb2.GetProfileRequest()
    ).profile.subject_id
    child = people.person("510402")
    dependent_id = res.residents.AddDependent(
        resident_service_pb2.AddDependentRequest(
            request_id=secrets.token_hex(8),
            identity=resident_service_pb2.PersonIdentity(
                name=child.name, id_number=child.id_number
            ),
            relationship="子女",
        )
    ).dependent.subject_id
    # A second resident with an approved red decision and a pending correction against it.
    other_client, _, other_subject = resident(stack, people.person("510402"))
    approved = district.admin.ProposeStatusChange(
        admin_service_pb2.ProposeStatusChangeRequest(
            request_id=secrets.token_hex(8),
            subject_id=other_subject,
            color=common_pb2.CODE_COLOR_RED,
            legal_basis="《传染病防治法》第三十九条 测试依据",
            duration_days=7,
        )
    ).change.change_id
    health.admin.ReviewStatusChange(
        admin_service_pb2.ReviewStatusChangeRequest(
            change_id=approved, approve=True, comment="同意"
        )
    )
    correction_id = other_client.residents.FileCorrection(
        resident_service_pb2.FileCorrectionRequest(
            request_id=secrets.token_hex(8), change_id=approved, reason="当天不在现场"
        )
    ).correction.correction_id
    # A second pending change, for ReviewStatusChange mutations.
    pending = district.admin.ProposeStatusChange(
        admin_service_pb2.ProposeStatusChangeRequest(
            request_id=secrets.token_hex(8),
            subject_id=subject_id,
            color=common_pb2.CODE_COLOR_YELLOW,
            legal_basis="《传染病防治法》第三十九条 测试依据",
            duration_days=3,
        )
    ).change.change_id
    codes = [res.codes.IssueCode(code_service_pb2.IssueCodeRequest()).code.code]
    codes.append(
        res.codes.IssueOfflineCode(
            code_service_pb2.IssueOfflineCodeRequest(
                request_id=secrets.token_hex(8), validity_days=3
            )
        ).code.code
    )
    account = res.auth.GetSession(auth_service_pb2.GetSessionRequest()).account_id
    refresh = [
        stack.run(
            stack.platform.db.run(
                create_login_session, account, settings=stack.platform.settings, now=utcnow()
            )
        ).refresh_token
        for _ in range(3)
    ]
    enrollment = [
        district.admin.CreateDeviceEnrollment(
            admin_service_pb2.CreateDeviceEnrollmentRequest(checkpoint_id=checkpoint_id)
        ).enrollment_code
        for _ in range(3)
    ]
    names = inspect(stack.platform.db.engine).get_table_names()
    tables = sorted(set(names) - REFUSAL_TABLES)
    assert {"persons", "passages", "status_changes", "idempotency_records"} <= set(tables)
    return Env(
        stack=stack,
        callers=callers,
        tables=tables,
        channel=grpc.insecure_channel(stack.server_address),
        checkpoint_id=checkpoint_id,
        subject_id=subject_id,
        dependent_id=dependent_id,
        change_id=pending,
        correction_id=correction_id,
        codes=codes,
        pools={},
        refresh_tokens=refresh,
        enrollment_codes=enrollment,
    )


@pytest.fixture(scope="module")
def env(platform_stack: Stack) -> Iterator[Env]:
    """Callers of every role and real objects to aim valid requests at."""
    e = _setup(platform_stack)
    yield e
    e.channel.close()


# --- strategies from descriptors -----------------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_EDGE_INTS = [0, 1, -1, 2, 7, 28, 31, 100, 1000, 2**31 - 1, -(2**31), 2**32, 2**62]


def _text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        st.text(alphabet="0123456789Xx -+:./", max_size=24),
        st.sampled_from(
            [
                "",
                " ",
                "\t\n",
                "\x00",
                "\u200b",
                "🙂",
                "𠀀𠀁",
                "JKM1:",
                "JKM1:" + "A" * 50,
                "510402",
                "510403",
                "510400",
                "999999",
                "000000",
                "13800000000",
                "1" * 18,
                "11010519491231002X",
                "0" * 32,
                "../../etc/passwd",
                "' OR 1=1 --",
                "%s%n",
            ]
        ),
        st.builds(
            lambda c, n: c * n, st.sampled_from(["a", "中", "9", "🙂", " "]), st.integers(65, 5000)
        ),
    )


def _int(bits: tuple[int, int]) -> st.SearchStrategy[int]:
    lo, hi = bits
    return st.one_of(st.integers(lo, hi), st.sampled_from([v for v in _EDGE_INTS if lo <= v <= hi]))


def _timestamp() -> st.SearchStrategy[message.Message]:
    now = _NOW
    seconds = st.one_of(
        st.integers(*_INT64),
        st.sampled_from([0, -1, 1, TS_MAX, TS_MAX - 1, -62135596801, now, now + 86400 * 400]),
        st.integers(now - 86400 * 60, now + 86400 * 2),
    )
    nanos = st.one_of(st.just(0), st.integers(*_INT32), st.integers(0, 999_999_999))
    return st.builds(lambda s, n: Timestamp(seconds=s, nanos=n), seconds, nanos)


def _scalar(f: FD, extra: list[str]) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FD.TYPE_STRING:
        return st.one_of(_text(), st.sampled_from(extra)) if extra else _text()
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=200)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.one_of(
            st.floats(width=32 if t == FD.TYPE_FLOAT else 64),
            st.sampled_from([36.5, 37.3, 34.0, 43.0, 42.9, -273.15, 0.0, -0.0, 1e308]),
        )
    if t == FD.TYPE_ENUM:
        assert f.enum_type is not None
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(*_INT32))
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return _int(_INT32)
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return _int((0, 2**32 - 1))
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return _int((0, 2**64 - 1))
    return _int(_INT64)


def _message_type(f: FD) -> descriptor.Descriptor:
    assert f.message_type is not None
    return f.message_type


def field_strategy(f: FD, extra: list[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for one field (a list for repeated fields)."""
    if f.type == FD.TYPE_MESSAGE:
        if _message_type(f).full_name == "google.protobuf.Timestamp":
            one: st.SearchStrategy[Any] = _timestamp()
        else:
            one = message_strategy(_message_type(f), extra, depth + 1)
    else:
        one = _scalar(f, extra)
    if f.is_repeated:
        return st.lists(one, max_size=20 if depth == 0 else 4)
    return one


def set_field(msg: message.Message, f: FD, value: Any) -> None:
    """Assign a drawn value to a field of ``msg``."""
    if f.is_repeated:
        target = getattr(msg, f.name)
        del target[:]
        if f.type == FD.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif f.type == FD.TYPE_MESSAGE:
        getattr(msg, f.name).CopyFrom(value)
    else:
        setattr(msg, f.name, value)


def message_strategy(
    desc: descriptor.Descriptor, extra: list[str], depth: int = 0
) -> st.SearchStrategy[message.Message]:
    """Random instances of a message type: each field present or not, nested up to depth 3."""
    cls = GetMessageClass(desc)
    if depth > 3:
        return st.just(cls())
    optional = {f.name: field_strategy(f, extra, depth) for f in desc.fields}

    def build(values: dict[str, Any]) -> message.Message:
        msg = cls()
        for name, value in values.items():
            set_field(msg, desc.fields_by_name[name], value)
        return msg

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _unknown_field() -> st.SearchStrategy[bytes]:
    """A serialized field with a number no request declares (varint or length-delimited)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def encode(number: int, payload: bytes | int) -> bytes:
        if isinstance(payload, int):
            return varint(number << 3) + varint(payload)
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    return st.builds(
        encode,
        st.integers(1000, 536_870_911),
        st.one_of(st.integers(0, 2**64 - 1), st.binary(max_size=50)),
    )


# --- valid requests --------------------------------------------------------------------------

_LEGAL = "《传染病防治法》第三十九条 测试依据"


def _rid() -> st.SearchStrategy[str]:
    return st.uuids().map(lambda u: u.hex)


def _ts(delta: dt.timedelta) -> Any:
    ts = Timestamp()
    ts.FromDatetime(dt.datetime.now(dt.UTC) + delta)
    return ts


def valid_requests(e: Env, rpc: Rpc) -> st.SearchStrategy[message.Message]:
    """Requests the handler would accept (or refuse only for state, not shape)."""
    n = rpc.name
    cls = rpc.request_class
    person = st.sampled_from(e.persons(rpc))
    code = st.sampled_from(e.codes)
    ident = person.map(
        lambda p: resident_service_pb2.PersonIdentity(name=p.name, id_number=p.id_number)
    )
    card = person.map(
        lambda p: checkpoint_service_pb2.IdCardData(
            name=p.name,
            id_number=p.id_number,
            id_type=common_pb2.ID_DOCUMENT_TYPE_RESIDENT,
            address=p.address,
        )
    )
    direction = st.sampled_from(
        [common_pb2.PASSAGE_DIRECTION_ENTRY, common_pb2.PASSAGE_DIRECTION_EXIT]
    )
    temp = st.floats(35.0, 39.0)
    subject = st.sampled_from([e.subject_id, e.dependent_id, ""])
    if n == "AuthService/SendLoginCode":
        return person.map(lambda p: cls(phone=p.phone))
    if n == "AuthService/Login":
        return st.builds(
            lambda p, c: cls(phone=p.phone, code=c), person, st.from_regex(r"\A[0-9]{6}\Z")
        )
    if n == "AuthService/RefreshToken":
        return st.sampled_from(e.refresh_tokens).map(lambda t: cls(refresh_token=t))
    if n == "AuthService/EnrollDevice":
        return st.sampled_from(e.enrollment_codes).map(
            lambda c: cls(enrollment_code=c, device_name="闸机")
        )
    if n in ("ResidentService/RegisterProfile",):
        return st.builds(
            lambda r, p: cls(
                request_id=r,
                identity=resident_service_pb2.PersonIdentity(name=p.name, id_number=p.id_number),
                division_code=p.division_code,
                address=p.address,
            ),
            _rid(),
            person,
        )
    if n == "ResidentService/AddDependent":
        return st.builds(
            lambda r, i: cls(request_id=r, identity=i, relationship="父母"), _rid(), ident
        )
    if n == "ResidentService/SubmitHealthDeclaration":
        return st.builds(
            lambda r, s, t, sy: cls(request_id=r, subject_id=s, temperature_celsius=t, symptoms=sy),
            _rid(),
            subject,
            temp,
            st.lists(st.integers(1, 7), max_size=3),
        )
    if n == "ResidentService/SubmitTravelDeclaration":
        return st.builds(
            lambda r, s, d: cls(
                request_id=r,
                subject_id=s,
                visited_division_codes=d,
                arrive_time=_ts(-dt.timedelta(days=1)),
            ),
            _rid(),
            subject,
            st.lists(st.sampled_from(["510402", "510403", "110105"]), max_size=3),
        )
    if n in ("ResidentService/GetHealthStatus", "CodeService/IssueCode"):
        return subject.map(lambda s: cls(subject_id=s))
    if n == "ResidentService/ListMyPassages":
        return st.builds(lambda s, z: cls(subject_id=s, page_size=z), subject, st.integers(0, 100))
    if n == "ResidentService/FileCorrection":
        return _rid().map(lambda r: cls(request_id=r, change_id=e.change_id, reason="我没有去过"))
    if n == "CodeService/IssueOfflineCode":
        return st.builds(
            lambda r, s, d: cls(request_id=r, subject_id=s, validity_days=d),
            _rid(),
            st.sampled_from([e.subject_id, e.dependent_id]),
            st.integers(0, 7),
        )
    if n == "VerificationService/VerifyCode":
        return st.builds(
            lambda c, d, r, t: cls(code=c, direction=d, request_id=r, temperature_celsius=t),
            code,
            direction,
            _rid(),
            temp,
        )
    if n == "VerificationService/BatchVerifyCodes":
        return st.lists(code, min_size=1, max_size=5).map(lambda cs: cls(codes=cs))
    if n == "VerificationService/QueryStatusByIdentity":
        return person.map(lambda p: cls(id_number=p.id_number, purpose="跨省互认"))
    if n == "CheckpointService/StreamScans":
        scan = st.builds(
            lambda sid, d, c: checkpoint_service_pb2.Scan(
                scan_id=sid,
                scan_time=_ts(-dt.timedelta(seconds=5)),
                direction=d,
                code=c,
                method=common_pb2.PASSAGE_METHOD_QR_CODE,
                temperature_celsius=36.5,
            ),
            _rid(),
            direction,
            code,
        )
        card_scan = st.builds(
            lambda sid, d, c: checkpoint_service_pb2.Scan(
                scan_id=sid,
                scan_time=_ts(-dt.timedelta(seconds=5)),
                direction=d,
                id_card=c,
                method=common_pb2.PASSAGE_METHOD_ID_NFC,
                temperature_celsius=36.5,
            ),
            _rid(),
            direction,
            card,
        )
        return st.lists(st.one_of(scan, card_scan), min_size=1, max_size=4).map(
            lambda s: cls(scans=s)
        )
    if n == "CheckpointService/RegisterByIdCard":
        return st.builds(
            lambda r, c, d, t: cls(
                request_id=r,
                id_card=c,
                method=common_pb2.PASSAGE_METHOD_ID_MANUAL,
                direction=d,
                temperature_celsius=t,
            ),
            _rid(),
            card,
            direction,
            temp,
        )
    if n == "CheckpointService/ListPassages":
        return st.builds(
            lambda z: cls(
                start_time=_ts(-dt.timedelta(days=2)), end_time=_ts(dt.timedelta()), page_size=z
            ),
            st.integers(0, 100),
        )
    if n == "CheckpointService/ListJurisdictionResidents":
        return st.builds(
            lambda z, c: cls(page_size=z, color=c), st.integers(0, 100), st.integers(0, 3)
        )
    if n == "CheckpointService/AddJurisdictionResident":
        return st.builds(
            lambda r, i, p: cls(request_id=r, identity=i, phone=p.phone, address=p.address),
            _rid(),
            ident,
            person,
        )
    if n == "AdminService/CreateCheckpoint":
        return _rid().map(
            lambda r: cls(request_id=r, name="测试卡口", division_code="510402", location="测试")
        )
    if n == "AdminService/ListCheckpoints":
        return st.sampled_from(["", "510402", "510403"]).map(
            lambda d: cls(division_code=d, page_size=10)
        )
    if n == "AdminService/CreateStaffAccount":
        return st.builds(
            lambda r, p: cls(
                request_id=r,
                phone=p.phone,
                display_name="测试员",
                role=common_pb2.ROLE_STAFF,
                checkpoint_id=e.checkpoint_id,
            ),
            _rid(),
            person,
        )
    if n == "AdminService/CreateDeviceEnrollment":
        return st.just(cls(checkpoint_id=e.checkpoint_id))
    if n == "AdminService/CreateServiceAccount":
        return st.builds(
            lambda r, ro: cls(request_id=r, role=ro, name="测试伙伴"),
            _rid(),
            st.sampled_from([common_pb2.ROLE_PARTNER, common_pb2.ROLE_PROVINCIAL]),
        )
    if n == "AdminService/ImportRiskList":
        return st.builds(
            lambda r, ps: cls(
                request_id=r,
                kind=admin_service_pb2.RISK_LIST_KIND_CLOSE_CONTACT,
                id_numbers=[p.id_number for p in ps],
                legal_basis=_LEGAL,
                duration_days=7,
            ),
            _rid(),
            st.lists(person, min_size=1, max_size=3),
        )
    if n == "AdminService/UpdateRiskAreas":
        return st.just(cls(add_division_codes=["110105"], legal_basis=_LEGAL))
    if n == "AdminService/ProposeStatusChange":
        return st.builds(
            lambda r, s: cls(
                request_id=r,
                subject_id=s,
                color=common_pb2.CODE_COLOR_YELLOW,
                legal_basis=_LEGAL,
                duration_days=3,
            ),
            _rid(),
            st.sampled_from([e.subject_id, e.dependent_id]),
        )
    if n == "AdminService/ReviewStatusChange":
        return st.builds(
            lambda a: cls(change_id=e.change_id, approve=a, comment="复核"), st.booleans()
        )
    if n == "AdminService/ListStatusChanges":
        return st.integers(0, 4).map(lambda s: cls(state=s, page_size=10))
    if n == "AdminService/ListCorrections":
        return st.booleans().map(lambda p: cls(pending_only=p, page_size=10))
    if n == "AdminService/ReviewCorrection":
        return st.builds(
            lambda a: cls(correction_id=e.correction_id, accept=a, comment="复核"), st.booleans()
        )
    if n == "AdminService/QueryPassages":
        return st.sampled_from(
            [{"subject_id": e.subject_id}, {"checkpoint_id": e.checkpoint_id}]
        ).map(
            lambda t: cls(
                start_time=_ts(-dt.timedelta(days=3)),
                end_time=_ts(dt.timedelta()),
                purpose="流行病学调查",
                page_size=20,
                **t,
            )
        )
    if n == "AdminService/UpdateRetentionSettings":
        return st.builds(
            lambda a, b: cls(
                settings=admin_service_pb2.RetentionSettings(passage_days=a, declaration_days=b)
            ),
            st.integers(28, 60),
            st.integers(28, 60),
        )
    if n == "AdminService/RevokeOfflineCodes":
        return st.just(cls(subject_id=e.dependent_id, reason="证件遗失"))
    # Requests without fields (GetProfile, ListDependents, Logout, GetSession, GetTrustList, ...)
    # and RPCs whose fields are all paging (ListMyCorrections).
    return st.just(cls())


def leaf_fields(desc: descriptor.Descriptor, prefix: tuple[FD, ...] = ()) -> list[tuple[FD, ...]]:
    """Field paths (up to two levels deep) a mutation may replace."""
    out: list[tuple[FD, ...]] = []
    for f in desc.fields:
        out.append((*prefix, f))
        if (
            f.type == FD.TYPE_MESSAGE
            and not f.is_repeated
            and not prefix
            and _message_type(f).full_name != "google.protobuf.Timestamp"
        ):
            out.extend(leaf_fields(_message_type(f), (*prefix, f)))
    return out


def mutated_requests(e: Env, rpc: Rpc) -> st.SearchStrategy[message.Message]:
    """A valid request with one field replaced by a random value, cleared, or an unknown field."""
    paths = leaf_fields(rpc.method.input_type)
    extra = e.strings()
    valid = valid_requests(e, rpc)
    values = {path: field_strategy(path[-1], extra, depth=len(path) - 1) for path in paths}

    @st.composite
    def mutate(draw: st.DrawFn) -> message.Message:
        base = draw(valid)
        msg = type(base)()
        msg.CopyFrom(base)
        kind = draw(st.sampled_from(["replace", "clear", "unknown"] if paths else ["unknown"]))
        if kind == "unknown":
            return type(base).FromString(msg.SerializeToString() + draw(_unknown_field()))
        path = draw(st.sampled_from(paths))
        target = msg
        for f in path[:-1]:
            target = getattr(target, f.name)
        leaf = path[-1]
        if kind == "clear":
            target.ClearField(leaf.name)
        else:
            set_field(target, leaf, draw(values[path]))
        return msg

    return mutate()


# --- the properties --------------------------------------------------------------------------


def callers_for(e: Env, rpc: Rpc) -> list[Caller]:
    """Callers allowed on ``rpc``: every allowed role, or anonymous for public RPCs."""
    roles = METHOD_ROLES[rpc.path]
    if not roles:
        return [e.callers["none"]]
    return [e.callers[r.value] for r in ROLE_ORDER if r in roles]


def _outcome(e: Env, rpc: Rpc, request: message.Message, caller: Caller) -> Outcome:
    token = caller.fresh() if rpc.method.name == "Logout" else caller.token
    try:
        call(e.channel, rpc, request, token)
    except grpc.RpcError as err:
        info = error_info(err)
        return Outcome(err.code(), info.reason if info else "", err.details() or "")
    return Outcome(grpc.StatusCode.OK, "", "")


def check_call(e: Env, rpc: Rpc, request: message.Message, caller: Caller) -> None:
    """One fuzz call and its properties."""
    before = e.counts()
    got = _outcome(e, rpc, request, caller)
    e.stats[f"{rpc.name} {got.code.name}/{got.reason}"] += 1
    e.stats["total"] += 1
    shape = _shape(request)
    assert got.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        f"{rpc.name} as {caller.label}: {got}; request shape {shape}"
    )
    assert not (
        got.code is grpc.StatusCode.PERMISSION_DENIED and got.reason == "ROLE_NOT_ALLOWED"
    ), f"{rpc.name}: allowed role {caller.label} refused: {got}"
    if got.code is grpc.StatusCode.UNAUTHENTICATED:
        assert rpc.name in CREDENTIAL_RPCS, f"{rpc.name} as {caller.label}: {got}"
    if got.code is not grpc.StatusCode.OK:
        after = e.counts()
        changed = {t: (before[t], after[t]) for t in e.tables if before[t] != after[t]}
        assert not changed, (
            f"{rpc.name} as {caller.label} was refused ({got}) but wrote rows {changed}; "
            f"request shape {shape}"
        )


def _shape(msg: message.Message) -> str:
    """Which fields were set, with lengths — never the values (they may look like PII)."""
    parts = []
    for f, value in msg.ListFields():
        if f.is_repeated:
            parts.append(f"{f.name}[{len(value)}]")
        elif f.type == FD.TYPE_MESSAGE:
            parts.append(f"{f.name}{{{_shape(value)}}}")
        elif f.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
            parts.append(f"{f.name}(len {len(value)})")
        else:
            parts.append(f"{f.name}={value!r}")
    return ", ".join(parts)


def _settings(n: int) -> settings:
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def _budget(rpc: Rpc, base: int) -> int:
    if not rpc.request_class.DESCRIPTOR.fields:
        return 5  # nothing to vary but the caller
    if rpc.method.name == "Logout":
        return 5
    return base


def _assert_serving(e: Env) -> None:
    health = health_pb2_grpc.HealthStub(e.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.slow
@pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])
def test_random_requests(env: Env, rpc: Rpc) -> None:
    """Random requests from the descriptor, with every allowed role."""
    strategy = message_strategy(rpc.method.input_type, env.strings())

    @_settings(_budget(rpc, EXAMPLES))
    @given(request=strategy, caller=st.sampled_from(callers_for(env, rpc)))
    def prop(request: message.Message, caller: Caller) -> None:
        check_call(env, rpc, request, caller)

    prop()
    _assert_serving(env)


MUTABLE = [r for r in RPCS if r.request_class.DESCRIPTOR.fields]


@pytest.mark.slow
@pytest.mark.parametrize("rpc", MUTABLE, ids=[r.name for r in MUTABLE])
def test_mutated_valid_requests(env: Env, rpc: Rpc) -> None:
    """Valid requests with one field flipped, cleared or an unknown field added."""

    @_settings(max(EXAMPLES // 2, 5))
    @given(request=mutated_requests(env, rpc), caller=st.sampled_from(callers_for(env, rpc)))
    def prop(request: message.Message, caller: Caller) -> None:
        check_call(env, rpc, request, caller)

    prop()
    _assert_serving(env)


@pytest.mark.slow
def test_valid_requests_are_accepted_somewhere(env: Env) -> None:
    """Sanity of the fuzzer itself: the valid requests reach deep into the handlers (some OK)."""
    print(f"\nfuzz outcomes ({env.stack.backend}):")  # shown with -s / -rA
    for key, count in sorted(env.stats.items()):
        print(f"  {key}: {count}")
    ok = [k for k, v in env.stats.items() if " OK/" in k and v]
    if env.stats["total"] == 0:
        pytest.skip("the fuzz tests did not run in this session")
    assert env.stats["total"] >= 20 * len(RPCS), env.stats["total"]
    assert len(ok) >= len(RPCS) // 2, sorted(ok)
    _assert_serving(env)
