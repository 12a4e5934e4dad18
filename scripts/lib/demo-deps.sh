# Sourced by scripts/demo.sh and scripts/check-demo-deps.sh: every external program the
# main job runs that a minimal Debian (its Priority: required packages) may lack, as
# "program:package". scripts/check-demo-deps.sh (run by .ci/run) fails when the demo path
# runs a program that is neither here nor from a required package, or when a package named
# here is not the one that provides its program.
#
#   demo.sh         curl (waits for /readyz, asks each replica), setsid (util-linux)
#   build-images.sh a static busybox: fetched with apt-get download (apt, dpkg), not installed
#   the node        ip (bridge, veths), nsenter (an instance's side of its veth, exec probes),
#                   iptables (outbound NAT; without it instances run with a warning)
#   chaos campaigns tc (netem latency; iproute2, which the node needs anyway for ip)
#   cargo build     cc (the cc crate and the linker); libc6-dev has no program to check
DEMO_DEPS="curl:curl setsid:util-linux ip:iproute2 tc:iproute2 nsenter:util-linux iptables:iptables cc:gcc"
# Packages without a program of their own that the build needs.
DEMO_EXTRA_PACKAGES="libc6-dev"

# The package that provides program $1 on this machine, or nothing when it is not installed
# or not from a package: dpkg -S on its path, else on each link of its symlink chain
# (alternatives: cc -> /etc/alternatives/cc -> /usr/bin/gcc, which package gcc ships).
package_of() {
    f=$(command -v "$1" 2>/dev/null) || return 0
    for _ in 1 2 3 4 5 6; do
        # usrmerge: /bin/x and /usr/bin/x are one file; dpkg knows one of the names.
        for g in "$f" "${f#/usr}" "/usr$f"; do
            pkg=$(dpkg -S "$g" 2>/dev/null | grep -v '^diversion' | head -1 | cut -d: -f1)
            if [ -n "$pkg" ]; then
                echo "$pkg"
                return 0
            fi
        done
        next=$(readlink "$f") || return 0
        case $next in /*) f=$next ;; *) f=$(dirname "$f")/$next ;; esac
    done
}

# Installs (apt-get, as root) or names what is missing; returns non-zero when something
# stays missing. Programs are looked up on PATH plus the sbin dirs (sudo's PATH has them,
# a user's may not), which stay on PATH for the node.
ensure_demo_deps() {
    PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
    export PATH
    missing= pkgs=
    for pair in $DEMO_DEPS; do
        prog=${pair%%:*} pkg=${pair#*:}
        if ! command -v "$prog" >/dev/null 2>&1; then
            missing="$missing $prog"
            case " $pkgs " in *" $pkg "*) ;; *) pkgs="$pkgs $pkg" ;; esac
        fi
    done
    for pkg in $DEMO_EXTRA_PACKAGES; do
        if ! dpkg -s "$pkg" >/dev/null 2>&1; then
            missing="$missing $pkg"
            pkgs="$pkgs $pkg"
        fi
    done
    # build-images.sh downloads busybox-static with apt-get: a fresh container has no lists.
    lists=1
    ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || lists=
    [ -z "$pkgs" ] && [ -n "$lists" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq || true
        [ -z "$pkgs" ] && return 0
        echo "demo: missing${missing}: installing${pkgs}" >&2
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >&2 &&
            return 0
    fi
    [ -z "$pkgs" ] && return 0
    echo "demo: error: missing${missing} (packages:${pkgs}); install them with:" >&2
    echo "  sudo apt-get install${pkgs}" >&2
    return 1
}
