"""Security levels on the wire: tunnel types, IPsec options, keys, MTU cost, host support.

A pure mapping from a vnet's security level (``none`` | ``auth`` | ``conf``) to what ovsvnet
writes into OVSDB for ``ovs-monitor-ipsec`` (OVS >= 3.0) to turn into strongSwan/Libreswan
configuration: ``none`` = VXLAN (never under an IPsec policy), ``auth`` = Geneve + ESP
null/HMAC, ``conf`` = GRE + ESP AES. One tunnel port per (peer, level), because the
monitor's selectors depend on the tunnel type only, so each level must own a type. Keys
are never hard-wired: a PSK per host pair derived from a shared secret, or certificates.
Why each choice was made (selectors, plaintext shunts, MTU arithmetic, the arming gate):
docs/design/ipsec.md. Reading key files: :mod:`ovsvnet.system.keyfiles`; observing the
host: :mod:`ovsvnet.system.kernel`; kernel policies: :mod:`ovsvnet.system.xfrm`.

Long on purpose: the level table, the ESP proposals, the per-pair keys and the MTU cost
are one contract with ovs-monitor-ipsec and are read (and changed) together.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ovsvnet.errors import ConfigError

__all__ = [
    "LEVELS", "LEVEL_CODES", "LevelMap", "MAPPING", "SKB_MARK", "EGRESS_PKT_MARK",
    "OTHER_CONFIG_KEYS", "Algorithms", "PskCredentials", "CertCredentials", "Credentials",
    "mapping", "parse_address", "tunnel_type", "port_name", "interface_level", "conn_names",
    "tunnel_spec", "open_vswitch_other_config", "derive_psk", "redact", "esp_overhead",
    "encap_overhead", "level_overhead", "vnet_mtu", "selector_covers", "levels_covering",
    "Support", "support",
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

#: What a certificate name (CN) may be: it goes into the IKE daemon's configuration
#: unquoted (``rightid=``), and a chassis's CN is its registry identity.
CERT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
PSK_SALT = b"ovsvnet ipsec psk v1"
MIN_SECRET_BYTES = 32
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


def mapping(level: str) -> LevelMap:
    try:
        return MAPPING[level]
    except KeyError:
        raise ConfigError(f"security: {level!r} is not one of {', '.join(LEVELS)}") from None


def tunnel_type(level: str) -> str:
    return mapping(level).tunnel_type


def port_name(level: str, address: str) -> str:
    """``vx-``/``gn-``/``gr-`` + the IPv4 address in hex (11 chars), or a 12-hex digest of
    an IPv6 address (15 chars, the interface name limit). ``vx-`` matches
    :func:`ovsvnet.model.tunnel_port_name`, so existing ``none`` tunnels keep their names."""
    prefix = mapping(level).prefix
    ip = parse_address("peer", address)
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
    m = mapping(level)
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
        if mapping(level).level == "auth":
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


def parse_address(what: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
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
    ips = sorted((parse_address("tunnel address", a), parse_address("tunnel address", b)),
                 key=lambda ip: (ip.version, ip.packed))
    if ips[0] == ips[1]:
        raise ConfigError(f"ipsec: a host cannot have a key with itself ({ips[0]})")
    info = b"psk|" + b"|".join(bytes([ip.version]) + ip.packed for ip in ips)
    key = _hkdf_sha256(bytes(secret), PSK_SALT, info)
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


#: Open_vSwitch ``external_ids`` keys :func:`credentials_from_settings` reads.
SETTING_SECRET_FILE = "ovsvnet-ipsec-secret-file"
SETTING_CA_CERT = "ovsvnet-ipsec-ca-cert"
SETTING_CERTIFICATE = "ovsvnet-ipsec-certificate"
SETTING_PRIVATE_KEY = "ovsvnet-ipsec-private-key"
_CERT_SETTINGS = (SETTING_CA_CERT, SETTING_CERTIFICATE, SETTING_PRIVATE_KEY)


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
    m = mapping(level)
    peer = parse_address("peer", peer_address)
    options = {"remote_ip": str(peer), "key": "flow"}
    if local_ip:
        local = parse_address("local_ip", local_ip)
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
        if not CERT_NAME_RE.fullmatch(remote_name):
            raise ConfigError(f"remote_name: {remote_name!r} is not a usable certificate name "
                              "(1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit)")
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
    m = mapping(level)
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

    Pure: the facts come from :func:`ovsvnet.system.kernel.ipsec_facts` (or a test).
    ``ike_running`` None means "not checked". Every missing piece is named, in the order an
    admin would fix them.
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
