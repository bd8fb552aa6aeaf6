"""Key material on disk: the IPsec secret file and certificates (read and checked here).

Every file holding a secret must be a regular file owned by root (or this user) and
readable by its owner only, like ssh's rule for private keys; a file that is read is checked
through the same open file, so it cannot be swapped in between.
"""

from __future__ import annotations

import base64
import math
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from ovsvnet import ipsec
from ovsvnet.errors import ConfigError
from ovsvnet.system import proc

#: A secret or key file is small; a larger one (or a FIFO, a device) is a mistake.
MAX_SECRET_FILE = 64 * 1024


def _check_mode(st: os.stat_result, p: Path, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what}: {p} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        who = "group and others" if mode & 0o070 and mode & 0o007 else (
            "its group" if mode & 0o070 else "others")
        raise ConfigError(f"{what}: {p} is accessible by {who} (mode {mode:04o}); "
                          f"run: chmod 600 {p}")
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{what}: {p} is owned by uid {st.st_uid}, not by root or by "
                          f"uid {os.geteuid()}; run: chown root {p}")


def _open_error(exc: OSError, p: Path, what: str) -> ConfigError:
    if isinstance(exc, FileNotFoundError):
        return ConfigError(f"{what}: {p} does not exist")
    if isinstance(exc, PermissionError):
        return ConfigError(f"{what}: {p} cannot be read (permission denied)")
    return ConfigError(f"{what}: cannot read {p}: {exc.strerror or exc}")


def check_private_file(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """Refuse a key file that is missing, not a regular file, or open to others."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise _open_error(exc, p, what) from None
    _check_mode(st, p, what)
    return st


def read_private_file(path: str | os.PathLike[str], what: str,
                      limit: int = MAX_SECRET_FILE) -> bytes:
    """The bytes of a private file, checked (as :func:`check_private_file`) on the very
    file that is read: opened non-blocking (a FIFO cannot hang us), checked with fstat,
    read up to ``limit`` bytes (more is refused)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise _open_error(exc, p, what) from None
    try:
        _check_mode(os.fstat(fd), p, what)
    except ConfigError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{what}: {p} is larger than {limit} bytes; it is not a key file")
    return data


#: A key or secret is at least this many bytes ...
MIN_KEY_BYTES = 32
#: ... with at least this much Shannon entropy per byte: base64 of random bytes has about
#: 5.5, hex about 4, English text about 4; "passwordpassword..." has 2.75.
MIN_ENTROPY_BITS = 3.5


def entropy_bits(data: bytes) -> float:
    """Shannon entropy per byte of ``data`` (0 for empty)."""
    if not data:
        return 0.0
    counts = [data.count(b) for b in set(data)]
    return -sum(c / len(data) * math.log2(c / len(data)) for c in counts)


def check_strength(data: bytes, what: str, path: object) -> bytes:
    """Refuse a short or guessable key (one line naming the file and the rule)."""
    hint = f"make one with: ovsvnet keygen {path}"
    if len(data) < MIN_KEY_BYTES:
        raise ConfigError(f"{what}: {path} holds {len(data)} bytes; use at least "
                          f"{MIN_KEY_BYTES} random bytes ({hint})")
    if entropy_bits(data) < MIN_ENTROPY_BITS or len(set(data)) < 12:
        raise ConfigError(f"{what}: {path} looks guessable ({entropy_bits(data):.1f} bits "
                          f"per byte, {len(set(data))} different bytes); use random bytes "
                          f"({hint})")
    return data


def read_key(path: str | os.PathLike[str], what: str) -> bytes:
    """A private, strong key from a file (trailing newline dropped)."""
    data = read_private_file(path, what).rstrip(b"\r\n")
    return check_strength(data, what, path)


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """The shared IPsec secret from a file readable by its owner only."""
    return read_key(path, "ipsec secret file")


def write_key(path: str | os.PathLike[str], nbytes: int = 32) -> None:
    """Write a new random key (base64 text, mode 0600); never overwrite a file."""
    data = base64.b64encode(secrets.token_bytes(nbytes)) + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise ConfigError(f"keygen: {path} exists; remove it first (a key is never "
                          "overwritten)") from None
    except OSError as exc:
        raise ConfigError(f"keygen: cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


CN_RE = re.compile(r"CN=(.+?),")  # exactly ovs-monitor-ipsec's _get_cn_from_cert


def certificate_cn(path: str | os.PathLike[str]) -> str | None:
    """The CN ovs-monitor-ipsec will take from a PEM certificate (same openssl command and
    regex), or None when it would find none (e.g. a subject that is only ``CN=foo``)."""
    out = proc.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in",
                    str(path)], check=False, timeout=10, error=ConfigError,
                   what=f"certificate: openssl on {path}")
    if out.returncode != 0:
        raise ConfigError(f"certificate: {path} is not a PEM certificate: "
                          f"{proc.last_line(out)}")
    m = CN_RE.search(out.stdout.splitlines()[0] if out.stdout else "")
    return m.group(1) if m else None


def load_certificates(ca_cert: str, certificate: str, private_key: str) -> ipsec.CertCredentials:
    """Validate certificate mode's three files and return them with this host's CN.

    The private key must be readable by its owner only; the certificates must exist and the
    host certificate must carry a CN the monitor can parse. strongSwan on Debian/Ubuntu
    (AppArmor) can only read them under ``/etc/ipsec.d/`` (see docs/security.md).
    """
    for what, path in (("ca_cert", ca_cert), ("certificate", certificate)):
        if not Path(path).is_file():
            raise ConfigError(f"{what}: {path} does not exist or is not a file")
    check_private_file(private_key, "private_key")
    name = certificate_cn(certificate)
    if not name:
        raise ConfigError(
            f"certificate: ovs-monitor-ipsec finds no CN in {certificate}: the subject needs "
            "a CN followed by another field, e.g. 'CN=host1,OU=ovsvnet,O=example' in RFC 2253 "
            "order (ovs-pki makes such certificates)")
    return ipsec.CertCredentials(ca_cert, certificate, private_key, name)


def credentials_from_settings(settings: Mapping[str, str]) -> ipsec.Credentials | None:
    """The configured keys: a secret file (PSK mode), all three certificate paths
    (certificate mode), or nothing (None: secure vnets cannot be active). Reads and checks
    the files."""
    secret = settings.get(ipsec.SETTING_SECRET_FILE)
    certs = {k: settings[k] for k in ipsec._CERT_SETTINGS if settings.get(k)}
    if secret and certs:
        raise ConfigError(f"ipsec: both {ipsec.SETTING_SECRET_FILE} and certificates are "
                          "configured; choose one")
    if secret:
        return ipsec.PskCredentials(read_secret(secret))
    if certs:
        missing = [k for k in ipsec._CERT_SETTINGS if k not in certs]
        if missing:
            raise ConfigError(f"ipsec: certificate mode also needs {', '.join(missing)}")
        return load_certificates(certs[ipsec.SETTING_CA_CERT], certs[ipsec.SETTING_CERTIFICATE],
                                 certs[ipsec.SETTING_PRIVATE_KEY])
    return None
