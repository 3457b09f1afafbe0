"""Imports every model module so ``Base.metadata`` knows every table (Alembic, tests)."""

from healthcode.server.auth import models as auth_models
from healthcode.server.codes import models as codes_models
from healthcode.server.db import models as core_models
from healthcode.server.residents import models as residents_models
from healthcode.server.status import models as status_models

__all__ = ["auth_models", "codes_models", "core_models", "residents_models", "status_models"]
