"""Security levels on the wire: tunnel types, IPsec options, keys, MTU cost, host support.

Everything here is a pure mapping from a vnet's security level (``none`` | ``auth`` |
``conf``) to what ovsvnet writes into OVSDB for ``ovs-monitor-ipsec`` (OVS >= 3.0) to turn into
strongSwan/Libreswan configuration. The only I/O is in the explicit helpers that read a
secret or certificate file (:func:`read_secret`, :func:`load_certificates`) and the one
function that observes the host (:func:`gather_facts`).

Level -> tunnel type (why three types)
--------------------------------------
``ovs-monitor-ipsec`` 3.1 builds each tunnel's IPsec policy from the tunnel *type* and the
remote address only, with selectors hard-coded per type (``options:dst_port`` and the key are
never read; see research/ipsec.md section 3)::

    gre     one conn   leftprotoport=gre       rightprotoport=gre
    geneve  "-in"      leftprotoport=udp/6081  rightprotoport=udp
            "-out"     leftprotoport=udp       rightprotoport=udp/6081
    vxlan   "-in"      leftprotoport=udp/4789  rightprotoport=udp
            "-out"     leftprotoport=udp       rightprotoport=udp/4789

So between two hosts each tunnel type can carry at most one security level, and a level
must own a type outright. ovsvnet uses one tunnel port per (peer, level), ``key=flow``:

=======  ===========  ============  ===========================================================
level    type         port name     why
=======  ===========  ============  ===========================================================
none     VXLAN 4789   ``vx-<hex>``  no IPsec option at all, so the monitor writes no conn and no
                                    policy covers udp/4789: a ``none`` vnet is never swept into
                                    an encrypted (or dropped) policy. VXLAN also keeps talking
                                    to plain kernel-VXLAN peers (the original's wire format).
auth     Geneve 6081  ``gn-<hex>``  ESP null + HMAC. Its two udp/6081 conns cannot match VXLAN
                                    packets (dport 4789, sport from ip_local_port_range, which
                                    excludes 6081 unless an admin widens it below 6082).
conf     GRE (key)    ``gr-<hex>``  ESP AES. GRE's selector is the protocol itself: every GRE
                                    packet between the pair is covered, in both directions,
                                    with no port games; the monitor's plaintext shunt for GRE
                                    also covers both directions (the UDP shunts only match the
                                    local port, see "Plaintext" below). Geneve was the type with
                                    the known IPsec plaintext leak (CVE-2020-25645), so the
                                    level whose promise is secrecy gets GRE.
=======  ===========  ============  ===========================================================

STT is not an option (out-of-tree kernel module, removed in OVS 3.6), so two secure levels
need one UDP type; GRE goes to the stronger promise. Costs of the choice: ovsvnet claims all
GRE and all udp/6081 traffic *between hosts that share a secure vnet* (another GRE tunnel or
an OVN Geneve tunnel between the same two hosts would be swept into these SAs), and a peer's
custom UDP port can only apply to the ``none`` tunnel (:func:`tunnel_spec` refuses it for
``auth``/``conf``: the monitor would still write udp/6081 selectors and the moved tunnel
would go out in clear).

ESP proposals: ``auth`` = ``null-<hmac>`` (integrity only; SHA-256-128 by default, the
original's HMAC-SHA1-96 as ``sha1``), ``conf`` = AES (AES-128-GCM by default, the original's
AES-128-CBC + HMAC-SHA1-96 as ``aes128-sha1``), each with a PFS group for rekeys. They go into
``options:ipsec_esp`` (and ``ipsec_ike`` when set), which the monitor copies into every conn
of the tunnel, overriding its ``%default`` of ``aes256gcm16-modp2048``.

Keys
----
No key is hard-wired. PSK mode: one pre-shared key per *pair of hosts*
(:func:`derive_psk`: HKDF-SHA256 over the sorted pair of tunnel addresses, keyed by a secret
file every host shares), so both ends derive the same key without any exchange, and the
``auth`` and ``conf`` tunnels to one peer carry the same key (strongSwan/Libreswan pick the
secret by peer address, one per peer). Certificate mode: CA cert + host cert + key in the
Open_vSwitch row, the peer's certificate CN in ``options:remote_name``.

Plaintext: ``other_config:ipsec_skb_mark`` and ``options:egress_pkt_mark``
---------------------------------------------------------------------------
ovs-vswitchd can forward into a new tunnel before the monitor and the IKE daemon have
installed its policy, and then packets leave in clear (howto "Plaintext Policies"). With
``ipsec_skb_mark=value/mask`` the monitor adds ``type=drop`` conns (``mark=value/mask``) per
tunnel protocol, dropping tunnel packets that leave *unencrypted* while carrying that mark.
ovsvnet sets :data:`SKB_MARK` = ``1/1`` and ``options:egress_pkt_mark=1`` on every ``auth``/
``conf`` tunnel port (ovs-vswitchd sets that mark on everything the port encapsulates): only
secure tunnels are marked, so ``none`` tunnels and tunnels that are not ovsvnet's (mark 0) are
untouched, whereas ``0/1`` would drop every unmarked tunnel packet on the host. Limits (seen
in the kernel lane, docs/security.md): the shunt conns have only ``leftprotoport``, i.e. the
*local* port, so for Geneve they become ``dir out ... sport 6081`` and miss the usual outgoing
packets (dport 6081); for GRE they catch everything. And they are charon's policies: stopping
charon removes them with every ESP policy. Hence two defences of ovsvnet's own:
:mod:`ovsvnet.xfrm_guard` (block policies for marked ``dir out`` udp/6081 and GRE, at a lower
precedence than charon's, that survive charon) and the flow gate below: a secure tunnel is
only used while its own kernel policies are present (:func:`policies_installed`).

Flow-level enforcement (for :mod:`ovsvnet.flows`)
-------------------------------------------------
An ``auth``/``conf`` vnet accepts frames only from its protected tunnel type, never from the
clear one, and sends only through it. With :data:`LEVEL_CODES` ``{"none": 0, "auth": 1,
"conf": 2}`` (level of a tunnel port: :func:`interface_level`; of a vnet: its config)::

    table 0   in_port=<tunnel P of level L>,tun_src=<P>   -> set_field:L->reg0, goto 10
              in_port=<patch of vnet K, level L>          -> set_field:K->tun_id,
                                                             set_field:L->reg0, goto 20
    table 10  tun_id=K,reg0=<level of K>                  -> learn(...), output:<patch K>
              (priority 0 drop: unknown key, *or a secure key arriving on a weaker port*)
    table 40  tun_id=K -> output to the level-of-K tunnel of each peer carrying K, only
    table 30  learned flows output to the port the MAC was learned on, which table 10 only
              accepts from the right level, so unicast inherits the rule.

A secure tunnel port is *armed* (gets its table-0 and flood entries) only when
:func:`support` is ok, ovsvnet's xfrm guard is in place and :func:`policies_installed` sees
its kernel policies (:func:`ovsvnet.ops.secure_arming`; every ``sync`` and, in the agent,
every ``canary_interval``); an unarmed port's frames hit the table-0 drop, nothing is sent to
it and MACs learned on it are pruned. Optional defence in depth:
``load:1->NXM_NX_PKT_MARK[0]`` in the table-0 flow of secure vnets' patch ports, so a secure
frame that a bug sent to a VXLAN port would carry the mark the shunt drops on.

Host support
------------
IPsec needs the kernel datapath (``datapath_type=system``): netdev tunnels are encapsulated
in userspace and never pass through the kernel's XFRM (research/ipsec.md section 4), plus
kernel ESP (esp4/esp6 built in, loaded or loadable) and a running ``ovs-monitor-ipsec``.
:func:`support` names each missing piece; a host without it keeps ``auth``/``conf`` vnets local
and inactive, never in clear.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import ipaddress
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ovsvnet.errors import ConfigError

__all__ = [
    "LEVELS", "LEVEL_CODES", "LevelMap", "MAPPING", "SKB_MARK", "EGRESS_PKT_MARK",
    "OTHER_CONFIG_KEYS", "Algorithms", "PskCredentials", "CertCredentials", "Credentials",
    "tunnel_type", "port_name", "interface_level", "conn_names", "tunnel_spec",
    "open_vswitch_other_config", "credentials_from_settings", "derive_psk", "read_secret",
    "check_private_file",
    "certificate_cn", "load_certificates", "redact", "esp_overhead", "encap_overhead",
    "level_overhead", "vnet_mtu", "selector_covers", "levels_covering", "Support", "support",
    "gather_facts", "host_support", "policies_installed", "policy_blocks", "MONITOR_PIDFILE",
]

LEVELS = ("none", "auth", "conf")
#: Register value (``reg0``) a frame carries on the transport bridge: the level of the tunnel
#: it arrived on or of the vnet it came from. Table 10 accepts ``tun_id=K`` only with K's code.
LEVEL_CODES = {"none": 0, "auth": 1, "conf": 2}

#: ``Open_vSwitch other_config:ipsec_skb_mark``: drop unencrypted tunnel packets whose
#: skb_mark has bit 0 set. Only secure tunnels set that bit (:data:`EGRESS_PKT_MARK`).
SKB_MARK = "1/1"
#: ``options:egress_pkt_mark`` of auth/conf tunnel ports (decimal, as ovs-vswitchd parses it).
EGRESS_PKT_MARK = "1"
#: The Open_vSwitch ``other_config`` keys ovsvnet manages for IPsec. Keys of this tuple that
#: :func:`open_vswitch_other_config` does not return must be *removed* (the monitor marks PSK
#: tunnels invalid while ``certificate``/``private_key``/``ca_cert`` are set).
OTHER_CONFIG_KEYS = ("ipsec_skb_mark", "certificate", "private_key", "ca_cert")

MONITOR_PIDFILE = "ovs-monitor-ipsec.pid"
PSK_SALT = b"ovsvnet ipsec psk v1"
MIN_SECRET_BYTES = 16
REDACTED = "<redacted>"


# -- level mapping ------------------------------------------------------------------------

@dataclass(frozen=True)
class LevelMap:
    """How one security level looks on the wire and in ovs-monitor-ipsec's output."""

    level: str
    tunnel_type: str  # Interface type
    prefix: str  # port name prefix
    protocol: str  # IP protocol of the encapsulation
    dst_port: int | None  # UDP destination port (fixed: the monitor hard-codes it)
    #: (leftprotoport, rightprotoport) of each conn the monitor writes for this type, in
    #: the order of :attr:`conn_suffixes`; what the type *would* get even for ``none``.
    selectors: tuple[tuple[str, str], ...]
    conn_suffixes: tuple[str, ...]
    ipsec: bool
    encap_bytes_v4: int  # outer IPv4 + tunnel headers + inner Ethernet
    encap_bytes_v6: int


