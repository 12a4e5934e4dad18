# Sourced by the image scripts (needs $build and a `die` function).
# A static busybox binary, printed as a path.
find_busybox() {
    for c in /bin/busybox /usr/bin/busybox; do
        if [ -x "$c" ] && ! ldd "$c" >/dev/null 2>&1; then
            echo "$c"
            return
        fi
    done
    if [ -x "$build/busybox-static/bin/busybox" ]; then
        echo "$build/busybox-static/bin/busybox"
        return
    fi
    deb_dir=$build/deb
    rm -rf "$deb_dir" && mkdir -p "$deb_dir"
    if (cd "$deb_dir" && apt-get download busybox-static >/dev/null 2>&1); then
        dpkg-deb -x "$deb_dir"/busybox-static_*.deb "$build/busybox-static"
        rm -rf "$deb_dir"
        echo "$build/busybox-static/bin/busybox"
        return
    fi
    if [ "$(id -u)" = 0 ] && apt-get install -y busybox-static >/dev/null 2>&1; then
        echo /bin/busybox
        return
    fi
    die "no static busybox: install busybox-static (apt-get install busybox-static)"
}
