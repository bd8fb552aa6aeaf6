"""The registry's certificates: a two-CA PKI made with ``ovs-pki``, and checks of the files a
member or an agent is given.

Why two CAs (ovs-pki's ``controllerca`` and ``switchca``, as OVN uses them): python-ovs checks
a server's certificate against the CA file only, never a host name, so if agents trusted the
CA that signs chassis certificates, any chassis could pose as a registry server to the
others; and Raft trusts its peers completely, so a chassis certificate must never open a
Raft connection. Registry servers get certificates from the server (controller) CA,
chassis from the chassis (switch) CA. An agent trusts only the server CA; a member's Raft
process trusts only the server CA; the member's relay, which serves the agents, trusts only
the chassis CA (ovsdb-server has one TLS setting per process, hence the two processes).
A chassis certificate's CN is the host's OVS ``system-id``: ovsdb-server takes the CN as the
client's identity, and the ``ovsvnet-chassis`` role lets it write only the rows named
after it.

An identity is a directory, what ``--pki-dir`` names::

    privkey.pem   the private key (mode 0600)
    cert.pem      its certificate
    cacert.pem    the CA the peer's certificate must chain to (the server CA, for both)
    clientca.pem  a member's only: the CA of its clients (the chassis CA)
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ovsvnet.errors import ConfigError, ConflictError, NotFoundError
from ovsvnet.ipsec import CERT_NAME_RE
from ovsvnet.ovsdb import SslFiles
from ovsvnet.system import keyfiles, proc

DEFAULT_PKI_DIR = "/var/lib/ovsvnet/pki"
#: RSA key size: ovs-pki's own default since OVS 3.2 (3.1 still makes 2048-bit keys).
KEY_BITS = 3072
KEY, CERT, CA, CLIENT_CA = "privkey.pem", "cert.pem", "cacert.pem", "clientca.pem"
#: kind -> (ovs-pki certificate type, where issued identities go under the PKI directory,
#: the extended key usage: a chassis certificate cannot even serve TLS)
KINDS = {"server": ("controller", "servers", "serverAuth,clientAuth"),
         "chassis": ("switch", "chassis", "clientAuth")}


def identity(directory: str | os.PathLike[str]) -> SslFiles:
    """An agent's three files in an identity directory (``-p/-c/-C``)."""
    d = Path(directory)
    return SslFiles(str(d / KEY), str(d / CERT), str(d / CA))


@dataclass(frozen=True)
class MemberTls:
    """A member's files: its key and certificate (from the server CA), the CA its Raft
    peers' certificates must chain to, and the CA of its clients, which only its relay
    trusts."""

    private_key: str
    certificate: str
    ca_cert: str
    client_ca_cert: str

    def raft(self) -> SslFiles:
        """The Raft process's TLS: peers only."""
        return SslFiles(self.private_key, self.certificate, self.ca_cert)

    def relay(self) -> SslFiles:
        """The relay's TLS: agents only."""
        return SslFiles(self.private_key, self.certificate, self.client_ca_cert)


def member_identity(directory: str | os.PathLike[str]) -> MemberTls:
    """A member's four files in an identity directory (``--pki-dir``)."""
    d = Path(directory)
    return MemberTls(str(d / KEY), str(d / CERT), str(d / CA), str(d / CLIENT_CA))


