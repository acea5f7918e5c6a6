"""TLS options against an HTTPS sandbox with a self-signed certificate.

Verification is on by default and fails with a message that says what to do;
``ca_bundle`` makes the same server trusted; ``verify_tls = false`` works, with a
warning. The certificate is made by ``openssl`` for each test session.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hourly_report.sandbox import Sandbox
from tests.conftest import CLIENT_ID, CLIENT_SECRET, TENANT, run_process

RUN = ("run", "--at", "2026-02-12T08:05:00Z")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "the TLS tests need the openssl command"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "gateway.pem", folder / "gateway.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_sandbox(certificate: tuple[Path, Path]) -> Iterator[Sandbox]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with Sandbox(
        tenant_id=TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, tls=context
    ) as server:
        yield server


def test_a_self_signed_gateway_is_refused_by_default_with_advice(
    https_sandbox: Sandbox, make_config, invoke
) -> None:
    assert https_sandbox.base_url.startswith("https://")
    result = invoke(make_config(https_sandbox), *RUN)

    assert result.exit_code == 1
    assert "TLS verification failed" in result.stderr
    assert "ca_bundle" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert https_sandbox.state.count("create") == 0
    assert https_sandbox.state.tokens_issued == 0


def test_naming_the_gateway_ca_in_ca_bundle_makes_it_trusted(
    https_sandbox: Sandbox, certificate: tuple[Path, Path], make_config, invoke
) -> None:
    config = make_config(https_sandbox, opsramp={"ca_bundle": str(certificate[0])})

    result = invoke(config, *RUN)

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert https_sandbox.state.count("create") == 1
    assert https_sandbox.state.connections == 1


def test_verify_tls_false_connects_but_warns_once(
    https_sandbox: Sandbox, make_config, tmp_path: Path
) -> None:
    config = make_config(https_sandbox, opsramp={"verify_tls": "false"})

    result = run_process(config, "backfill", "--date", "2026-02-12", "--at", "2026-02-12T03:00Z")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("TLS certificate verification is OFF") == 1
    assert "InsecureRequestWarning" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert https_sandbox.state.count("create") == 3


def test_https_to_a_plain_http_port_says_so_instead_of_blaming_the_certificate(
    sandbox: Sandbox, make_config, invoke
) -> None:
    assert sandbox.base_url.startswith("http://")
    https_url = sandbox.base_url.replace("http://", "https://", 1)

    result = invoke(make_config(https_url), *RUN)

    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert f"the server at {https_url} did not answer TLS (" in line
    assert line.endswith("does base_url use https:// for a plain-http port?")
    assert "ca_bundle" not in line
    assert "TLS verification failed" not in line
    assert sandbox.state.tokens_issued == 0


def test_a_certificate_failure_is_still_a_verification_failure_with_ca_bundle_advice(
    https_sandbox: Sandbox, make_config, invoke
) -> None:
    result = invoke(make_config(https_sandbox), *RUN)

    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert f"TLS verification failed for {https_sandbox.base_url} (" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line
    assert "set [opsramp] ca_bundle" in line
    assert "did not answer TLS" not in line
