"""Provisioning and deprovisioning against the Controller (docs/cli.md#commands, docs/controller-api.md#provisioning, #deprovisioning).

This module does the Controller half and formats the CLI texts; the daemon
does the local half (deprovision first when already provisioned, store uuid
and token atomically in config.xml, stop containers, clear state), because
only it owns the configuration and the microservice layer.

The CLI texts are upstream's ``cmd_messages.properties``: ``\\n`` in
``PROVISION_*`` is a LITERAL backslash-n (the CLI client turns it into a
newline), whereas the deprovision texts carry a real newline (docs/cli.md#commands).
"""
from __future__ import annotations

import logging


from iofogd.controller.client import ControllerClient, explain
from iofogd.errors import ControllerError
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Final

log = logging.getLogger(__name__)

# docs/controller-api.md#provisioning: the ``type`` sent at provisioning; the Controller's fog types are
# 0 unspecified, 1 "Standard Linux (x86)", 2 "ARM Linux" (seed.log step 4).
FOG_TYPES = {"intel_amd": 1, "arm": 2}

PROVISION_MSG = 'Provisioning with key "{key}" ... Result: {result}'
PROVISION_SUCCESS = "\\nProvision success - Iofog UUID is {uuid}"
PROVISION_FAILED = '\\nProvision failed with error message: "{message}"'
PROVISION_COMMON_ERROR = "\\nProvisioning failed"
DEPROVISION_MSG = "Deprovisioning from controller ... {result}"
DEPROVISION_SUCCESS = "\nSuccess - tokens, identifiers and keys removed"
DEPROVISION_NOT_PROVISIONED = "\nFailure - not provisioned"
DEPROVISION_IN_PROGRESS = "Provisioning in progress"


def fog_type_code(fog_type: str) -> int:
    """The Controller's integer for ``intel_amd`` / ``arm`` (``ValueError`` otherwise)."""
    try:
        return FOG_TYPES[fog_type]
    except KeyError:
        raise ValueError(f"fog type must be one of {', '.join(FOG_TYPES)}, not {fog_type!r}") from None


class ProvisionResult(Record):
    """What provisioning gave: ``uuid`` and ``token`` on success, else ``error``.

    ``error`` is the Controller's message (as upstream shows it) followed by an
    explanation; ``status`` is the Controller's HTTP status when it answered.
    """

    __slots__ = ("ok", "uuid", "token", "error", "status")
    ok: Final[bool]
    uuid: Final[str]
    token: Final[str]
    error: Final[str]
    status: Final[int | None]

    def __init__(
        self,
        ok: bool,
        uuid: str = "",
        token: str = "",
        error: str = "",
        status: int | None = None,
    ) -> None:
        self.ok = ok
        self.uuid = uuid
        self.token = token
        self.error = error
        self.status = status

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"ProvisionResult(ok={self.ok}, uuid={self.uuid!r}, error={self.error!r}, status={self.status})"


def provision(client: ControllerClient, key: str, fog_type: str) -> ProvisionResult:
    """POST agent/provision with ``key`` and the fog type; never raises for Controller failures.

    ``client`` must carry no token (the route takes none); ``fog_type`` is
    ``intel_amd`` or ``arm`` (``Config.fog_type``, resolved from the machine).
    """
    try:
        answer = client.provision(key, fog_type_code(fog_type))
    except ControllerError as exc:
        log.warning("provisioning failed: %s", explain(exc))
        return ProvisionResult(ok=False, error=explain(exc), status=exc.status)
    log.info("provisioned as node %s", answer["uuid"])
    return ProvisionResult(ok=True, uuid=answer["uuid"], token=answer["token"])


def deprovision(client: ControllerClient, microservice_uuids: list[str]) -> bool:
    """Tell the Controller the node leaves (POST agent/deprovision); True when it acknowledged.

    Upstream ignores the Controller's errors here (docs/controller-api.md#deprovisioning): the local
    deprovision goes ahead anyway, so this only logs them.
    """
    try:
        client.deprovision(microservice_uuids)
    except ControllerError as exc:
        log.warning("controller not told about deprovisioning: %s", explain(exc))
        return False
    return True


def provision_text(key: str, result: ProvisionResult | None) -> str:
    """The CLI answer to ``provision <key>`` (docs/cli.md#commands); None means no result at all."""
    if result is None:
        outcome = PROVISION_COMMON_ERROR
    elif result.ok:
        outcome = PROVISION_SUCCESS.format(uuid=result.uuid)
    else:
        outcome = PROVISION_FAILED.format(message=result.error)
    return PROVISION_MSG.format(key=key, result=outcome)


def deprovision_text(*, provisioned: bool, in_progress: bool = False) -> str:
    """The CLI answer to ``deprovision`` (docs/cli.md#commands); success unless not provisioned or busy."""
    if in_progress:
        return DEPROVISION_MSG.format(result=DEPROVISION_IN_PROGRESS)
    return DEPROVISION_MSG.format(result=DEPROVISION_SUCCESS if provisioned else DEPROVISION_NOT_PROVISIONED)
