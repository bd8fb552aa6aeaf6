"""The doctor's pure parts: findings from facts, and the multicast probe's packet helpers."""

from __future__ import annotations

import struct

from ovsvnet import ipsec
from ovsvnet.doctor import checks
from ovsvnet.doctor import findings as D
from ovsvnet.doctor import probe as P
from ovsvnet.system import kernel, unixctl


def test_kmod_state(tmp_path):
    sysmod, mods = tmp_path / "sys", tmp_path / "lib"
    sysmod.mkdir()
    mods.mkdir()
    (sysmod / "openvswitch").mkdir()
    (sysmod / "openvswitch" / "initstate").write_text("live\n")
    (sysmod / "xfrm_user").mkdir()  # built in: no initstate
    (mods / "modules.builtin").write_text("kernel/net/ipv4/esp4.ko\n")
    (mods / "modules.dep").write_text(
        "kernel/net/ipv6/esp6.ko.xz: kernel/net/xfrm/xfrm_algo.ko.xz\n"
        "kernel/net/openvswitch/vport-vxlan.ko: kernel/net/openvswitch/openvswitch.ko\n")
    paths = dict(sys_module=str(sysmod), proc_modules=str(tmp_path / "nope"),
                 modules_dir=str(mods))
    assert kernel.kmod_state("openvswitch", **paths) == "loaded"
    assert kernel.kmod_state("xfrm_user", **paths) == "builtin"
    assert kernel.kmod_state("esp4", **paths) == "builtin"
    assert kernel.kmod_state("esp6", **paths) == "available"
    assert kernel.kmod_state("vport-vxlan", **paths) == "available"
    assert kernel.kmod_state("vxlan", **paths) == "absent"  # not a suffix match of vport-vxlan
    (tmp_path / "modules").write_text("esp6 16384 0 - Live 0x0\n")
    assert kernel.kmod_state("esp6", **{**paths, "proc_modules": str(tmp_path / "modules")}) == \
        "loaded"


def test_daemon_ctl_and_version(tmp_path):
    assert unixctl.daemon_ctl(str(tmp_path), "ovs-vswitchd") is None
    (tmp_path / "ovs-vswitchd.pid").write_text("4242\n")
    (tmp_path / "ovs-vswitchd.4242.ctl").write_text("")
    assert unixctl.daemon_ctl(str(tmp_path), "ovs-vswitchd") == str(tmp_path /
                                                                   "ovs-vswitchd.4242.ctl")
    (tmp_path / "ovs-vswitchd.ctl").write_text("")  # the lab's --unixctl name wins
    assert unixctl.daemon_ctl(str(tmp_path), "ovs-vswitchd") == str(tmp_path /
                                                                   "ovs-vswitchd.ctl")
    assert D.parse_version("ovs-vswitchd (Open vSwitch) 3.1.0\n") == "3.1.0"
    assert D.parse_version("something else\n") == "something else"


def test_findings_and_exit_code():
    installed = {b: f"/usr/bin/{b}" for b in checks.OVS_BINARIES}
    ok = D.ovsdb_finding("unix:/run/db.sock", None, True, installed)
    assert ok.status == D.OK
    gone = D.ovsdb_finding("unix:/run/db.sock", "no socket", False, installed)
    assert gone.status == D.FAIL and "systemctl start openvswitch-switch" in gone.fix
    absent = D.ovsdb_finding("unix:/run/db.sock", "no socket", False,
                             {b: None for b in checks.OVS_BINARIES})
    assert "apt-get install openvswitch-switch" in absent.fix
    assert D.exit_code([ok]) == 0 and D.exit_code([ok, gone]) == 1
    assert D.summary([ok, gone]) == "1 ok, 0 warnings, 1 failures"
    line = gone.line()
    assert line.startswith("FAIL ovsdb:") and "\n" not in line and "; fix: " in line
    assert set(ok.to_dict()) == {"check", "status", "message", "fix", "data"}


def test_datapath_kmod_and_ipsec_findings():
    assert D.datapath_finding(["netdev", "system"], "netdev").status == D.OK
    assert D.datapath_finding([], "netdev").status == D.WARN
    assert D.datapath_finding(["netdev"], "system").status == D.FAIL
    assert D.kmod_finding("loaded", "system").status == D.OK
    assert D.kmod_finding("absent", "netdev").status == D.WARN
    assert "modprobe openvswitch" in D.kmod_finding("available", "netdev").fix
    netdev = {"datapath": "netdev", "xfrm": True, "esp": False, "esp_detail": "",
              "monitor_pid": None, "ike_running": None, "monitor_installed": True}
    system = {**netdev, "datapath": "system", "esp": True}

    def finding(facts, secure, reason=None):
        support = ipsec.support(facts["datapath"], xfrm=facts["xfrm"], esp=facts["esp"],
                                monitor_pid=facts["monitor_pid"],
                                ike_running=facts["ike_running"])
        return D.ipsec_finding(support, reason or (None if support.ok else support.reason),
                               secure, facts)

    f = finding(netdev, ["0098"])
    assert f.status == D.WARN and f.message.startswith("impossible here")
    assert "userspace" in f.message and "netdev" in f.message and "0098" in f.message
    f = finding(system, [])
    assert f.message.startswith("not ready") and f.fix == "systemctl start openvswitch-ipsec"
    f = finding({**system, "monitor_installed": False}, [])
    assert "apt-get install openvswitch-ipsec" in f.fix
    running = {**system, "monitor_pid": 4242}
    assert finding(running, []).status == D.OK
    f = finding(running, ["0099"], "no IPsec keys configured")
    assert f.status == D.WARN and f.message.startswith("not ready: no IPsec keys configured")