def _udp(port: int) -> tuple[tuple[str, str], ...]:
    return ((f"udp/{port}", "udp"), ("udp", f"udp/{port}"))


MAPPING: dict[str, LevelMap] = {
    # IP + UDP 8 + VXLAN 8 + inner Ethernet 14
    "none": LevelMap("none", "vxlan", "vx-", "udp", 4789, _udp(4789), ("in", "out"), False,
                     20 + 8 + 8 + 14, 40 + 8 + 8 + 14),
    # IP + UDP 8 + Geneve 8 (no options: ovsvnet sets no tun_metadata) + inner Ethernet 14
    "auth": LevelMap("auth", "geneve", "gn-", "udp", 6081, _udp(6081), ("in", "out"), True,
                     20 + 8 + 8 + 14, 40 + 8 + 8 + 14),
    # IP + GRE 4 + key 4 (no csum, no seq) + inner Ethernet 14 (transparent Ethernet bridging)
    "conf": LevelMap("conf", "gre", "gr-", "gre", None, (("gre", "gre"),), ("",), True,
                     20 + 4 + 4 + 14, 40 + 4 + 4 + 14),
}


def _level(level: str) -> LevelMap:
    try:
        return MAPPING[level]
    except KeyError:
        raise ConfigError(f"security: {level!r} is not one of {', '.join(LEVELS)}") from None


