"""The registry's PKI with the real ovs-pki and openssl, without root: two CAs, identities
whose CA file lets a server trust both and an agent only servers, keys kept private, and the
checks a member's and an agent's files get before a daemon is given them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovsvnet.errors import ConfigError, ConflictError, NotFoundError
from ovsvnet.ovsdb import SslFiles
from ovsvnet.registry import pki

pytestmark = pytest.mark.skipif(not (shutil.which("ovs-pki") and shutil.which("openssl")),
                                reason="needs ovs-pki (openvswitch-common) and openssl")
BITS = 1024  # fast (no TLS handshake here needs more); the default is 3072
SID = "6f1c2d8e-0b7d-4a4e-9d8e-3c1c5e0b2a11"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "pki"
    pki.init(d, bits=BITS)
    return d


@pytest.fixture(scope="module")
def server(ca: Path) -> Path:
    return pki.issue(ca, "server", "r1", bits=BITS)


@pytest.fixture(scope="module")
def chassis(ca: Path) -> Path:
    return pki.issue(ca, "chassis", SID, bits=BITS)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def test_init_makes_two_cas_with_private_keys(ca: Path):
    assert mode(ca) == 0o700
    for kind, sub in (("server", "controllerca"), ("chassis", "switchca")):
        assert pki.ca_cert(ca, kind) == ca / sub / "cacert.pem"
        assert mode(ca / sub / "private" / "cakey.pem") == 0o600
    with pytest.raises(ConflictError, match="a CA is never overwritten"):
        pki.init(ca, bits=BITS)


def test_a_server_identity_keeps_its_peers_and_its_clients_cas_apart(ca: Path, server: Path):
    d = server
    assert d == ca / "servers" / "r1" and mode(d) == 0o700
    assert mode(d / pki.KEY) == 0o600
    assert sorted(p.name for p in d.iterdir()) == [  # no CSR left
        pki.CA, pki.CERT, pki.CLIENT_CA, pki.KEY]
    assert pki.check_member(pki.member_identity(d)) == "r1"
    # Raft peers: the server CA only; the relay's clients: the chassis CA only
    assert (d / pki.CA).read_text() == pki.ca_cert(ca, "server").read_text()
    assert (d / pki.CLIENT_CA).read_text() == pki.ca_cert(ca, "chassis").read_text()
    text = openssl("x509", "-noout", "-text", "-in", str(d / pki.CERT)).stdout
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert openssl("verify", "-CAfile", str(pki.ca_cert(ca, "server")),
                   str(d / pki.CERT)).returncode == 0


def test_a_chassis_identity_is_named_after_the_system_id_and_trusts_only_servers(
        ca: Path, chassis: Path):
    sid, d = SID, chassis
    assert d == ca / "chassis" / SID
    files = pki.identity(d)
    pki.check_chassis(files, sid)
    assert (d / pki.CA).read_text() == pki.ca_cert(ca, "server").read_text()
    # signed by the chassis CA only: an agent (which trusts the server CA) never accepts it
    assert openssl("verify", "-CAfile", str(pki.ca_cert(ca, "server")),
                   files.certificate).returncode != 0
    text = openssl("x509", "-noout", "-text", "-in", files.certificate).stdout
    assert "TLS Web Client Authentication" in text and "Server Authentication" not in text
    with pytest.raises(ConfigError, match=f"is for '{sid}', not this host's system-id "
                                          "'other'.*ovsvnet registry pki chassis other"):
        pki.check_chassis(files, "other")
    with pytest.raises(ConfigError, match="does not verify against .*: unable to get "
                                          "local issuer certificate"):
        pki.check_identity(files, verify=True)  # its CA file holds the server CA only


def test_issue_refuses_bad_names_a_missing_pki_and_overwriting(ca: Path, server: Path,
                                                               tmp_path: Path):
    with pytest.raises(ConfigError, match="name: 'a b' is not a certificate name"):
        pki.issue(ca, "chassis", "a b", bits=BITS)
    with pytest.raises(ConfigError, match="kind: 'switch' is not one of server, chassis"):
        pki.issue(ca, "switch", "x", bits=BITS)
    with pytest.raises(NotFoundError, match="run: ovsvnet registry pki init"):
        pki.issue(tmp_path / "none", "chassis", "x", bits=BITS)
    with pytest.raises(ConflictError, match="never overwritten"):
        pki.issue(ca, "server", "r1", bits=BITS)
    assert pki.check_member(pki.member_identity(server)) == "r1"  # untouched


def test_checks_refuse_an_open_key_and_a_foreign_certificate(server: Path, chassis: Path,
                                                             tmp_path: Path):
    shutil.copytree(server, tmp_path / "a")
    # one CA for members and chassis: a chassis could open Raft and pose as a server
    same = pki.member_identity(tmp_path / "a")
    same = pki.MemberTls(same.private_key, same.certificate, same.ca_cert, same.ca_cert)
    with pytest.raises(ConfigError, match="also signs this member's certificate"):
        pki.check_member(same)
    a, b = pki.identity(tmp_path / "a"), pki.identity(chassis)
    os.chmod(a.private_key, 0o640)
    with pytest.raises(ConfigError, match="accessible by its group.*chmod 600"):
        pki.check_identity(a, verify=True)
    os.chmod(a.private_key, 0o600)
    with pytest.raises(ConfigError, match="is not the certificate of"):
        pki.check_identity(SslFiles(a.private_key, b.certificate, a.ca_cert), verify=True)
    with pytest.raises(ConfigError, match="is not a readable file"):
        pki.check_identity(SslFiles(a.private_key, str(tmp_path / "nope"), a.ca_cert),
                           verify=True)


# -- the commands ------------------------------------------------------------------------------

def ovsvnet(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line (its one-line errors and exit codes come from main())."""
    return subprocess.run([sys.executable, "-m", "ovsvnet", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_pki_commands_make_what_members_and_agents_are_given(tmp_path: Path):
    d = tmp_path / "pki"
    out = ovsvnet("registry", "pki", "init", "--dir", str(d), "--bits", str(BITS))
    assert out.returncode == 0 and "created the server CA" in out.stdout, out.stderr
    out = ovsvnet("registry", "pki", "server", "r1", "--dir", str(d), "--bits", str(BITS))
    assert f"created {d}/servers/r1/privkey.pem (0600)" in out.stdout, out.stderr
    env_dir = {"OVSVNET_PKI_DIR": str(d)}
    out = subprocess.run([sys.executable, "-m", "ovsvnet", "registry", "pki", "chassis",
                          "hv-1", "--bits", str(BITS)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env_dir})
    assert "for an agent" in out.stdout, out.stderr
    pki.check_chassis(pki.identity(d / "chassis" / "hv-1"), "hv-1")
    out = ovsvnet("registry", "pki", "chassis", "hv-1", "--dir", str(d))
    assert out.returncode == 3 and "never overwritten" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_init_wants_a_certificate_or_insecure_by_name(tmp_path: Path):
    d = str(tmp_path / "member")
    out = ovsvnet("registry", "init", "--dir", d, "--address", "10.0.0.1", "--no-start")
    assert out.returncode == 2 and "or --insecure for plain TCP" in out.stderr
    out = ovsvnet("registry", "join", "--dir", d, "--address", "10.0.0.1", "--peer",
                  "10.0.0.2", "--insecure", "--certificate", "c.pem", "--no-start")
    assert out.returncode == 2 and "takes no --pki-dir or certificate" in out.stderr
    out = ovsvnet("registry", "init", "--dir", d, "--address", "10.0.0.1", "--no-start",
                  "--pki-dir", str(tmp_path / "none"))
    assert out.returncode == 2 and "is not a readable file" in out.stderr
    assert not (tmp_path / "member" / "registry.db").exists()  # nothing half-made
