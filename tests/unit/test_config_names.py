"""Names that other programs generate on their own: the doctor's ``names`` check (pure)."""

from __future__ import annotations

from ovsvnet.doctor.findings import OK, WARN, names_finding


def test_names_finding_warns_about_libvirts_tap_form_only():
    ok = names_finding([("0097", "bridge", "vnet-0097"), ("0097", "vnetif", "vnif97"),
                        ("0098", "bridge", "br98")])
    assert (ok.status, ok.data) == (OK, {"clashes": []})
    warn = names_finding([("0097", "bridge", "vnet97"), ("0098", "vnetif", "tap3"),
                          ("0099", "bridge", "vnet-0099")])
    assert warn.status == WARN
    assert [c["name"] for c in warn.data["clashes"]] == ["vnet97", "tap3"]
    assert warn.line().startswith("WARN names:     vnet 0097 bridge vnet97 has the form of "
                                  "libvirt's automatic tap names (vnet0, vnet1, ...); vnet "
                                  "0098 vnetif tap3 has the form of QEMU's")
    assert "the default is vnet-ID" in (warn.fix or "")