def tunnel_type(level: str) -> str:
    return _level(level).tunnel_type


def port_name(level: str, address: str) -> str:
    """``vx-``/``gn-``/``gr-`` + the IPv4 address in hex (11 chars), or a 12-hex digest of
    an IPv6 address (15 chars, the interface name limit). ``vx-`` matches
    :func:`ovsvnet.model.tunnel_port_name`, so existing ``none`` tunnels keep their names."""
    prefix = _level(level).prefix
    ip = _address("peer", address)
    if ip.version == 4:
        return f"{prefix}{int(ip):08x}"
    return prefix + hashlib.sha1(ip.packed).hexdigest()[:12]


def interface_level(itype: str, options: Mapping[str, str]) -> str | None:
    """The level an existing tunnel Interface provides, or None if it is not a tunnel ovsvnet
    would make (or a secure type *without* IPsec options, which must never be armed)."""
    for m in MAPPING.values():
        if m.tunnel_type == itype:
            if m.ipsec and not any(k in options for k in ("psk", "remote_name", "remote_cert")):
                return None
            if not m.ipsec and any(k in options for k in ("psk", "remote_name", "remote_cert")):
                return None
            return m.level
    return None


def conn_names(level: str, port: str, version: int = 1) -> tuple[str, ...]:
    """The conn names ovs-monitor-ipsec writes for a tunnel port (none for ``none``)."""
    m = _level(level)
    if not m.ipsec:
        return ()
    return tuple(f"{port}-{s}-{version}" if s else f"{port}-{version}" for s in m.conn_suffixes)


def _parse_protoport(text: str) -> tuple[str, int | None]:
    proto, _, port = text.partition("/")
    return proto, int(port) if port else None


def selector_covers(selector: tuple[str, str], proto: str, sport: int | None,
                    dport: int | None) -> bool:
    """Whether a conn with (leftprotoport, rightprotoport) = ``selector`` covers a packet
    sent from this host (left) to the peer (right) with these protocol and ports."""
    lproto, lport = _parse_protoport(selector[0])
    rproto, rport = _parse_protoport(selector[1])
    if proto not in (lproto, rproto):
        return False
    return (lport is None or lport == sport) and (rport is None or rport == dport)


def levels_covering(proto: str, sport: int | None, dport: int | None) -> set[str]:
    """The levels whose IPsec conns would cover this outgoing packet (``none`` has none)."""
    return {m.level for m in MAPPING.values() if m.ipsec
            and any(selector_covers(s, proto, sport, dport) for s in m.selectors)}


# -- algorithms ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Suite:
    strongswan: str
    libreswan: str
    iv: int  # bytes of IV in each ESP packet
    block: int  # padding alignment: cipher block size, at least 4 (RFC 4303)
    icv: int  # bytes of integrity check value
    description: str


