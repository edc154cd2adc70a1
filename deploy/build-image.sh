#!/usr/bin/env bash
# Builds the kvstore container image without pulling anything from a registry.
#
#   deploy/build-image.sh               cargo build --release, then build image kvstore:local
#   KVSTORE_IMAGE=kvstore:dev deploy/build-image.sh        another tag
#   KVSTORE_SKIP_CARGO=1 deploy/build-image.sh             use target/release as it is
#   KVSTORE_CARGO_PROFILE=dev deploy/build-image.sh        debug binaries (e.g. for a CI that
#                                                          has them already; not for users)
#
# The image is FROM scratch: the three release binaries (debug info stripped, symbols kept)
# plus exactly the shared libraries `ldd` says they need (glibc, libm, libgcc_s, the dynamic
# loader), the glibc NSS modules and an /etc/nsswitch.conf ("hosts: files dns") so that
# service names like kv1 resolve through Docker's embedded DNS, a passwd/group entry for the
# unprivileged user the node runs as (uid 10001), and an empty /data owned by it. Everything
# is copied from this machine into a temporary build context; deploy/Dockerfile describes the
# image. Users with registry access can instead build from source: deploy/Dockerfile.source.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${KVSTORE_IMAGE:-kvstore:local}
bins=(kvnode kvctl kvinspect)
profile=${KVSTORE_CARGO_PROFILE:-release}
case "$profile" in
  dev | test) bindir=${CARGO_TARGET_DIR:-target}/debug ;;
  *) bindir=${CARGO_TARGET_DIR:-target}/$profile ;;
esac

die() {
  echo "build-image: error: $*" >&2
  exit 1
}

command -v docker >/dev/null || die "docker is not installed"
command -v ldd >/dev/null || die "ldd is not installed (it lists the libraries to copy)"

if [ -z "${KVSTORE_SKIP_CARGO:-}" ]; then
  echo "build-image: cargo build --profile $profile (kvnode, kvctl, kvinspect)"
  cargo build --profile "$profile" --locked --quiet --bin kvnode --bin kvctl --bin kvinspect
fi
for bin in "${bins[@]}"; do
  [ -x "$bindir/$bin" ] || die "$bindir/$bin is missing; run cargo build --profile $profile"
done

context=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$context/data"
chmod 1777 "$rootfs/tmp"

# The binaries, without their debug line tables (backtraces keep function names).
for bin in "${bins[@]}"; do
  cp "$bindir/$bin" "$rootfs/usr/local/bin/$bin"
  if command -v strip >/dev/null; then
    strip --strip-debug "$rootfs/usr/local/bin/$bin"
  fi
done

# copy_file PATH: copy PATH (following symlinks) to the same path inside the image.
copy_file() {
  local path=$1
  mkdir -p "$rootfs$(dirname "$path")"
  cp -L "$path" "$rootfs$path"
}

# Every library the binaries link, at the path the loader finds it on this machine, and the
# loader itself at the path written in the binaries (PT_INTERP).
libs=()
for bin in "${bins[@]}"; do
  while read -r lib; do
    libs+=("$lib")
  done < <(ldd "$bindir/$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done
[ "${#libs[@]}" -gt 0 ] || die "ldd found no libraries (is the binary static? then none are needed)"
libc_dir=""
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
  copy_file "$lib"
  case "$lib" in */libc.so.*) libc_dir=$(dirname "$lib") ;; esac
done
[ -n "$libc_dir" ] || die "no libc among the libraries ldd printed"

# Name resolution. glibc 2.34+ has files and dns built into libc; older ones load them
# from libnss_*.so.2, so copy those when present (small either way).
for module in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
  if [ -e "$libc_dir/$module" ]; then
    copy_file "$libc_dir/$module"
  fi
done
cat >"$rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
hosts:  files dns
EOF
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/:/sbin/nologin
kvstore:x:10001:10001:kvstore:/data:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
kvstore:x:10001:
EOF

cp deploy/Dockerfile "$context/Dockerfile"

# The classic builder builds FROM scratch with no network at all; BuildKit needs the buildx
# plugin, which is often missing on Debian's docker.io.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
echo "build-image: docker build -t $image ($(du -sh "$rootfs" | cut -f1) of files)"
docker build --quiet -t "$image" "$context" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "build-image: built $image, $((size / 1024 / 1024)) MiB ($size bytes)"
