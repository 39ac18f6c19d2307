"""Provisioning and deprovisioning against the stand-in, and the CLI texts of docs/cli.md#commands."""
from __future__ import annotations

import pytest

from iofogd.controller.client import ControllerClient
from iofogd.controller.provision import (
    ProvisionResult,
    deprovision,
    deprovision_text,
    fog_type_code,
    provision,
    provision_text,
)
from tests.controller.standin import ControllerStandIn


def client(url: str, token: str | None = None) -> ControllerClient:
    return ControllerClient(url, token=token, cert_path=None, secure_mode=False, connect_timeout=5, read_timeout=5)


def test_provision_success_carries_uuid_and_token() -> None:
    with ControllerStandIn() as st:
        fog = st.create_fog()
        result = provision(client(st.url), st.provisioning_key(fog), "arm")
        assert result == ProvisionResult(ok=True, uuid=fog, token=str(st.token(fog)))
        assert st.recorded("POST", "agent/provision")[0].body["type"] == 2
        assert str(st.token(fog)) not in repr(result)


def test_provision_failure_carries_the_controllers_message() -> None:
    with ControllerStandIn() as st:
        result = provision(client(st.url), "XXXXXXXX", "intel_amd")
        assert not result.ok and result.status == 404 and result.token == ""
        assert result.error.startswith("Invalid Provisioning Key (")
        st.vanish()
        result = provision(client(st.url), "XXXXXXXX", "intel_amd")
        assert result.status is None
        assert result.error.startswith("Connection error: unable to connect to fog controller.")


def test_provision_texts_are_upstreams_with_literal_backslash_n() -> None:
    ok = ProvisionResult(ok=True, uuid="4JtjzB8ccWMMyLm7wg8VrbGPKXpnYQyr", token="t")
    assert provision_text("XVqqG4cW", ok) == (
        'Provisioning with key "XVqqG4cW" ... Result: \\nProvision success - Iofog UUID is 4JtjzB8ccWMMyLm7wg8VrbGPKXpnYQyr'
    )
    failed = ProvisionResult(ok=False, error="Invalid Provisioning Key", status=404)
    assert provision_text("K", failed) == (
        'Provisioning with key "K" ... Result: \\nProvision failed with error message: "Invalid Provisioning Key"'
    )
    assert provision_text("K", None) == 'Provisioning with key "K" ... Result: \\nProvisioning failed'
    assert "\n" not in provision_text("K", ok)


def test_deprovision_texts_carry_a_real_newline() -> None:
    assert deprovision_text(provisioned=True) == (
        "Deprovisioning from controller ... \nSuccess - tokens, identifiers and keys removed"
    )
    assert deprovision_text(provisioned=False) == "Deprovisioning from controller ... \nFailure - not provisioned"
    assert deprovision_text(provisioned=True, in_progress=True) == (
        "Deprovisioning from controller ... Provisioning in progress"
    )


def test_deprovision_tells_the_controller_with_the_microservice_uuids() -> None:
    with ControllerStandIn() as st:
        fog = st.create_fog()
        token = provision(client(st.url), st.provisioning_key(fog), "intel_amd").token
        router = next(iter(st.microservices))
        assert deprovision(client(st.url, token), [router]) is True
        assert st.recorded("POST", "agent/deprovision")[0].body == {"microserviceUuids": [router]}
        assert st.fog_view(fog)["daemonStatus"] == "UNKNOWN"
        assert st.microservices[router].status["status"] == "DELETING"
        assert deprovision(client(st.url, "badtoken"), []) is False  # refused: logged, not raised
        st.vanish()
        assert deprovision(client(st.url, token), []) is False


def test_fog_type_codes() -> None:
    assert (fog_type_code("intel_amd"), fog_type_code("arm")) == (1, 2)
    with pytest.raises(ValueError):
        fog_type_code("auto")