#: Integrity for ``auth`` (ESP with NULL encryption). Keys are ovsvnet's names.
AUTH_SUITES: dict[str, _Suite] = {
    "sha256": _Suite("null-sha256", "null-sha2_256", 0, 4, 16, "HMAC-SHA-256-128 (default)"),
    "sha1": _Suite("null-sha1", "null-sha1", 0, 4, 12, "HMAC-SHA1-96 (the original's)"),
    "sha384": _Suite("null-sha384", "null-sha2_384", 0, 4, 24, "HMAC-SHA-384-192"),
    "sha512": _Suite("null-sha512", "null-sha2_512", 0, 4, 32, "HMAC-SHA-512-256"),
}
#: Ciphers for ``conf``.
CONF_SUITES: dict[str, _Suite] = {
    "aes128gcm16": _Suite("aes128gcm16", "aes_gcm128-null", 8, 4, 16,
                          "AES-128-GCM, 16-byte ICV (default)"),
    "aes256gcm16": _Suite("aes256gcm16", "aes_gcm256-null", 8, 4, 16,
                          "AES-256-GCM, 16-byte ICV"),
    "aes128-sha256": _Suite("aes128-sha256", "aes128-sha2_256", 16, 16, 16,
                            "AES-128-CBC + HMAC-SHA-256-128"),
    "aes256-sha256": _Suite("aes256-sha256", "aes256-sha2_256", 16, 16, 16,
                            "AES-256-CBC + HMAC-SHA-256-128"),
    "aes128-sha1": _Suite("aes128-sha1", "aes128-sha1", 16, 16, 12,
                          "AES-128-CBC + HMAC-SHA1-96 (the original's)"),
}
#: Diffie-Hellman groups for PFS on CHILD_SA rekeys: ovsvnet name -> Libreswan name.
PFS_GROUPS = {"modp2048": "modp2048", "modp3072": "modp3072", "modp4096": "modp4096",
              "ecp256": "dh19", "ecp384": "dh20", "curve25519": "dh31"}
IKE_DAEMONS = ("strongswan", "libreswan")
_PROPOSAL_RE = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+)*(,[a-z0-9_]+(-[a-z0-9_]+)*)*!?$")

#: Open_vSwitch ``external_ids`` keys :meth:`Algorithms.from_settings` reads.
SETTING_AUTH = "ovsvnet-ipsec-auth"
SETTING_CONF = "ovsvnet-ipsec-conf"
SETTING_PFS = "ovsvnet-ipsec-pfs"
SETTING_IKE = "ovsvnet-ipsec-ike"
SETTING_IKE_DAEMON = "ovsvnet-ike-daemon"


def _choose(what: str, value: str, table: Mapping[str, object]) -> str:
    if value not in table:
        raise ConfigError(f"{what}: unknown proposal {value!r}; choose one of "
                          f"{', '.join(table)}")
    return value