def test_mtu_endpoint_agent_and_multicast_findings():
    view = {"underlay_mtu": 1500, "vnet_mtu": 1450, "underlay_mtu_source": "route"}
    assert D.mtu_finding(view).message == "underlay MTU 1500 (route); give guests MTU 1450"
    assert D.mtu_finding({**view, "underlay_mtu_source": "default"}).status == D.WARN
    assert D.mtu_finding({**view, "vnet_mtu": 1230}).status == D.WARN
    assert D.endpoint_finding(None, False, set(), None, False, "netdev").status == D.FAIL
    assert D.endpoint_finding("192.0.2.9", True, {"192.0.2.1"}, "eth0", False,
                              "system").status == D.FAIL
    assert D.endpoint_finding("192.0.2.1", False, {"192.0.2.1"}, "br-phy", True,
                              "netdev").status == D.OK
    warn = D.endpoint_finding("192.0.2.1", False, {"192.0.2.1"}, "eth0", False, "netdev")
    assert warn.status == D.WARN and "OVS bridge" in warn.message
    assert D.endpoint_finding("192.0.2.1", False, {"192.0.2.1"}, "eth0", False,
                              "system").status == D.OK
    assert D.agent_finding(None).status == D.WARN
    assert D.agent_finding({"system_id": "h1", "peers": [{}], "uptime": 3}).status == D.OK
    status = {"peers": [
        {"address": "10.0.0.2", "origin": "h2", "last_seen": 0.5, "via": None,
         "static": False},
        {"address": "10.0.9.3", "origin": "h3", "last_seen": 1.0, "via": "h2",
         "static": False},
        {"address": "10.0.0.4", "origin": "h4", "last_seen": None, "via": "resumed",
         "static": False}]}
    heard = D.heard_from_agent(status)
    assert heard == {"10.0.0.2": "h2", "10.0.9.3": "h3 via h2"}
    f = D.multicast_finding("224.10.0.1", 1798, heard, "agent's peer table", "10.0.0.1")
    assert f.status == D.OK and f.message.index("10.0.0.2") < f.message.index("10.0.9.3")
    f = D.multicast_finding("224.10.0.1", 1798, {}, "announcements", "10.0.0.1")
    assert f.status == D.WARN and "peer-add" in f.fix


def test_icmp_helpers():
    req = P.icmp_echo_request(0x1234, 7, b"abc")
    assert req[0] == 8 and P.icmp_checksum(req) == 0  # a correct checksum sums to zero
    icmp = bytearray(req)
    icmp[0] = 0  # echo reply
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", P.icmp_checksum(bytes(icmp)))
    ip = bytes([0x45, 0, 0, 20 + len(icmp), 0, 0, 0, 0, 64, 1, 0, 0,
                10, 0, 0, 2, 10, 0, 0, 1])
    assert P.parse_icmp_echo_reply(ip + bytes(icmp)) == (0x1234, 7)
    assert P.parse_icmp_echo_reply(ip + req) is None  # a request is not a reply
    assert P.parse_icmp_echo_reply(b"\x45\0") is None
    assert P.describe_announcement(b"not an announcement") is None


def test_announcements_are_described():
    from ovsvnet.announce import Announcement, VnetAd, encode
    from ovsvnet.vnetid import VnetId
    ann = Announcement("h2", "10.0.0.2", 5, (VnetAd(VnetId(0x97), "none"),), 15, 4789, 0, 1)
    assert P.describe_announcement(encode(ann, None)) == "h2"
    assert P.describe_announcement(encode(ann, b"k" * 32)) == "h2"  # signed, read anyway


def test_xen_module_params_are_noted():
    notes = D.xen_module_params(["varp_mcaddr=239.1.2.3", "vnet_encaps=udp", "bogus=1"])
    assert notes[0].startswith("note: varp_mcaddr=239.1.2.3 ignored: ") and "--group" in notes[0]
    assert "VXLAN" in notes[1] and "bogus=1 ignored" in notes[2]




def test_agent_findings_say_what_is_unsafe():
    base = {"system_id": "h1", "peers": [], "uptime": 3}
    assert D.agent_finding(base).status == D.OK
    f = D.agent_finding({**base, "insecure_discovery": True})
    assert f.status == D.WARN and "without a key" in f.message and "keygen" in f.fix
    f = D.agent_finding({**base, "id_clashes": ["10.0.0.9"]})
    assert f.status == D.FAIL and "10.0.0.9" in f.message
    f = D.agent_finding({**base, "rejected_peers": {"127.0.0.1": "peer: loopback"}})
    assert f.status == D.WARN and "127.0.0.1: peer: loopback" in f.message


def test_agent_findings_say_what_is_wrong_with_the_registry():
    base = {"system_id": "h1", "peers": [], "uptime": 3}
    insecure = {"remotes": "tcp:10.0.0.1:6645", "insecure": True}
    f = D.agent_finding({**base, "registry": insecure})
    assert f.status == D.WARN and "INSECURE" in f.message and "pki chassis h1" in f.fix
    f = D.agent_finding({**base, "registry": {"remotes": "ssl:10.0.0.1:6645",
                                              "tls_error": "certificate verify failed"}})
    assert f.status == D.FAIL and "certificate verify failed" in f.message
    f = D.agent_finding({**base, "registry": {
        "remotes": "ssl:10.0.0.1:6645",
        "last_error": 'RBAC rules for role "ovsvnet-chassis" prohibit modification'}})
    assert f.status == D.FAIL and "CN is not its system-id h1" in f.message
    assert D.agent_finding({**base, "registry": {"remotes": "ssl:10.0.0.1:6645"}}).status \
        == D.OK