def member_files(pki_dir: str | None, private_key: str | None, certificate: str | None,
                 ca_cert: str | None, client_ca_cert: str | None,
                 insecure: bool) -> MemberTls | None:
    """A member's TLS files from ``registry init|join`` options (None: ``--insecure``).

    Either ``--pki-dir`` or all four files; plain TCP only when asked for by name."""
    files = [f for f in (private_key, certificate, ca_cert, client_ca_cert) if f]
    if insecure:
        if pki_dir or files:
            raise ConfigError("insecure: --insecure serves plain TCP; it takes no --pki-dir "
                              "or certificate options")
        return None
    if pki_dir and files:
        raise ConfigError("pki-dir: give --pki-dir or the certificate options, not both")
    if pki_dir:
        return member_identity(os.path.abspath(pki_dir))
    if len(files) == 4:
        return MemberTls(*(os.path.abspath(f) for f in files))
    if files:
        raise ConfigError("certificate: --private-key, --certificate, --ca-cert and "
                          "--client-ca-cert go together")
    raise ConfigError("certificate: a registry member needs its certificate (--pki-dir DIR, "
                      "or --private-key, --certificate, --ca-cert and --client-ca-cert; see "
                      "'ovsvnet registry pki --help'), or --insecure for plain TCP without "
                      "access control")


# -- reading certificates --------------------------------------------------------------------

def _openssl(*args: str, what: str) -> str:
    out = proc.run(["openssl", *args], check=False, timeout=20, error=ConfigError, what=what)
    if out.returncode != 0:
        raise ConfigError(f"{what}: {proc.last_line(out)}")
    return out.stdout


def certificate_cn(path: str) -> str:
    """The first CN of a PEM certificate's subject: what ovsdb-server takes as the
    client's identity (stream-ssl's get_peer_common_name)."""
    out = _openssl("x509", "-noout", "-subject", "-nameopt", "sep_multiline,sname,utf8",
                   "-in", path, what=f"certificate: {path} is not a PEM certificate")
    for line in out.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "CN":
            return value
    raise ConfigError(f"certificate: {path} has no CN in its subject")


def check_identity(files: SslFiles, verify: bool) -> str:
    """Check an identity before a daemon is given it; returns its certificate's CN.

    The key is private (keyfiles' rules), the certificate is that key's, and with
    ``verify`` (a server: its Raft peers check it against the same CAs) it chains to a CA
    in the CA file."""
    files.check()
    keyfiles.check_private_file(files.private_key, "private-key")
    cert_key = _openssl("x509", "-noout", "-pubkey", "-in", files.certificate,
                        what=f"certificate: {files.certificate} is not a PEM certificate")
    key_key = _openssl("pkey", "-pubout", "-in", files.private_key,
                       what=f"private-key: {files.private_key} is not a PEM private key")
    if cert_key.strip() != key_key.strip():
        raise ConfigError(f"certificate: {files.certificate} is not the certificate of "
                          f"{files.private_key}")
    if verify:
        _verify(files.certificate, files.ca_cert)
    return certificate_cn(files.certificate)


def _verifies(certificate: str, ca_cert: str) -> bool:
    return proc.run(["openssl", "verify", "-CAfile", ca_cert, certificate], check=False,
                    timeout=20, error=ConfigError, what="certificate: openssl verify"
                    ).returncode == 0


def _verify(certificate: str, ca_cert: str) -> None:
    out = proc.run(["openssl", "verify", "-CAfile", ca_cert, certificate], check=False,
                   timeout=20, error=ConfigError, what="certificate: openssl verify")
    if out.returncode != 0:
        # "error 10 at 0 depth lookup: certificate has expired" says why; the last line not
        reasons = re.findall(r"error \d+ at \d+ depth lookup: (.+)", out.stdout + out.stderr)
        raise ConfigError(f"certificate: {certificate} does not verify against {ca_cert}: "
                          f"{reasons[0] if reasons else proc.last_line(out)}")


def check_member(tls: MemberTls) -> str:
    """A member's files before ovsdb-server gets them; returns its certificate's CN.

    Its certificate must chain to its peers' CA (they check it against the same), and must
    not chain to its clients' CA: one CA for both would let a chassis certificate open a
    Raft connection and pose as a server to agents."""
    cn = check_identity(tls.raft(), verify=True)
    tls.relay().check()
    if _verifies(tls.certificate, tls.client_ca_cert):
        raise ConfigError(f"client-ca-cert: {tls.client_ca_cert} also signs this member's "
                          f"certificate {tls.certificate}: a chassis certificate could then "
                          "pass for a registry server; use separate CAs (ovsvnet registry "
                          "pki)")
    return cn