@dataclass(frozen=True)
class Algorithms:
    """Which ESP transforms each level uses. Both ends must agree (same settings).

    ``auth`` names the HMAC (``null-`` prefix accepted: ``null-sha1`` == ``sha1``), ``conf``
    the cipher suite, ``pfs`` the DH group for rekeys (None: no PFS), ``ike`` an IKE proposal
    in the IKE daemon's own syntax (None: keep the monitor's default,
    ``aes256gcm16-sha256-modp2048`` for strongSwan).
    """

    auth: str = "sha256"
    conf: str = "aes128gcm16"
    pfs: str | None = "modp2048"
    ike: str | None = None
    ike_daemon: str = "strongswan"

    def __post_init__(self) -> None:
        auth = self.auth.lower().strip()
        if auth.startswith("null-"):
            auth = auth[len("null-"):]
        object.__setattr__(self, "auth", _choose("ipsec auth", auth, AUTH_SUITES))
        object.__setattr__(self, "conf",
                           _choose("ipsec conf", self.conf.lower().strip(), CONF_SUITES))
        if self.pfs is not None:
            pfs = self.pfs.lower().strip()
            if pfs in ("", "none", "no"):
                object.__setattr__(self, "pfs", None)
            else:
                object.__setattr__(self, "pfs", _choose("ipsec pfs", pfs, PFS_GROUPS))
        if self.ike is not None:
            ike = self.ike.lower().strip()
            if not _PROPOSAL_RE.match(ike):
                raise ConfigError(f"ipsec ike: {self.ike!r} is not an IKE proposal "
                                  "(e.g. aes256gcm16-prfsha256-modp2048)")
            object.__setattr__(self, "ike", ike)
        if self.ike_daemon not in IKE_DAEMONS:
            raise ConfigError(f"ike daemon: {self.ike_daemon!r} is not one of "
                              f"{', '.join(IKE_DAEMONS)}")

    @classmethod
    def original(cls, **kwargs: str | None) -> Algorithms:
        """The original Xen vnet transforms: HMAC-SHA1-96, AES-128-CBC + HMAC-SHA1-96."""
        return cls(auth="sha1", conf="aes128-sha1", **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> Algorithms:
        """From Open_vSwitch ``external_ids`` (``ovsvnet-ipsec-auth`` etc.); defaults for
        missing keys."""
        kwargs: dict[str, str | None] = {}
        for key, name in ((SETTING_AUTH, "auth"), (SETTING_CONF, "conf"),
                          (SETTING_PFS, "pfs"), (SETTING_IKE, "ike"),
                          (SETTING_IKE_DAEMON, "ike_daemon")):
            if key in settings:
                kwargs[name] = settings[key]
        return cls(**kwargs)  # type: ignore[arg-type]

    def suite(self, level: str) -> _Suite | None:
        if _level(level).level == "auth":
            return AUTH_SUITES[self.auth]
        if level == "conf":
            return CONF_SUITES[self.conf]
        return None

    def esp(self, level: str) -> str | None:
        """The ``esp=`` proposal for ``level`` in the IKE daemon's syntax (None for none)."""
        suite = self.suite(level)
        if suite is None:
            return None
        if self.ike_daemon == "libreswan":
            text = suite.libreswan
            return f"{text}-{PFS_GROUPS[self.pfs]}" if self.pfs else text
        return f"{suite.strongswan}-{self.pfs}" if self.pfs else suite.strongswan


# -- credentials --------------------------------------------------------------------------

@dataclass(frozen=True)
class PskCredentials:
    """Pre-shared keys derived per pair of hosts from one shared secret."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"ipsec secret: {len(self.secret)} bytes is too short; use at "
                              f"least {MIN_SECRET_BYTES} random bytes (e.g. "
                              "head -c 32 /dev/urandom | base64 > FILE)")

    def __repr__(self) -> str:
        return f"PskCredentials(secret={REDACTED})"

    def psk(self, local_ip: str, peer: str) -> str:
        return derive_psk(self.secret, local_ip, peer)


@dataclass(frozen=True)
class CertCredentials:
    """Certificate mode: paths of the CA certificate, this host's certificate and key.

    ``local_name`` is the CN ovs-monitor-ipsec will read from ``certificate`` (it must be
    followed by another RDN: the monitor's regex needs ``CN=name,``).
    """

    ca_cert: str
    certificate: str
    private_key: str
    local_name: str | None = None

    def other_config(self) -> dict[str, str]:
        return {"certificate": self.certificate, "private_key": self.private_key,
                "ca_cert": self.ca_cert}


Credentials = PskCredentials | CertCredentials


def _address(what: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an IP address") from None


def _hkdf_sha256(key: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    prk = hmac.new(salt, key, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def derive_psk(secret: bytes, a: str, b: str) -> str:
    """The pre-shared key of the host pair {a, b} (tunnel addresses, either order).

    HKDF-SHA256 keyed by ``secret`` over the two addresses in canonical, sorted binary form,
    so ``derive_psk(s, a, b) == derive_psk(s, b, a)`` and every pair has its own key: a key
    seen in one host's ipsec.secrets or OVSDB does not reveal any other pair's key (the
    secret file itself, present on every host, derives them all: protect it, and rotate it
    to rotate every key). 256 bits, base64url without padding (43 characters, safe in
    ipsec.secrets and on an ovs-vsctl command line).
    """
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise ConfigError("ipsec secret: empty")
    ips = sorted((_address("tunnel address", a), _address("tunnel address", b)),
                 key=lambda ip: (ip.version, ip.packed))
    if ips[0] == ips[1]:
        raise ConfigError(f"ipsec: a host cannot have a key with itself ({ips[0]})")
    info = b"psk|" + b"|".join(bytes([ip.version]) + ip.packed for ip in ips)
    key = _hkdf_sha256(bytes(secret), PSK_SALT, info)
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def check_private_file(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """Refuse a key/secret file that is missing, not a regular file, or open to others."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what}: {p} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{what}: {p} cannot be read (permission denied)") from None
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
    return st


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """The shared secret from a file readable by its owner only (trailing newline dropped)."""
    check_private_file(path, "ipsec secret file")
    data = Path(path).read_bytes().rstrip(b"\r\n")
    PskCredentials(data)  # length check, with its message
    return data


_CN_RE = re.compile(r"CN=(.+?),")  # exactly ovs-monitor-ipsec's _get_cn_from_cert


def certificate_cn(path: str | os.PathLike[str]) -> str | None:
    """The CN ovs-monitor-ipsec will take from a PEM certificate (same openssl command and
    regex), or None when it would find none (e.g. a subject that is only ``CN=foo``)."""
    try:
        proc = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(path)],
            capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"certificate: cannot run openssl on {path}: {exc}") from None
    if proc.returncode != 0:
        raise ConfigError(f"certificate: {path} is not a PEM certificate: "
                          f"{proc.stderr.strip().splitlines()[-1:] or ''}")
    m = _CN_RE.search(proc.stdout.splitlines()[0] if proc.stdout else "")
    return m.group(1) if m else None


