#!/usr/bin/env bash
# Installs what the container tests need, when it is missing: Debian's podman, runc and busybox-static, then
# builds the tiny test image localhost/ceti-busybox:test offline (a busybox-static root file system imported
# into podman; no registry is contacted). Idempotent: a second run does nothing. Never fails the build: when
# something cannot be installed it says so and exits 0, and the tests that need containers skip.
#
# Why runc: on some hosts Debian's podman cannot run containers with its default runtime (crun fails on cgroups
# and rlimits); the fabric's agent runs podman with `--runtime runc` by default (see ceti.agent.containers).
set -uo pipefail

IMAGE="${CETI_CONTAINER_TEST_IMAGE:-localhost/ceti-busybox:test}"

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
static_busybox() { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }  # ldd fails on a static binary
static_busybox || need+=(busybox-static)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root or install them; the container tests will skip)" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
    echo "could not install ${need[*]}; the container tests will skip" >&2
    exit 0
  fi
fi

if ! command -v podman >/dev/null 2>&1 || ! static_busybox; then
  echo "podman or a static busybox is missing; the container tests will skip" >&2
  exit 0
fi

# The same options the agent uses by default (override with CETI_CONTAINER_GLOBAL_OPTS).
read -r -a global_opts <<<"${CETI_CONTAINER_GLOBAL_OPTS:---runtime runc --cgroup-manager=cgroupfs}"

if podman "${global_opts[@]}" image exists "$IMAGE" 2>/dev/null; then
  exit 0
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/bin "$rootfs"/tmp "$rootfs"/etc "$rootfs"/proc "$rootfs"/sys "$rootfs"/dev "$rootfs"/work
chmod 1777 "$rootfs"/tmp
cp /bin/busybox "$rootfs"/bin/busybox
for applet in $("$rootfs"/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs"/etc/passwd
echo "root:x:0:" >"$rootfs"/etc/group

if tar -C "$rootfs" -c . | podman "${global_opts[@]}" import \
    --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - "$IMAGE" >"$rootfs.log" 2>&1; then
  echo "built $IMAGE"
else
  cat "$rootfs.log" >&2
  echo "could not build $IMAGE; the container tests will skip" >&2
fi
rm -f "$rootfs.log"
exit 0
