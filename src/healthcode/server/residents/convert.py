"""Rows of the residents domain as protobuf messages (masked identity only)."""

from __future__ import annotations

from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2 as pb

from healthcode.server.common.convert import to_timestamp
from healthcode.server.db.models import Checkpoint, Passage, Person
from healthcode.server.residents.models import Correction


def masked_identity(person: Person) -> common_pb2.MaskedIdentity:
    """The person's masked name, ID number and phone."""
    return common_pb2.MaskedIdentity(
        masked_name=person.masked_name,
        masked_id_number=person.masked_id_number,
        masked_phone=person.masked_phone or "",
    )


def profile(person: Person) -> pb.Profile:
    """The resident's own profile."""
    msg = pb.Profile(
        subject_id=person.id,
        identity=masked_identity(person),
        division_code=person.division_code,
        masked_address=person.masked_address or "",
    )
    created = to_timestamp(person.created_at)
    if created is not None:
        msg.create_time.CopyFrom(created)
    return msg


def dependent(person: Person) -> pb.Dependent:
    """A dependent of the caller."""
    return pb.Dependent(
        subject_id=person.id,
        identity=masked_identity(person),
        relationship=person.relationship,
        division_code=person.division_code,
    )


def passage(row: Passage, person: Person, checkpoint: Checkpoint | None) -> common_pb2.Passage:
    """One of the person's passages."""
    msg = common_pb2.Passage(
        passage_id=row.id,
        checkpoint_id=row.checkpoint_id,
        checkpoint_name=checkpoint.name if checkpoint else "",
        division_code=row.division_code,
        identity=masked_identity(person),
        color=row.color,  # type: ignore[arg-type]
        direction=row.direction,  # type: ignore[arg-type]
        method=row.method,  # type: ignore[arg-type]
        decision=row.decision,  # type: ignore[arg-type]
        offline=row.offline,
        temperature_celsius=row.temperature,
    )
    occurred = to_timestamp(row.occurred_at)
    if occurred is not None:
        msg.occurred_at.CopyFrom(occurred)
    return msg


def correction(row: Correction) -> pb.Correction:
    """A correction with its review state."""
    try:
        state = pb.CorrectionState.Value(f"CORRECTION_STATE_{row.state}")
    except ValueError:
        state = pb.CORRECTION_STATE_UNSPECIFIED
    msg = pb.Correction(
        correction_id=row.id,
        subject_id=row.person_id,
        change_id=row.change_id or "",
        reason=row.reason,
        state=state,
        review_comment=row.review_comment or "",
    )
    created = to_timestamp(row.created_at)
    if created is not None:
        msg.create_time.CopyFrom(created)
    reviewed = to_timestamp(row.reviewed_at)
    if reviewed is not None:
        msg.review_time.CopyFrom(reviewed)
    return msg