def load_certificates(ca_cert: str, certificate: str, private_key: str) -> CertCredentials:
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
    return CertCredentials(ca_cert, certificate, private_key, name)


#: Open_vSwitch ``external_ids`` keys :func:`credentials_from_settings` reads.
SETTING_SECRET_FILE = "ovsvnet-ipsec-secret-file"
SETTING_CA_CERT = "ovsvnet-ipsec-ca-cert"
SETTING_CERTIFICATE = "ovsvnet-ipsec-certificate"
SETTING_PRIVATE_KEY = "ovsvnet-ipsec-private-key"
_CERT_SETTINGS = (SETTING_CA_CERT, SETTING_CERTIFICATE, SETTING_PRIVATE_KEY)


def credentials_from_settings(settings: Mapping[str, str]) -> Credentials | None:
    """The configured keys: a secret file (PSK mode), all three certificate paths
    (certificate mode), or nothing (None: secure vnets cannot be active). Reads and checks
    the files."""
    secret = settings.get(SETTING_SECRET_FILE)
    certs = {k: settings[k] for k in _CERT_SETTINGS if settings.get(k)}
    if secret and certs:
        raise ConfigError(f"ipsec: both {SETTING_SECRET_FILE} and certificates are "
                          "configured; choose one")
    if secret:
        return PskCredentials(read_secret(secret))
    if certs:
        missing = [k for k in _CERT_SETTINGS if k not in certs]
        if missing:
            raise ConfigError(f"ipsec: certificate mode also needs {', '.join(missing)}")
        return load_certificates(certs[SETTING_CA_CERT], certs[SETTING_CERTIFICATE],
                                 certs[SETTING_PRIVATE_KEY])
    return None


def open_vswitch_other_config(credentials: Credentials | None,
                              skb_mark: str = SKB_MARK) -> dict[str, str]:
    """What ovsvnet sets in the Open_vSwitch row's ``other_config`` for IPsec. Every key of
    :data:`OTHER_CONFIG_KEYS` missing from the result must be removed from the row."""
    if not re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)/(0x[0-9a-fA-F]+|\d+)", skb_mark):
        raise ConfigError(f"ipsec_skb_mark: {skb_mark!r} is not value/mask")
    conf = {"ipsec_skb_mark": skb_mark}
    if isinstance(credentials, CertCredentials):
        conf.update(credentials.other_config())
    return conf


# -- the tunnel interface -----------------------------------------------------------------

def tunnel_spec(level: str, peer_address: str, local_ip: str | None,
                credentials: Credentials | None, algorithms: Algorithms | None = None, *,
                remote_name: str | None = None,
                dst_port: int | None = None) -> tuple[str, str, dict[str, str]]:
    """(Interface type, port name, Interface options) of the tunnel to a peer at a level.

    ``none``: VXLAN, ``remote_ip``, ``key=flow``, ``local_ip`` when known, ``dst_port`` when
    the peer uses another UDP port; no IPsec option at all. ``auth``/``conf``: Geneve/GRE
    plus ``psk`` (PSK mode: needs ``local_ip``, the pair's key is derived from it) or
    ``remote_name`` (certificate mode: the peer's CN), ``ipsec_esp``/``ipsec_ike`` and
    ``egress_pkt_mark``. ``dst_port`` is refused for secure levels: the monitor's selectors
    are fixed (udp/6081, gre), so a moved secure tunnel would leave in clear.
    """
    m = _level(level)
    peer = _address("peer", peer_address)
    options = {"remote_ip": str(peer), "key": "flow"}
    if local_ip:
        local = _address("local_ip", local_ip)
        if local.version != peer.version:
            raise ConfigError(f"local_ip: {local} and peer {peer} are not the same IP version")
        if local == peer:
            raise ConfigError(f"peer: {peer} is this host's own tunnel address")
        options["local_ip"] = str(local)
    if dst_port is not None:
        if not 1 <= dst_port <= 65535:
            raise ConfigError(f"port: {dst_port} is not a UDP port (1-65535)")
        if dst_port != m.dst_port:
            if m.ipsec:
                raise ConfigError(
                    f"port: a {level} tunnel is {m.tunnel_type}"
                    + (f" on udp/{m.dst_port}" if m.dst_port else "")
                    + f"; peer {peer} asks for port {dst_port}, but ovs-monitor-ipsec "
                    "writes fixed selectors, so the tunnel would leave unencrypted")
            options["dst_port"] = str(dst_port)
    name = port_name(level, str(peer))
    if not m.ipsec:
        return m.tunnel_type, name, options
    if credentials is None:
        raise ConfigError(f"security: a {level} vnet needs IPsec keys: configure a secret "
                          "file or certificates (docs/security.md)")
    algorithms = algorithms or Algorithms()
    if isinstance(credentials, PskCredentials):
        if not local_ip:
            raise ConfigError("local_ip: the tunnel address of this host is unknown; the "
                              "per-pair key is derived from both ends' addresses (set "
                              "ovsvnet-local-ip)")
        options["psk"] = credentials.psk(local_ip, str(peer))
    else:
        if not remote_name:
            raise ConfigError(f"remote_name: certificate mode needs the CN of peer {peer}'s "
                              "certificate")
        if any(c in remote_name for c in "\n\r\"'") or not remote_name.strip():
            raise ConfigError(f"remote_name: {remote_name!r} is not a usable certificate name")
        options["remote_name"] = remote_name
    esp = algorithms.esp(level)
    assert esp is not None
    options["ipsec_esp"] = esp
    if algorithms.ike:
        options["ipsec_ike"] = algorithms.ike
    options["egress_pkt_mark"] = EGRESS_PKT_MARK
    return m.tunnel_type, name, options


