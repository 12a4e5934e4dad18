#!/bin/sh
# Builds the local OCI image layout that containers run from, without docker or a registry.
#
#   scripts/build-images.sh [OUT_DIR]        (default: target/images)
#
# OUT_DIR becomes one OCI image layout (oci-layout, index.json, blobs/sha256/...) holding
#   busybox:latest   Debian's busybox-static with a symlink per applet, /tmp, and the files
#                    in images/busybox/ (/etc/passwd, /etc/group, /etc/hosts)
#   toolbox:latest   the busybox layer plus the omnicloud binary ($OMNICLOUD_BIN, default
#                    target/debug/omnicloud) and its shared libraries; entrypoint omnicloud
# named by the org.opencontainers.image.ref.name annotation in index.json.
#
# Idempotent: byte-identical layers for identical inputs (sorted tar, mtime 0, gzip -n), the
# toolbox layer is reused while the binary is unchanged, unreferenced blobs are removed.
# Needs sh, coreutils, tar, gzip, sha256sum, ldd; busybox-static is taken from /bin/busybox
# when installed, else fetched with `apt-get download` (or installed with apt-get as root).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/images}
bin=${OMNICLOUD_BIN:-$here/target/debug/omnicloud}
mkdir -p "$out/blobs/sha256" "$out/.build"
out=$(cd "$out" && pwd)
build=$out/.build
blobs=$out/blobs/sha256
used=$build/used-blobs
: >"$used"

say() { echo "build-images: $*" >&2; }
die() { say "error: $*"; exit 1; }

. "$here/scripts/lib/busybox.sh"

# Stores file $1 as a blob; prints its digest (sha256:hex) and size.
put_blob() {
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    if [ -f "$blobs/$hex" ]; then
        rm -f "$1"
    else
        mv "$1" "$blobs/$hex"
    fi
    echo "$hex" >>"$used"
    echo "sha256:$hex $size"
}

# Deterministic tar of directory $1 into file $2.
make_tar() {
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
        -C "$1" -cf "$2" .
}

# Writes text $1 to a blob; prints digest and size.
put_json() {
    tmp=$build/json.$$
    printf '%s' "$1" >"$tmp"
    put_blob "$tmp"
}

# JSON array of strings from the arguments (no quotes or backslashes in them).
json_list() {
    sep=
    printf '['
    for a in "$@"; do
        printf '%s"%s"' "$sep" "$a"
        sep=,
    done
    printf ']'
}

PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Builds one image: name, entrypoint JSON, cmd JSON, then layer lines "digest size diffid".
# Prints the manifest descriptor JSON.
make_image() {
    name=$1 entrypoint=$2 cmd=$3 layers=$4
    diff_ids= layer_descs= sep=
    while read -r digest size diff_id media; do
        diff_ids="$diff_ids$sep\"$diff_id\""
        layer_descs="$layer_descs$sep{\"mediaType\":\"$media\",\"digest\":\"$digest\",\"size\":$size}"
        sep=,
    done <<EOF
$layers
EOF
    config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"1970-01-01T00:00:00Z\",\"config\":{\"Entrypoint\":$entrypoint,\"Cmd\":$cmd,\"Env\":[\"$PATH_ENV\"],\"WorkingDir\":\"/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]},\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"scripts/build-images.sh\"}]}"
    set -- $(put_json "$config")
    manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$1\",\"size\":$2},\"layers\":[$layer_descs]}"
    set -- $(put_json "$manifest")
    echo "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$1\",\"size\":$2,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"annotations\":{\"org.opencontainers.image.ref.name\":\"$name\"}}"
    say "built $name (manifest $1)"
}

# --- busybox layer (gzip) ---
busybox=$(find_busybox)
root=$build/busybox-root
rm -rf "$root"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" \
    "$root/dev" "$root/var" "$root/home" "$root/usr/bin" "$root/usr/sbin" "$root/sbin"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
"$busybox" --list-full | while read -r applet; do
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
cp -R "$here/images/busybox/." "$root/"
chmod 644 "$root/etc/passwd" "$root/etc/group" "$root/etc/hosts"
make_tar "$root" "$build/busybox.tar"
bb_diff="sha256:$(sha256sum "$build/busybox.tar" | cut -d' ' -f1)"
gzip -n -c "$build/busybox.tar" >"$build/busybox.tar.gz"
rm -f "$build/busybox.tar"
bb_layer="$(put_blob "$build/busybox.tar.gz") $bb_diff application/vnd.oci.image.layer.v1.tar+gzip"
rm -rf "$root"

# --- toolbox layer (plain tar: the binary is large and gzip is slow) ---
[ -x "$bin" ] || die "omnicloud binary not found at $bin (cargo build, or set OMNICLOUD_BIN)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
libs=$(ldd "$bin" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | sort -u)
stamp="$(stat -c '%s %Y %i' "$bin") $bin $(for l in $libs; do stat -L -c '%s %Y' "$l"; done | tr '\n' ' ')"
tb_layer=
if [ -f "$build/toolbox.stamp" ] && [ "$(sed -n 1p "$build/toolbox.stamp")" = "$stamp" ]; then
    tb_layer=$(sed -n 2p "$build/toolbox.stamp")
    [ -f "$blobs/$(echo "$tb_layer" | cut -d' ' -f1 | cut -d: -f2)" ] || tb_layer=
fi
if [ -z "$tb_layer" ]; then
    root=$build/toolbox-root
    rm -rf "$root"
    mkdir -p "$root/usr/local/bin"
    cp "$bin" "$root/usr/local/bin/omnicloud"
    for l in $libs; do
        mkdir -p "$root$(dirname "$l")"
        cp -L "$l" "$root$l"
    done
    make_tar "$root" "$build/toolbox.tar"
    rm -rf "$root"
    tb_diff="sha256:$(sha256sum "$build/toolbox.tar" | cut -d' ' -f1)"
    tb_layer="$(put_blob "$build/toolbox.tar") $tb_diff application/vnd.oci.image.layer.v1.tar"
    printf '%s\n%s\n' "$stamp" "$tb_layer" >"$build/toolbox.stamp"
else
    echo "$tb_layer" | cut -d' ' -f1 | cut -d: -f2 >>"$used"
fi

# --- images, index, layout ---
bb_desc=$(make_image busybox:latest 'null' '["sh"]' "$bb_layer")
tb_desc=$(make_image toolbox:latest '["omnicloud"]' '["workload","http","--port","8080"]' \
    "$bb_layer
$tb_layer")
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s]}' \
    "$bb_desc" "$tb_desc" >"$build/index.json"
mv "$build/index.json" "$out/index.json"

# Remove blobs no image refers to any more (an older toolbox layer, say).
for f in "$blobs"/*; do
    grep -qx "$(basename "$f")" "$used" || rm -f "$f"
done
rm -f "$used"
say "layout $out: busybox:latest toolbox:latest ($(du -sh "$blobs" | cut -f1) of blobs)"
echo "$out"
