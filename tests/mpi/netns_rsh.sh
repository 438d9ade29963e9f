#!/bin/sh
# Open MPI's remote shell for the multi-host test (tests/test_multihost.py), in place of
# ssh: `netns_rsh.sh [options] HOST COMMAND...` runs COMMAND in the network namespace
# named HOST, in a UTS namespace of its own whose hostname is HOST (Open MPI tells its
# daemons apart by hostname).
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
exec ip netns exec "$host" unshare --uts sh -c "hostname $host; $*"