def redact(options: Mapping[str, str]) -> dict[str, str]:
    """A copy safe to show or log: pre-shared keys (and anything named like a secret) are
    replaced by ``<redacted>``. Paths (certificate, private_key) are not secrets."""
    out = {}
    for key, value in options.items():
        k = key.lower()
        secret = k == "psk" or any(w in k for w in ("psk", "secret", "passw", "password"))
        out[key] = REDACTED if secret else value
    return out


# -- MTU ----------------------------------------------------------------------------------

ESP_HEADER = 4 + 4  # SPI + sequence number
ESP_TRAILER = 2  # pad length + next header


def encap_overhead(level: str, ip_version: int = 4) -> int:
    """Bytes the tunnel adds in front of a guest frame's payload, counted against the
    underlay MTU: outer IP + tunnel headers + the inner Ethernet header."""
    m = _level(level)
    if ip_version not in (4, 6):
        raise ConfigError(f"ip version: {ip_version} is not 4 or 6")
    return m.encap_bytes_v4 if ip_version == 4 else m.encap_bytes_v6


def esp_overhead(level: str, algorithms: Algorithms | None = None, ip_version: int = 4) -> int:
    """Worst-case bytes ESP adds in transport mode: SPI 4 + sequence 4 + IV + padding (up to
    alignment - 1; Linux aligns to max(block size, 4) for IPv4 and IPv6 alike) + pad length
    and next header 2 + ICV. 0 for ``none``."""
    if ip_version not in (4, 6):
        raise ConfigError(f"ip version: {ip_version} is not 4 or 6")
    suite = (algorithms or Algorithms()).suite(level)
    if suite is None:
        return 0
    return ESP_HEADER + suite.iv + (suite.block - 1) + ESP_TRAILER + suite.icv


def level_overhead(level: str, algorithms: Algorithms | None = None,
                   ip_version: int = 4) -> int:
    """Everything a level costs: encapsulation plus ESP."""
    return encap_overhead(level, ip_version) + esp_overhead(level, algorithms, ip_version)


def vnet_mtu(level: str, underlay_mtu: int, algorithms: Algorithms | None = None,
             ip_version: int = 4) -> int:
    """The largest guest MTU whose frames cross the underlay unfragmented at this level."""
    mtu = underlay_mtu - level_overhead(level, algorithms, ip_version)
    if mtu < 576:
        raise ConfigError(f"mtu: an underlay MTU of {underlay_mtu} leaves {mtu} bytes for "
                          f"{level} vnets; the underlay needs a larger MTU")
    return mtu


# -- host support ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str
    problems: tuple[str, ...] = ()


def support(datapath_type: str, *, xfrm: bool, esp: bool, monitor_pid: int | None,
            ike_running: bool | None = None, esp_detail: str = "") -> Support:
    """Whether auth/conf vnets can cross the underlay on a host with these facts.

    Pure: the facts come from :func:`gather_facts` (or a test). ``ike_running`` None means
    "not checked". Every missing piece is named, in the order an admin would fix them.
    """
    problems = []
    if datapath_type != "system":
        problems.append(
            f"the {datapath_type or 'unknown'} datapath cannot encrypt tunnels: OVS IPsec "
            "needs the kernel datapath (datapath_type=system, openvswitch.ko); userspace "
            "(netdev) tunnels never pass through the kernel's IPsec (XFRM)")
    if not xfrm:
        problems.append("the kernel has no IPsec (XFRM) support (/proc/net/xfrm_stat is "
                        "missing)")
    if not esp:
        problems.append("the kernel has no ESP (CONFIG_INET_ESP: module esp4 neither built "
                        "in, loaded nor installed)" + (f"; {esp_detail}" if esp_detail else ""))
    if monitor_pid is None:
        problems.append("ovs-monitor-ipsec is not running (install openvswitch-ipsec and "
                        "start it: systemctl start openvswitch-ipsec)")
    if ike_running is False:
        problems.append("no IKE daemon is running (strongSwan's charon or Libreswan's pluto)")
    if problems:
        return Support(False, "; ".join(problems), tuple(problems))
    detail = f"kernel datapath, kernel ESP{f' ({esp_detail})' if esp_detail else ''}, " \
             f"ovs-monitor-ipsec pid {monitor_pid}"
    return Support(True, "IPsec available: " + detail, ())


