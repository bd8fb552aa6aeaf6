#!/bin/sh
# Start a container on ovsvnet's vnet 97 with Docker, or with Podman through a `docker`
# command that runs podman (Debian's podman-docker package).
#   usage: ovs-docker-vnet97.sh NAME ADDRESS/PREFIX DOCKER-RUN-ARGS...
#   e.g.   ovs-docker-vnet97.sh web1 10.97.0.11/24 debian:12 sleep infinity
# The container starts with no network of the runtime's own (--network none); ovs-docker
# (Debian's openvswitch-common) then creates a veth, plugs one end into the vnet's bridge
# (marked external_ids:container_id=NAME) and moves the other into the container as eth1,
# with the vnet's MTU. Run it where the vnet exists (`ovsvnet create` first: ovs-docker would
# otherwise create a plain bridge of that name). Undo: ovs-docker del-ports vnet97 NAME.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 NAME ADDRESS/PREFIX DOCKER-RUN-ARGS..." >&2; exit 2; }
name=$1 address=$2
shift 2
bridge=${OVSVNET_BRIDGE:-vnet97}
# ovsvnet sets the vnet's MTU on its bridge's own interface
mtu=$(ip -o link show "$bridge" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
[ -n "$mtu" ] || { echo "$0: no bridge $bridge here (ovsvnet create it first)" >&2; exit 1; }
docker run -d --name "$name" --network none "$@" >/dev/null
ovs-docker add-port "$bridge" eth1 "$name" --ipaddress="$address" --mtu="$mtu"