def check_chassis(files: SslFiles, system_id: str) -> None:
    """An agent's registry identity: its certificate must be named after this host's OVS
    system-id, the only rows the registry lets it write."""
    cn = check_identity(files, verify=False)
    if cn != system_id:
        raise ConfigError(
            f"certificate: {files.certificate} is for '{cn}', not this host's system-id "
            f"'{system_id}'; the registry lets a chassis write only the rows named after its "
            f"certificate (make one with: ovsvnet registry pki chassis {system_id})")


# -- making a PKI ------------------------------------------------------------------------------

def _ovs_pki(directory: Path, *args: str) -> None:
    proc.run(["ovs-pki", f"--dir={directory}", f"--log={directory / 'ovs-pki.log'}", *args],
             timeout=300, what=f"pki: ovs-pki {args[0]}")


def ca_cert(directory: str | os.PathLike[str], kind: str) -> Path:
    """The CA certificate that signs ``kind`` (server or chassis) identities."""
    return Path(directory) / f"{KINDS[kind][0]}ca" / "cacert.pem"


def init(directory: str | os.PathLike[str], bits: int = KEY_BITS) -> None:
    """Make the two CAs (``ovs-pki init``); their keys stay in ``DIR/*/private`` (0600)."""
    d = Path(directory).absolute()
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise ConflictError(f"pki: {d} already exists; a CA is never overwritten")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    try:
        _ovs_pki(d, f"--bits={bits}", "--force", "init")
    except Exception:
        shutil.rmtree(d, ignore_errors=True)
        raise
    for kind in KINDS:
        os.chmod(ca_cert(d, kind).parent / "private" / "cakey.pem", 0o600)


def issue(directory: str | os.PathLike[str], kind: str, name: str,
          out: str | os.PathLike[str] | None = None, bits: int = KEY_BITS) -> Path:
    """A new identity signed by the CA for ``kind``: a key made here (0600), a certificate
    with CN ``name`` signed with ``ovs-pki sign``, the server CA (what both kinds check
    their peers with) and, for a server, the chassis CA (what its relay checks agents
    with). Returns the identity directory (``DIR/servers/NAME`` or ``DIR/chassis/NAME``)."""
    if kind not in KINDS:
        raise ConfigError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not CERT_NAME_RE.fullmatch(name):
        raise ConfigError(f"name: {name!r} is not a certificate name (1-64 of A-Z a-z 0-9 . _ "
                          "@ -, starting with a letter or digit)")
    d = Path(directory).absolute()
    if not all(ca_cert(d, k).is_file() for k in KINDS):
        raise NotFoundError(f"pki: no CAs in {d}; run: ovsvnet registry pki init --dir {d}")
    pki_type, sub, usage = KINDS[kind]
    target = Path(out).absolute() if out else d / sub / name
    if target.exists():
        raise ConflictError(f"pki: {target} already exists; an identity is never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.mkdir(mode=0o700)
    try:
        _write_private(target / KEY, _openssl(
            "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}",
            what="pki: openssl genpkey"))
        prefix = target / name
        _openssl("req", "-new", "-key", str(target / KEY), "-out", f"{prefix}-req.pem",
                 "-subj", f"/O=Open vSwitch/OU=ovsvnet {kind}/CN={name}",
                 "-addext", f"extendedKeyUsage={usage}", what="pki: openssl req")
        _ovs_pki(d, "--batch", "sign", str(prefix), pki_type)
        os.replace(f"{prefix}-cert.pem", target / CERT)
        Path(f"{prefix}-req.pem").unlink()
        shutil.copyfile(ca_cert(d, "server"), target / CA)
        if kind == "server":
            shutil.copyfile(ca_cert(d, "chassis"), target / CLIENT_CA)
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