def _pid_from(pidfile: Path, needle: str) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    state = re.search(r"^State:\s+(\S)", status, re.M)
    if state and state.group(1) in ("Z", "X"):
        return None
    return pid if needle.encode() in cmdline else None


def _kernel_config(release: str) -> str:
    try:
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(errors="replace")
    except OSError:
        pass
    try:
        return Path(f"/boot/config-{release}").read_text(errors="replace")
    except OSError:
        return ""


def _esp_fact(ip_version: int = 4) -> tuple[bool, str]:
    module = "esp4" if ip_version == 4 else "esp6"
    option = "CONFIG_INET_ESP" if ip_version == 4 else "CONFIG_INET6_ESP"
    if Path(f"/sys/module/{module}").exists():
        return True, f"{module} loaded"
    release = os.uname().release
    m = re.search(rf"^{option}=([ym])$", _kernel_config(release), re.M)
    if m and m.group(1) == "y":
        return True, f"{module} built in"
    moddir = Path("/lib/modules") / release
    for listing, how in (("modules.builtin", "built in"), ("modules.dep", "loadable")):
        try:
            if f"/{module}.ko" in (moddir / listing).read_text(errors="replace"):
                return True, f"{module} {how}"
        except OSError:
            continue
    if m:  # =m but no modules installed for this kernel
        return False, f"{option}=m but no {module}.ko under {moddir}"
    return False, f"{option} is not set in kernel {release}"


def gather_facts(rundir: str | os.PathLike[str], ip_version: int = 4) -> dict[str, object]:
    """Observe this host (read-only): XFRM, ESP, ovs-monitor-ipsec's pidfile in ``rundir``,
    the IKE daemon's pidfile. Returns keyword arguments for :func:`support`."""
    esp, detail = _esp_fact(ip_version)
    ike = None
    for pidfile, needle in ((Path("/run/charon.pid"), "charon"),
                            (Path("/run/pluto/pluto.pid"), "pluto")):
        if pidfile.exists():
            ike = bool(ike) or _pid_from(pidfile, needle) is not None
    return {
        "xfrm": Path("/proc/net/xfrm_stat").exists(),
        "esp": esp,
        "esp_detail": detail,
        "monitor_pid": _pid_from(Path(rundir) / MONITOR_PIDFILE, "ovs-monitor-ipsec"),
        "ike_running": ike,
    }


def host_support(datapath_type: str, rundir: str | os.PathLike[str]) -> Support:
    """:func:`support` with the facts of this host (replaces ops.ipsec_unavailable_reason)."""
    return support(datapath_type, **gather_facts(rundir))  # type: ignore[arg-type]


# -- are a tunnel's kernel policies in place? ---------------------------------------------

def policy_blocks(text: str) -> list[str]:
    """``ip xfrm policy`` output, one line per policy (continuation lines joined)."""
    blocks: list[str] = []
    for line in text.splitlines():
        if line.startswith("src "):
            blocks.append(line.strip())
        elif blocks and line[:1].isspace():
            blocks[-1] += " " + line.strip()
    return blocks


def policies_installed(level: str, peer_address: str, xfrm_policy_text: str) -> bool:
    """Whether ``ip xfrm policy`` output holds the ESP policies of the ``level`` tunnel to
    a peer (outgoing and incoming, per conn): the condition to *arm* a secure tunnel.

    Expected shapes (strongSwan, ``set_proto_port_transport_sa``)::

        src A/32 dst B/32 proto udp dport 6081  dir out ... tmpl ... proto esp ... mode transport
        src A/32 dst B/32 proto udp sport 6081  dir out ...
        src B/32 dst A/32 proto udp sport 6081  dir in  ...   (and dport 6081)
        src A/32 dst B/32 proto gre             dir out ...   src B/32 dst A/32 proto gre dir in

    A ``none`` level needs no policy: always True.
    """
    m = _level(level)
    if not m.ipsec:
        return True
    peer = _address("peer", peer_address)
    host = f"{peer}/{32 if peer.version == 4 else 128}"
    blocks = [b for b in policy_blocks(xfrm_policy_text)
              if re.search(r"\bproto esp\b", b) and "mode transport" in b]

    def has(direction: str, port_field: str | None) -> bool:
        side = "dst" if direction == "out" else "src"
        for b in blocks:
            if not re.search(rf"\b{side} {re.escape(host)}(\s|$)", b):
                continue
            if not re.search(rf"\bdir {direction}\b", b):
                continue
            if not re.search(rf"^src \S+ dst \S+ proto {m.protocol}\b", b):
                continue
            if port_field and not re.search(rf"\b{port_field} {m.dst_port}\b", b):
                continue
            return True
        return False

    if m.dst_port is None:
        return has("out", None) and has("in", None)
    return all(has(d, f) for d in ("out", "in") for f in ("sport", "dport"))
