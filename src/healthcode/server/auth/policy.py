"""Which roles may call which RPC. One table; the auth interceptor enforces it, fail-closed.

An RPC missing from the table is refused for everyone (a test pins that every RPC of every
service is listed). ``PUBLIC`` RPCs need no token. Finer rules (own checkpoint, own jurisdiction,
own dependents, second approver) are checked in the services.
"""

from __future__ import annotations

from typing import Final

from healthcode.server.common.principal import Role

PUBLIC: Final[frozenset[Role]] = frozenset()
ANY: Final[frozenset[Role]] = frozenset(Role)

R = Role
_OFFICIALS = frozenset({R.DISTRICT_ADMIN, R.HEALTH_AUTHORITY})

METHOD_ROLES: Final[dict[str, frozenset[Role]]] = {
    # AuthService
    "/healthcode.v1.AuthService/SendLoginCode": PUBLIC,
    "/healthcode.v1.AuthService/Login": PUBLIC,
    "/healthcode.v1.AuthService/RefreshToken": PUBLIC,
    "/healthcode.v1.AuthService/EnrollDevice": PUBLIC,
    "/healthcode.v1.AuthService/Logout": ANY,
    "/healthcode.v1.AuthService/GetSession": ANY,
    # ResidentService
    "/healthcode.v1.ResidentService/RegisterProfile": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/GetProfile": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/AddDependent": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/ListDependents": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/SubmitHealthDeclaration": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/SubmitTravelDeclaration": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/GetHealthStatus": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/ListMyPassages": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/FileCorrection": frozenset({R.RESIDENT}),
    "/healthcode.v1.ResidentService/ListMyCorrections": frozenset({R.RESIDENT}),
    # CodeService
    "/healthcode.v1.CodeService/IssueCode": frozenset({R.RESIDENT}),
    "/healthcode.v1.CodeService/IssueOfflineCode": frozenset({R.RESIDENT, R.STAFF}),
    # VerificationService
    "/healthcode.v1.VerificationService/VerifyCode": frozenset({R.STAFF, R.DEVICE, R.PARTNER}),
    "/healthcode.v1.VerificationService/BatchVerifyCodes": frozenset(
        {R.STAFF, R.DEVICE, R.PARTNER, R.PROVINCIAL}
    ),
    "/healthcode.v1.VerificationService/GetTrustList": PUBLIC,
    "/healthcode.v1.VerificationService/GetRevocationList": PUBLIC,
    "/healthcode.v1.VerificationService/QueryStatusByIdentity": frozenset(
        {R.PROVINCIAL, R.HEALTH_AUTHORITY}
    ),
    # CheckpointService
    "/healthcode.v1.CheckpointService/StreamScans": frozenset({R.DEVICE, R.STAFF}),
    "/healthcode.v1.CheckpointService/RegisterByIdCard": frozenset({R.STAFF, R.DEVICE}),
    "/healthcode.v1.CheckpointService/ListPassages": frozenset({R.STAFF}),
    "/healthcode.v1.CheckpointService/ListJurisdictionResidents": frozenset(
        {R.STAFF, R.DISTRICT_ADMIN}
    ),
    "/healthcode.v1.CheckpointService/AddJurisdictionResident": frozenset(
        {R.STAFF, R.DISTRICT_ADMIN}
    ),
    # AdminService
    "/healthcode.v1.AdminService/CreateCheckpoint": _OFFICIALS,
    "/healthcode.v1.AdminService/ListCheckpoints": _OFFICIALS,
    "/healthcode.v1.AdminService/CreateStaffAccount": _OFFICIALS,
    "/healthcode.v1.AdminService/CreateDeviceEnrollment": _OFFICIALS,
    "/healthcode.v1.AdminService/CreateServiceAccount": frozenset({R.HEALTH_AUTHORITY}),
    "/healthcode.v1.AdminService/ImportRiskList": frozenset({R.HEALTH_AUTHORITY}),
    "/healthcode.v1.AdminService/UpdateRiskAreas": frozenset({R.HEALTH_AUTHORITY}),
    "/healthcode.v1.AdminService/ProposeStatusChange": _OFFICIALS,
    "/healthcode.v1.AdminService/ReviewStatusChange": _OFFICIALS,
    "/healthcode.v1.AdminService/ListStatusChanges": _OFFICIALS,
    "/healthcode.v1.AdminService/ListCorrections": _OFFICIALS,
    "/healthcode.v1.AdminService/ReviewCorrection": _OFFICIALS,
    "/healthcode.v1.AdminService/QueryPassages": _OFFICIALS,
    "/healthcode.v1.AdminService/GetRetentionSettings": frozenset(
        {R.DISTRICT_ADMIN, R.HEALTH_AUTHORITY, R.SECURITY_OFFICER}
    ),
    "/healthcode.v1.AdminService/UpdateRetentionSettings": frozenset({R.HEALTH_AUTHORITY}),
    "/healthcode.v1.AdminService/RotateIssuerKey": frozenset({R.HEALTH_AUTHORITY}),
    "/healthcode.v1.AdminService/RevokeOfflineCodes": _OFFICIALS,
}

#: Infrastructure services open to everyone (load balancers, grpcurl).
OPEN_PREFIXES: Final[tuple[str, ...]] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def allowed_roles(method: str) -> frozenset[Role] | None:
    """Roles allowed on ``method``; ``PUBLIC`` (empty) for open calls; None when unknown."""
    if method.startswith(OPEN_PREFIXES):
        return PUBLIC
    return METHOD_ROLES.get(method)
