"""The registry's access control against real ovsdb-servers in lab namespaces: TLS with two
CAs, the chassis role (a host writes only its own rows, never a vnet), strangers without a
certificate or with one from another CA, plain TCP only when asked for, and a member from an
older ovsvnet converted when it starts. Convergence of agents over TLS (a vnet defined on a
member's socket reaches every host, guests ping) is in test_registry.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from ovsvnet.lab import Lab, LabHost, wait_until
from ovsvnet.lab.netns import ns_argv
from ovsvnet.lab.registry import RegistryCluster
from ovsvnet.ovsdb import SslFiles
from ovsvnet.registry import model as R
from ovsvnet.registry import pki
from ovsvnet.registry import server as S
from ovsvnet.system import proc

from .helpers import ovsvnet as run
from .test_registry import Agents, cluster_lab, local_vnets, registry_status

pytestmark = pytest.mark.root

#: A python-ovs client in a host's namespace, with that host's chassis certificate, trying
#: what a compromised agent would; prints what ovsdb-server answered to each attempt.
ATTEMPTS = textwrap.dedent("""
    import json, sys
    from ovsvnet.ovsdb import Client, SslFiles, quiet_python_ovs
    from ovsvnet.registry import model as R
    quiet_python_ovs()
    remotes, me, other, key, cert, ca = sys.argv[1:7]
    tables = {**R.DATA_TABLES, "Registry": ["next_cfg", "connections"],
              "RBAC_Permission": ["table", "update"]}
    c = Client(remotes, R.SCHEMA_PATH, tables, timeout=10, ssl=SslFiles(key, cert, ca))
    c.wait_connected()

    def row(table, name):
        return next(r for r in c.rows(table) if r.name == name)

    def vnet(txn):
        r = c.insert(txn, "Vnet")
        r.id, r.key, r.bridge, r.security = "0:0:0:0:0:0:0:66", 0x66, "vnet-0066", "none"

    def intruder(txn):
        r = c.insert(txn, "Chassis")
        r.name, r.address, r.port = other + "-twin", "10.77.1.250", 4789

    attempts = {
        "own hostname": lambda txn: setattr(row("Chassis", me), "hostname", "changed"),
        "other's address": lambda txn: setattr(row("Chassis", other), "address", "10.77.1.99"),
        "other's vnets": lambda txn: setattr(row("Chassis", other), "vnets", ["x"]),
        "other's private row": lambda txn: row("Chassis_Private", other).delete(),
        "a row in another name": intruder,
        "renaming its own row": lambda txn: setattr(row("Chassis", me), "name", other),
        "a vnet": vnet,
        "the registry's cfg": lambda txn: setattr(c.rows("Registry")[0], "next_cfg", 10**6),
        "the TLS listener": lambda txn: setattr(c.rows("Registry")[0], "connections", []),
        "its own permissions": lambda txn: [setattr(p, "update", ["name", *p.update])
                                            for p in c.rows("RBAC_Permission")],
    }
    out = {}
    for what, build in attempts.items():
        try:
            c.transact(build)
            out[what] = "ok"
        except Exception as exc:
            out[what] = str(exc)
    print(json.dumps(out))
""")

#: A TLS client: no certificate at all (python-ovs cannot even try: it needs one), or a
#: chassis certificate against the Raft port, asking to join the cluster as Raft allows.
PROBE = textwrap.dedent("""
    import json, socket, ssl, sys, uuid
    address, port, ca, cert, key = (sys.argv[1:] + [None, None])[:5]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    raft = {"method": "add_server_request", "id": None, "params": [
        {"from": str(uuid.uuid4()), "address": "ssl:192.0.2.1:6646"}]}
    ask = {"method": "list_dbs", "params": [], "id": 1} if port == "6645" else raft
    try:
        s = ctx.wrap_socket(socket.create_connection((address, int(port)), timeout=5))
        s.sendall(json.dumps(ask).encode())
        answer = s.recv(65536)
        print("answered: " + answer.decode(errors="replace") if answer else "closed")
    except (OSError, ssl.SSLError) as exc:
        print("refused: " + str(exc))
