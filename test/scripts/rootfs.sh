# shellcheck shell=bash
# Other PostgreSQL majors than the host's 15: `make test PG=17` (and demo,
# bench) runs the same harness inside a minimal root filesystem of the Debian
# release that ships that major.  Sourced by run.sh; needs root.
#
#   rootfs_release MAJOR     the Debian release for MAJOR (17 trixie, 18 forky)
#   rootfs_run MAJOR MODE    build the root filesystem if missing, copy the
#                            working tree into it and run `run.sh MODE` there
#
# The root filesystem is built once per machine with debootstrap from the
# Debian mirror the host's apt uses, and cached in $ROOTFS_CACHE/<release>
# (a marker file says it is complete; delete the directory to rebuild it).
# Builds are serialized by an flock on $ROOTFS_CACHE/<release>.lock.  Each run
# gets its own mount namespace (unshare), so /proc, /dev and /dev/shm mounted
# for the chroot disappear with it, even on Ctrl-C or kill.

ROOTFS_CACHE=${CREDITS_ROOTFS_CACHE:-/var/cache/credits-rootfs}

rootfs_release() {
    case $1 in
        17) echo trixie ;;
        18) echo forky ;;
        *) return 1 ;;
    esac
}

# The first Debian archive URI of the host's apt sources that serves the
# host's release (one-line or deb822 format); CREDITS_DEBIAN_MIRROR overrides.
debian_mirror() {
    if [[ -n ${CREDITS_DEBIAN_MIRROR:-} ]]; then
        echo "$CREDITS_DEBIAN_MIRROR"
        return 0
    fi
    local codename
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk -v rel="$codename" '
            /^deb[[:space:]]/ { line = $0; sub(/\[[^]]*\][[:space:]]*/, "", line)   # [options]
                                split(line, f); if (f[3] == rel) { print f[2]; exit } }
            /^URIs:/   { u = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == rel) { print u; exit } }
            /^$/       { u = "" }'
}

# rootfs_chroot DIR CMD...: CMD inside DIR with /proc, /dev and /dev/shm, in a
# private mount namespace.
rootfs_chroot() {
    local dir=$1
    shift
    # shellcheck disable=SC2016  # expanded by the inner bash
    unshare --mount --propagation private -- bash -c '
        set -e
        dir=$1; shift
        mount -t proc proc "$dir/proc"
        mount --bind /dev "$dir/dev"
        mount -t tmpfs -o mode=1777 shm "$dir/dev/shm"
        exec chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LC_ALL=C.UTF-8 "$@"' rootfs "$dir" "$@"
}

# rootfs_build MAJOR RELEASE DIR LOG: debootstrap + the harness's packages.
rootfs_build() {
    local major=$1 release=$2 dir=$3 log=$4 mirror
    mirror=$(debian_mirror)
    if [[ -z $mirror ]]; then
        echo "rootfs: no Debian mirror found in the apt sources (set CREDITS_DEBIAN_MIRROR)" >&2
        return 1
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update &&
          DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
              --no-install-recommends install debootstrap; } >>"$log" 2>&1 </dev/null || return 1
    fi
    rm -rf "$dir"
    # debootstrap 1.0.128 (Debian 12) has no script for forky: it is built like sid.
    debootstrap --variant=minbase --components=main "$release" "$dir" "$mirror" \
        /usr/share/debootstrap/scripts/sid >>"$log" 2>&1 </dev/null || return 1

    # A testing release's Release file may be past its Valid-Until date on a
    # mirror snapshot; no services are started, no default cluster is created.
    echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99credits"
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 755 "$dir/usr/sbin/policy-rc.d"
    mkdir -p "$dir/etc/postgresql-common"
    echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.conf"
    cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true

    mkdir -p "$dir/tmp/credits-deps"
    cp "$SCRIPTS/deps.sh" "$dir/tmp/credits-deps/deps.sh"
    rootfs_chroot "$dir" bash /tmp/credits-deps/deps.sh "$major" >>"$log" 2>&1 </dev/null || return 1
    rm -rf "$dir/tmp/credits-deps" "$dir"/var/cache/apt/archives/*.deb
}

# rootfs_ensure MAJOR: print the directory of a complete root filesystem.
rootfs_ensure() {
    local major=$1 release
    release=$(rootfs_release "$major") || { echo "rootfs: PostgreSQL $major is not supported (15, 17, 18)" >&2; return 1; }
    local dir=$ROOTFS_CACHE/$release marker=.credits-rootfs-pg$major
    mkdir -p "$ROOTFS_CACHE"
    (
        exec 8>>"$ROOTFS_CACHE/$release.lock"
        flock 8
        if [[ -f $dir/$marker ]]; then exit 0; fi
        echo "== rootfs: building Debian $release with PostgreSQL $major in $dir (once per machine)" >&2
        local log=$ROOTFS_CACHE/$release.log start=$SECONDS
        : >"$log"
        if ! rootfs_build "$major" "$release" "$dir.new" "$log"; then
            echo "rootfs: building $release failed, last lines of $log:" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        touch "$dir.new/$marker"
        rm -rf "$dir"
        mv "$dir.new" "$dir"
        echo "== rootfs: $release ready after $((SECONDS - start)) s" >&2
    ) || return 1
    echo "$dir"
}

# The working tree without git metadata or build outputs (from any major).
copy_tree() {
    tar -C "$1" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
        --exclude=./results --exclude=./log --exclude=./tmp_check --exclude=./test/output_iso \
        --exclude=regression.diffs --exclude=regression.out -cf - . | tar -C "$2" -xf -
}

rootfs_run() {
    local major=$1 mode=$2 dir
    if ((EUID != 0)); then
        echo "make $mode PG=$major builds a Debian root filesystem and needs root" >&2
        return 1
    fi
    dir=$(rootfs_ensure "$major") || return 1
    local src rc=0 name
    # The harness's and the benchmark's settings go in with it.
    local settings=()
    for name in $(compgen -e); do
        case $name in
            BENCH_* | CREDITS_SUITE_TIMEOUT | CREDITS_SUITES | CREDITS_LOAD | CREDITS_OPS | CREDITS_SCALE | CREDITS_VALGRIND)
                settings+=("$name=${!name}") ;;
        esac
    done
    src=$(mktemp -d "$dir/tmp/credits-src.XXXXXX")
    chmod 755 "$src"
    copy_tree "$ROOT" "$src"
    # shellcheck disable=SC2034  # read by run.sh
    ROOTFS_STARTED=1   # from here on, the run inside prints its own summary
    rootfs_chroot "$dir" env CREDITS_PG="$major" CREDITS_IN_ROOTFS=1 "${settings[@]}" \
        bash "${src#"$dir"}/test/scripts/run.sh" "$mode" || rc=$?
    rm -rf "$src"
    if [[ $mode == bench ]]; then
        echo "== bench: the paths above are inside $dir (its /tmp is $dir/tmp on this machine)"
    fi
    return "$rc"
}
