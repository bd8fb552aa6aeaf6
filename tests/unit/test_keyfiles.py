"""Key files: the IPsec secret and certificates, read and checked like ssh's private keys."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ovsvnet import ipsec as I
from ovsvnet.errors import ConfigError
from ovsvnet.system import keyfiles as K

SECRET = b"0123456789abcdef0123456789abcdef"
PSK = I.PskCredentials(SECRET)


def _file(tmp_path: Path, name: str, data: bytes, mode: int) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    p.chmod(mode)
    return p


def test_read_secret_accepts_0600_and_strips_the_newline(tmp_path):
    p = _file(tmp_path, "secret", SECRET + b"\n", 0o600)
    assert K.read_secret(p) == SECRET
    assert K.read_secret(_file(tmp_path, "s400", SECRET, 0o400)) == SECRET


@pytest.mark.parametrize("mode, who", [(0o644, "group and others"), (0o640, "its group"),
                                       (0o604, "others"), (0o660, "its group")])
def test_read_secret_refuses_files_open_to_others(tmp_path, mode, who):
    p = _file(tmp_path, "secret", SECRET, mode)
    with pytest.raises(ConfigError) as err:
        K.read_secret(p)
    assert f"accessible by {who} (mode {mode:04o})" in str(err.value)
    assert f"chmod 600 {p}" in str(err.value)
    assert SECRET.decode() not in str(err.value)


def test_read_secret_other_failures(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        K.read_secret(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a regular file"):
        K.read_secret(tmp_path)
    with pytest.raises(ConfigError, match="holds 3 bytes; use at least 32 random bytes"):
        K.read_secret(_file(tmp_path, "short", b"abc\n", 0o600))
    with pytest.raises(ConfigError, match="looks guessable"):
        K.read_secret(_file(tmp_path, "weak", b"password" * 4 + b"\n", 0o600))
    with pytest.raises(ConfigError, match="not a regular file"):
        K.read_secret("/dev/zero")


def test_keygen_writes_a_strong_private_key_once(tmp_path):
    path = tmp_path / "discovery.key"
    K.write_key(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    key = K.read_key(path, "key-file")
    assert len(key) == 44 and K.entropy_bits(key) > 4.5
    with pytest.raises(ConfigError, match="exists; remove it first"):
        K.write_key(path)
    assert K.read_key(path, "key-file") == key


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    try:
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
                 "-days", "2", "-subj", "/O=ovsvnet test/CN=test ca")
        for name, subj in (("good", "/O=ovsvnet test/OU=hosts/CN=host-a"),
                           ("bare", "/CN=host-b")):
            _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                     "-subj", subj)
            _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                     "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                     "-out", str(d / f"{name}.pem"))
            os.chmod(d / f"{name}.key", 0o600)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make test certificates: {exc}")
    return d


def test_load_certificates(pki):
    creds = K.load_certificates(str(pki / "ca.pem"), str(pki / "good.pem"),
                                str(pki / "good.key"))
    assert creds.local_name == "host-a"
    assert I.open_vswitch_other_config(creds)["certificate"] == str(pki / "good.pem")


def test_load_certificates_refuses_what_the_monitor_cannot_use(pki, tmp_path):
    with pytest.raises(ConfigError, match="finds no CN"):
        K.load_certificates(str(pki / "ca.pem"), str(pki / "bare.pem"), str(pki / "bare.key"))
    loose = _file(tmp_path, "loose.key", (pki / "good.key").read_bytes(), 0o644)
    with pytest.raises(ConfigError, match=r"private_key: .* \(mode 0644\); run: chmod 600"):
        K.load_certificates(str(pki / "ca.pem"), str(pki / "good.pem"), str(loose))
    with pytest.raises(ConfigError, match="ca_cert: .* does not exist"):
        K.load_certificates(str(tmp_path / "nope.pem"), str(pki / "good.pem"),
                            str(pki / "good.key"))
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        K.load_certificates(str(pki / "ca.pem"), str(pki / "good.key"), str(pki / "good.key"))


def test_credentials_from_settings(pki, tmp_path):
    assert K.credentials_from_settings({}) is None
    secret = _file(tmp_path, "secret", SECRET + b"\n", 0o600)
    creds = K.credentials_from_settings({"ovsvnet-ipsec-secret-file": str(secret)})
    assert creds == PSK
    certs = {"ovsvnet-ipsec-ca-cert": str(pki / "ca.pem"),
             "ovsvnet-ipsec-certificate": str(pki / "good.pem"),
             "ovsvnet-ipsec-private-key": str(pki / "good.key")}
    creds = K.credentials_from_settings(certs)
    assert isinstance(creds, I.CertCredentials) and creds.local_name == "host-a"
    with pytest.raises(ConfigError, match="choose one"):
        K.credentials_from_settings({**certs, "ovsvnet-ipsec-secret-file": str(secret)})
    with pytest.raises(ConfigError, match="also needs ovsvnet-ipsec-private-key"):
        K.credentials_from_settings({k: v for k, v in certs.items() if "private" not in k})
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        K.credentials_from_settings({"ovsvnet-ipsec-secret-file": str(secret)})