""")


def python_in(host: LabHost, code: str, *args: str) -> str:
    done = subprocess.run(ns_argv(host.netns, [sys.executable, "-c", code, *args]),
                          capture_output=True, text=True, timeout=60, env=host.env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def tls_args(files: SslFiles) -> list[str]:
    return ["-p", files.private_key, "-c", files.certificate, "-C", files.ca_cert]


def test_a_chassis_writes_only_its_own_rows_and_strangers_get_nothing():
    with cluster_lab(n_hosts=2) as (lab, cluster, hosts, agents):
        h1, h2 = hosts
        OPS, NET = cluster.operator_remotes, cluster.remotes
        assert wait_until(lambda: len(registry_status(h1, OPS)["chassis"]) == 2, timeout=15,
                          what="both chassis rows, published over TLS")
        member = json.loads(cluster_status(cluster, "r1"))["member"]
        assert (member["transport"], member["insecure"]) == ("ssl", False)
        assert member["tls"]["listener"] == f"pssl:{R.CLIENT_PORT}"
        assert member["tls"]["relay"]["state"] == "running"
        mine = cluster.chassis("h1", h1.system_id)

        # h1's certificate against ovsdb-server's RBAC: its own row yes, nothing else
        out = json.loads(python_in(h1, ATTEMPTS, NET, h1.system_id, h2.system_id,
                                   mine.private_key, mine.certificate, mine.ca_cert))
        print("\n" + "\n".join(f"  {k}: {v}" for k, v in out.items()))
        assert out.pop("own hostname") == "ok"
        for what, answer in out.items():
            assert f'RBAC rules for client "{h1.system_id}" role "{R.CHASSIS_ROLE}" prohibit' \
                in answer, (what, answer)
        # the same through the command line: reading is fine, defining vnets is not
        assert "vnet-0097" not in run(h1, *tls_args(mine), "--registry", NET, "list").stdout
        err = run(h1, *tls_args(mine), "--registry", NET, "create", "--id", "98",
                  rc=1).stderr
        assert "prohibit row insertion into table \"Vnet\"" in err and "registry.sock" in err
        # an operator on a member's socket can; every host gets it
        run(h1, "--registry", OPS, "create", "--id", "97")
        assert wait_until(lambda: all(local_vnets(h).get("0097") == "registry"
                                      for h in hosts), timeout=20, what="vnet 97 on both")
        assert not registry_status(h2, OPS)["insecure"]

        # strangers: no certificate, a certificate from another CA, plain TCP
        address = cluster.members["r1"].address
        answer = python_in(h1, PROBE, address, str(R.CLIENT_PORT), mine.ca_cert)
        assert answer.startswith(("refused", "closed")), answer
        # a chassis certificate never opens a Raft connection (which would trust it fully)
        raft = python_in(h1, PROBE, address, str(R.RAFT_PORT), mine.ca_cert,
                         mine.certificate, mine.private_key)
        assert raft.startswith(("refused", "closed")), raft  # TLS alert: unknown CA
        print(f"  chassis certificate on the Raft port: {raft}")
        other_pki = lab.workdir / "other-pki"
        pki.init(other_pki, bits=RegistryCluster.BITS)
        stranger = pki.identity(pki.issue(other_pki, "chassis", h1.system_id,
                                          bits=RegistryCluster.BITS))
        # with our server CA (it is public) the stranger checks the relay, which refuses it
        knows_ca = SslFiles(stranger.private_key, stranger.certificate, mine.ca_cert)
        for files, who in ((knows_ca, "cannot reach the registry"),
                           (stranger, "does not verify against --ca-cert")):
            for args in (["list"], ["create", "--id", "99"]):
                err = run(h1, *tls_args(files), "--timeout", "2", "--registry", NET, *args,
                          rc=5).stderr
                assert who in err and len(err.strip().splitlines()) == 1, err
            print(f"  another CA's certificate: {err.strip()}")
        run(h1, "--timeout", "2", "--registry", NET.replace("ssl:", "tcp:"), "list", rc=5)
        print(f"  no certificate: {answer}")

        # a chassis certificate cannot pose as a registry server to an agent
        fake = chassis_as_server(lab, cluster, h2)
        try:
            err = run(h1, *tls_args(mine), "--timeout", "2", "--registry",
                      f"ssl:{h2.address}:{R.CLIENT_PORT}", "list", rc=5).stderr
            assert "cannot reach the registry" in err
        finally:
            proc_stop(fake)


def cluster_status(cluster: RegistryCluster, name: str) -> str:
    m = cluster.members[name]
    done = subprocess.run(ns_argv(cluster.places[name].netns, [
        sys.executable, "-m", "ovsvnet", "registry", "status", "--dir", m.dir, "--json"]),
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def chassis_as_server(lab: Lab, cluster: RegistryCluster, host: LabHost) -> int:
    """An ovsdb-server on ``host`` holding a registry database, presenting ``host``'s
    chassis certificate as its own (what a compromised chassis could do); its pid."""
    files = cluster.chassis(host.name, host.system_id)
    d = lab.workdir / "fake-registry"
    d.mkdir()
    subprocess.run(["ovsdb-tool", "create", str(d / "r.db"), str(R.SCHEMA_PATH)], check=True)
    subprocess.run(ns_argv(host.netns, [
        "ovsdb-server", str(d / "r.db"), f"--remote=pssl:{R.CLIENT_PORT}:{host.address}",
        f"--private-key={files.private_key}", f"--certificate={files.certificate}",
        f"--ca-cert={files.ca_cert}", f"--pidfile={d / 'pid'}", f"--log-file={d / 'log'}",
        f"--unixctl={d / 'ctl'}", "--no-chdir", "-vconsole:off", "--detach"]), check=True,
        timeout=30)
    pid = proc.pid_from_file(d / "pid", comm="ovsdb-server")
    assert pid is not None
    return pid


def proc_stop(pid: int) -> None:
    proc.stop_pid(pid, comm="ovsdb-server", grace=5)


def test_an_insecure_registry_must_be_asked_for_and_works_as_before():
    with Lab() as lab:
        lab.add_segment("s1")
        r1 = lab.add_plain_host("r1", "s1")
        h1 = lab.add_host("h1", "s1")
        d = str(lab.workdir / "reg-plain")
        for extra, why in (([], "or --insecure for plain TCP"),
                           (["--insecure", "--pki-dir", d], "takes no --pki-dir")):
            done = subprocess.run(ns_argv(r1.netns, [
                sys.executable, "-m", "ovsvnet", "registry", "init", "--dir", d,
                "--address", r1.address, "--standalone", *extra]),
                capture_output=True, text=True, timeout=30)
            assert done.returncode == 2 and why in done.stderr, done.stderr
        with RegistryCluster(lab.workdir, [r1], standalone=True, insecure=True) as cluster:
            cluster.up()
            text = subprocess.run(ns_argv(r1.netns, [
                sys.executable, "-m", "ovsvnet", "registry", "status", "--dir",
                cluster.members["r1"].dir]), capture_output=True, text=True).stdout
            assert "INSECURE: plain TCP" in text, text
            member = json.loads(cluster_status(cluster, "r1"))["member"]
            assert (member["transport"], member["insecure"]) == ("tcp", True)
            agents = Agents(cluster)
            try:
                agents.start(h1)
                # as before 1.1.0: anyone who reaches the port may define vnets
                run(h1, "--registry", cluster.remotes, "create", "--id", "97")
                assert wait_until(lambda: local_vnets(h1).get("0097") == "registry",
                                  timeout=20, what="vnet 97 on h1 over plain TCP")
                contents = registry_status(h1, cluster.remotes)
                assert contents["insecure"] and len(contents["chassis"]) == 1
                # and the schema's roles are there, unused: a plain-TCP client has no CN
                assert rbac_roles(cluster.members["r1"]) == [R.CHASSIS_ROLE]
            finally:
                agents.stop_all()


def rbac_roles(member: S.Member) -> list[str]:
    query = [R.DB_NAME, {"op": "select", "table": "RBAC_Role", "where": [],
                         "columns": ["name"]}]
    out = subprocess.run(["ovsdb-client", "transact", f"unix:{member.sock}",
                          json.dumps(query)], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    return sorted(r["name"] for r in json.loads(out)[0]["rows"])


def old_schema() -> dict[str, Any]:
    """Schema 1.0.0, as ovsvnet shipped it before TLS: the tables 1.1.0 added are left out."""
    data = R.schema()
    data["version"] = "1.0.0"
    for table in ("Connection", "RBAC_Role", "RBAC_Permission"):
        del data["tables"][table]
    del data["tables"]["Registry"]["columns"]["connections"]
    return data


def test_a_member_from_an_older_database_is_converted_when_it_starts():
    """A 3-member cluster made by ovsvnet before 1.1.0 (plain TCP, schema 1.0.0, a vnet in
    it): started with this ovsvnet, it is converted online, once, with ovsdb-client convert
    (ovsdb-tool cannot convert a clustered database), and gains the chassis role."""
    with Lab() as lab:
        lab.add_segment("s1")
        places = [lab.add_plain_host(f"r{i}", "s1") for i in (1, 2, 3)]
        with RegistryCluster(lab.workdir, places, insecure=True) as cluster:
            members = list(cluster.members.values())
            schema = lab.workdir / "old.ovsschema"
            schema.write_text(json.dumps(old_schema()))
            seed = lab.workdir / "seed.db"
            subprocess.run(["ovsdb-tool", "create", str(seed), str(schema)], check=True)
            row = {"id": "0000:0000:0000:0000:0000:0000:0000:0097", "key": 0x97,
                   "bridge": "vnet-0097", "security": "none"}
            subprocess.run(["ovsdb-tool", "transact", str(seed), json.dumps([
                R.DB_NAME, {"op": "insert", "table": "Registry", "row": {"next_cfg": 1}},
                {"op": "insert", "table": "Vnet", "row": row}])], check=True,
                capture_output=True)
            for i, m in enumerate(members):  # what 'registry init|join' did before 1.1.0
                m.path.mkdir(mode=0o750)
                if i == 0:
                    argv = ["create-cluster", str(m.db), str(seed), m.raft_remote()]
                else:
                    argv = ["join-cluster", str(m.db), R.DB_NAME, m.raft_remote(),
                            members[0].raft_remote()]
                subprocess.run(["ovsdb-tool", *argv], check=True)
                legacy = {"dir": m.dir, "address": m.address, "port": m.port,
                          "raft_port": m.raft_port, "standalone": False}
                (m.path / "member.json").write_text(json.dumps(legacy))
                subprocess.run(ns_argv(places[i].netns, S.argv(m)), check=True, timeout=30)
            wait_until(lambda: all(S.status(m).get("status") == "cluster member"
                                   for m in members), timeout=20, what="the old cluster")
            for m in members:
                S.stop(m)
            outputs = {}
            for name in cluster.members:  # the first cannot reach a majority on its own
                done = subprocess.run(ns_argv(cluster.places[name].netns, [
                    sys.executable, "-m", "ovsvnet", "registry", "start", "--dir",
                    cluster.members[name].dir, "--timeout", "3" if name == "r1" else "30"]),
                    capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                outputs[name] = done.stdout + done.stderr
            print("\n" + "\n".join(f"{n}: {o.strip()}" for n, o in outputs.items()))
            assert "a majority of its members" in outputs["r1"]
            assert "converted from schema 1.0.0 to 1.1.0" in outputs["r2"]  # a majority
            done = subprocess.run(ns_argv(cluster.places["r1"].netns, [
                sys.executable, "-m", "ovsvnet", "registry", "upgrade", "--dir",
                members[0].dir]), capture_output=True, text=True, timeout=60)
            assert "up to date" in done.stdout, done.stdout + done.stderr
            for m in members:
                assert S.Member.load(m.dir).schema == "1.1.0"
                assert S.Member.load(m.dir).insecure  # made before TLS: served as it was
                assert oct(m.path.stat().st_mode & 0o777) == "0o700"
                version = subprocess.run(["ovsdb-client", "get-schema-version",
                                          f"unix:{m.sock}", R.DB_NAME], capture_output=True,
                                         text=True, check=True).stdout.strip()
                assert version == "1.1.0"
                assert wait_until(lambda m=m: rbac_roles(m) == [R.CHASSIS_ROLE], timeout=10,
                                  what="the role on every member")
            # the data came along
            out = subprocess.run(ns_argv(cluster.places["r2"].netns, [
                sys.executable, "-m", "ovsvnet", "--registry", cluster.operator_remotes,
                "list"]), capture_output=True, text=True, timeout=60).stdout
            assert "vnet-0097" in out
