#!/bin/sh
# Packs OCI images of third-party software from Debian's own packages, with umoci:
#
#   scripts/build-debian-images.sh [OUT_DIR]        (default: target/debian-images)
#
# OUT_DIR becomes one OCI image layout holding
#   redis   Debian's redis-server and redis-tools (redis-server, redis-cli) and the library packages they
#           needs (found by following the lib* Depends of apt-cache), on a busybox-static
#           base (/bin/sh, the applets) with images/busybox/etc; entrypoint redis-server
#   nginx   Debian's nginx (nginx, nginx-common) and its libraries on the same base: the
#           default site serving /var/www/html on port 80, in the foreground, its logs on
#           the container's stdout/stderr, workers as nobody; entrypoint nginx
# tagged `redis` and `nginx` (copy one elsewhere with `skopeo copy oci:OUT_DIR:redis docker://...`).
#
# The packages come from apt (`apt-get download`, no root needed), are unpacked with
# `dpkg-deb -x`, tarred by GNU tar and packed with `umoci raw add-layer` / `umoci config`. A rebuild with the same
# package versions reuses the existing image. Needs apt-get, dpkg-deb, umoci (Debian
# package umoci) and busybox-static (taken as scripts/build-images.sh does).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/debian-images}
mkdir -p "$out.build"
build=$(cd "$out.build" && pwd)

say() { echo "build-debian-images: $*" >&2; }
die() { say "error: $*"; exit 1; }

command -v umoci >/dev/null || die "umoci is not installed (apt-get install umoci)"
command -v apt-get >/dev/null || die "apt-get is needed to fetch Debian packages"
. "$here/scripts/lib/busybox.sh"

# The packages and the closure of its library dependencies (lib* packages and zlib1g: the
# maintainer-script tools such as adduser are not needed to run the program).
closure() {
    todo=$1 seen=
    while [ -n "$todo" ]; do
        set -- $todo
        pkg=$1 && shift && todo=$*
        case " $seen " in *" $pkg "*) continue ;; esac
        seen="$seen $pkg"
        for dep in $(apt-cache depends --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances "$pkg" 2>/dev/null |
            awk '/Depends:/ { print $2 }' | tr -d '<>' | sed 's/:any$//'); do
            case $dep in lib* | zlib1g) todo="$todo $dep" ;; esac
        done
    done
    echo $seen
}

# Builds image $1 from packages $2 (space-separated) with entrypoint $3 and cmd $4 (words,
# comma-separated); $5, when given, is a function run on the unpacked rootfs (what a
# package's maintainer scripts would have done).
build_image() {
    tag=$1 pkg=$2 entry=$3 cmd=$4 fixup=${5:-}
    pkgs=$(closure "$pkg")
    debs=$build/$tag-debs
    rm -rf "$debs" && mkdir -p "$debs"
    (cd "$debs" && apt-get download $pkgs >/dev/null 2>&1) ||
        die "apt-get download $pkgs failed (is the package index there? apt-get update)"
    stamp=$( (ls "$debs" | sort; cat "$0") | sha256sum | cut -c1-16)
    if [ -f "$out/index.json" ] && [ "$(cat "$build/$tag.stamp" 2>/dev/null)" = "$stamp" ]; then
        say "$tag: up to date ($pkgs)"
        return
    fi
    root=$build/$tag-rootfs
    rm -rf "$root" && mkdir -p "$root/bin" "$root/tmp" "$root/data"
    chmod 1777 "$root/tmp"
    for d in "$debs"/*.deb; do
        dpkg-deb -x "$d" "$root"
    done
    cp "$(find_busybox)" "$root/bin/busybox"
    for applet in sh ls cat echo sleep ps id; do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    cp -r "$here/images/busybox/etc/." "$root/etc/"
    rm -rf "$root/usr/share/doc" "$root/usr/share/man"
    [ -z "$fixup" ] || "$fixup" "$root"
    [ -f "$out/index.json" ] || umoci init --layout "$out"
    umoci rm --image "$out:$tag" 2>/dev/null || true
    umoci new --image "$out:$tag"
    # One layer tarred by GNU tar (sorted, root-owned) and added verbatim: umoci 0.4.7's
    # `insert` wrote this tree as a truncated tar (no end blocks; GNU tar and Python agree).
    tar --sort=name --owner=0 --group=0 --numeric-owner -C "$root" -cf "$build/$tag.tar" .
    umoci raw add-layer --image "$out:$tag" "$build/$tag.tar"
    rm -f "$build/$tag.tar"
    set -- --config.entrypoint "$entry"
    for c in $(echo "$cmd" | tr ',' ' '); do
        set -- "$@" --config.cmd "$c"
    done
    umoci config --image "$out:$tag" "$@" --config.workingdir /data \
        --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --os linux --architecture amd64
    umoci gc --layout "$out"
    echo "$stamp" >"$build/$tag.stamp"
    say "$tag: $(du -sh "$root" | cut -f1) unpacked from $pkgs"
}

build_image redis "redis-server redis-tools" redis-server "--protected-mode,no"

# nginx-common's postinst links the default site and makes the log and state dirs.
nginx_fixup() {
    r=$1
    mkdir -p "$r/run" "$r/var/log/nginx" "$r/var/lib/nginx" "$r/var/www/html" "$r/etc/nginx/sites-enabled"
    ln -sf ../sites-available/default "$r/etc/nginx/sites-enabled/default"
    ln -sf /dev/stdout "$r/var/log/nginx/access.log"
    ln -sf /dev/stderr "$r/var/log/nginx/error.log"
    sed -i 's/^user www-data;/user nobody nogroup;/' "$r/etc/nginx/nginx.conf"
    echo 'daemon off;' >>"$r/etc/nginx/nginx.conf"
    for page in "$r"/usr/share/nginx/html/index.html; do
        [ -f "$page" ] && cp "$page" "$r/var/www/html/index.nginx-debian.html"
    done
    return 0
}
build_image nginx "nginx nginx-common" nginx "" nginx_fixup
