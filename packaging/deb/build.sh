#!/usr/bin/env bash
# Builds the Debian package of shadowcopy from this workspace, with dpkg-deb:
#   packaging/deb/build.sh [--profile release|debug] [--out DIR] [--no-build]
# writes DIR/shadowcopy_<version>_<arch>.deb (DIR defaults to target/deb) and prints its path.
#   --profile   which cargo build of the binaries to package (default release; debug is for tests)
#   --no-build  package the binaries already in target/<profile> instead of running cargo build
#               (the install test does, so that it compiles nothing and never rebuilds a binary
#               other tests are running)
# The package holds shadowcopy, shadowcopy-writer (/usr/bin) and shadowcopyd (/usr/sbin), the units
# of packaging/systemd, the default /etc/shadowcopy/shadowcopyd.toml (a conffile), the empty
# /etc/shadowcopy/writers.d (writers shadowcopyd hosts), standalone-writers.d (writers
# shadowcopy-writer@.service runs) and backup (scheduled backups' settings), man pages and bash, zsh and fish completions that the binaries
# make from their own command-line definitions, the documentation with the user guide, the
# examples and the protocol's .proto files. Not packaged: shadowcopy-fault and shadowcopy-conformance (test
# tools) and the example copy provider (its source is among the examples).
# Needs dpkg-deb, dpkg-shlibdeps (dpkg-dev), strip (binutils) and gzip; runs as any user.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/packaging/deb"
profile=release
out="$root/target/deb"
build=true
while (($#)); do
    case "$1" in
        --profile)
            profile="${2:?--profile needs release or debug}"
            shift 2
            ;;
        --out)
            out="${2:?--out needs a directory}"
            shift 2
            ;;
        --no-build)
            build=false
            shift
            ;;
        *)
            echo "build.sh: unknown option $1 (--profile release|debug, --out DIR, --no-build)" >&2
            exit 2
            ;;
    esac
done
case "$profile" in
    release) cargo_profile=release ;;
    debug) cargo_profile=dev ;;
    *)
        echo "build.sh: --profile is release or debug, not $profile" >&2
        exit 2
        ;;
esac
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build.sh: $tool is missing; install it with: apt-get install dpkg-dev binutils gzip" >&2
        exit 1
    fi
done

target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin_dir="$target_dir/$profile"
programs=(shadowcopy shadowcopy-writer shadowcopyd)
if $build; then
    (cd "$root" && cargo build --locked --profile "$cargo_profile" \
        -p shadowcopy-cli -p shadowcopy-daemon -p shadowcopy-writers --bins)
fi
for program in "${programs[@]}"; do
    if [[ ! -x "$bin_dir/$program" ]]; then
        echo "build.sh: $bin_dir/$program is missing; build it with" \
            "cargo build --profile $cargo_profile --workspace --bins, or leave out --no-build" >&2
        exit 1
    fi
done

# The units and the default configuration belong to the systemd packaging (docs/systemd.md).
units_dir="$root/packaging/systemd"
config="$root/packaging/shadowcopyd.toml"
for needed in "$units_dir/shadowcopyd.socket" "$units_dir/shadowcopyd.service" "$config"; do
    if [[ ! -f "$needed" ]]; then
        echo "build.sh: $needed is missing; the package ships the units of packaging/systemd" \
            "and the default configuration packaging/shadowcopyd.toml" >&2
        exit 1
    fi
done

version="$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml")"
if [[ -z "$version" ]]; then
    echo "build.sh: no version in [workspace.package] of $root/Cargo.toml" >&2
    exit 1
fi
arch="$(dpkg --print-architecture)"
# Every time stamp in the package is the last commit's, so that two builds of one commit are the
# same package (dpkg-deb reads SOURCE_DATE_EPOCH too).
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
    SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH

umask 022
work="$(mktemp -d "${TMPDIR:-/tmp}/shadowcopy-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
pkg="$work/pkg"
doc="$pkg/usr/share/doc/shadowcopy"
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/sbin" "$pkg/lib/systemd/system" \
    "$pkg/etc/shadowcopy/writers.d" "$pkg/etc/shadowcopy/standalone-writers.d" \
    "$pkg/usr/share/man/man1" "$pkg/usr/share/man/man8" \
    "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
    "$pkg/usr/share/fish/vendor_completions.d" "$pkg/usr/share/shadowcopy" "$doc"

# The programs, stripped as dh_strip strips them (debug info makes a debug build ten times larger).
install -m 0755 "$bin_dir/shadowcopy" "$bin_dir/shadowcopy-writer" "$pkg/usr/bin/"
install -m 0755 "$bin_dir/shadowcopyd" "$pkg/usr/sbin/"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    "$pkg/usr/bin/shadowcopy" "$pkg/usr/bin/shadowcopy-writer" "$pkg/usr/sbin/shadowcopyd"

# Man pages and completions, from the binaries' own clap definitions (crates/manual).
"$bin_dir/shadowcopy" man-pages "$work/man"
"$bin_dir/shadowcopy-writer" man-pages "$work/man"
"$bin_dir/shadowcopyd" --man-pages "$work/man"
for page in "$work"/man/*.[18]; do
    gzip -9n <"$page" >"$pkg/usr/share/man/man${page##*.}/$(basename "$page").gz"
done
for program in "${programs[@]}"; do
    if [[ "$program" == shadowcopyd ]]; then
        generate=("$bin_dir/$program" --completions)
    else
        generate=("$bin_dir/$program" completions)
    fi
    "${generate[@]}" bash >"$pkg/usr/share/bash-completion/completions/$program"
    "${generate[@]}" zsh >"$pkg/usr/share/zsh/vendor-completions/_$program"
    "${generate[@]}" fish >"$pkg/usr/share/fish/vendor_completions.d/$program.fish"
done

# The units of packaging/systemd, whatever they are, and the default configuration.
enable_units=()
for unit in "$units_dir"/*.service "$units_dir"/*.socket "$units_dir"/*.timer; do
    [[ -f "$unit" ]] || continue
    install -m 0644 "$unit" "$pkg/lib/systemd/system/"
    name="$(basename "$unit")"
    # postinst enables what can be enabled as it is: not templates (they need an instance, which
    # the admin names), and only units with an [Install] section.
    if [[ "$name" != *@.* ]] && grep -q '^\[Install\]' "$unit"; then
        enable_units+=("$name")
    fi
done
install -m 0644 "$config" "$pkg/etc/shadowcopy/shadowcopyd.toml"
# The settings of scheduled backups (shadowcopy-backup@.service) name repositories and password
# files: root's alone.
install -d -m 0700 "$pkg/etc/shadowcopy/backup"
install -d "$pkg/usr/share/lintian/overrides"
install -m 0644 "$here/lintian-overrides" "$pkg/usr/share/lintian/overrides/shadowcopy"

# Documentation: the README, the docs with the user guide and the schemas, the examples, and the
# .proto files that writers and providers in other languages generate their stubs from.
install -m 0644 "$root/README.md" "$root/ARCHITECTURE.md" "$doc/"
cp -r "$root/docs" "$doc/docs"
install -d "$doc/examples"
cp -r "$root/examples/python-writer" "$doc/examples/python-writer"
install -d "$doc/examples/copy-provider"
cp -r "$root/examples/copy-provider/README.md" "$root/examples/copy-provider/Cargo.toml" \
    "$root/examples/copy-provider/src" "$doc/examples/copy-provider/"
install -m 0644 "$root/crates/writer-sdk/examples/counter_writer.rs" "$doc/examples/"
cp -r "$root/crates/protocol/proto" "$pkg/usr/share/shadowcopy/proto"
# The guide sits at /usr/share/doc/shadowcopy/guide, where the man pages' SEE ALSO points.
ln -s docs/guide "$doc/guide"
install -m 0644 "$here/copyright" "$doc/copyright"
{
    echo "Rust crates linked into shadowcopy, shadowcopyd and shadowcopy-writer, with their licences"
    echo "(the texts are in each crate's source on crates.io):"
    echo
    (cd "$root" && cargo tree --offline --locked -e normal,no-proc-macro --prefix none \
        -f '{p}|{l}' -p shadowcopy-cli -p shadowcopy-daemon -p shadowcopy-writers) \
        | sed -e 's/ (\*)$//' -e 's/ ([^)|]*)|/|/' | grep -v '^shadowcopy' | grep . | sort -u \
        | awk -F'|' '{ printf "%-45s %s\n", $1, $2 }'
} >"$doc/third-party-crates.txt"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
    echo "shadowcopy ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the shadowcopy workspace at commit $commit ($profile profile)."
    echo
    echo " -- shadowcopy developers <shadowcopy@example.invalid>  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
find "$doc" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
chmod 0755 "$doc/examples/python-writer/generate.sh" "$doc/examples/python-writer/writer.py"

# Control files.
depends="$(cd "$work" && mkdir -p debian && printf 'Source: shadowcopy\n\nPackage: shadowcopy\nArchitecture: any\n' >debian/control \
    && dpkg-shlibdeps -O "$pkg/usr/bin/shadowcopy" "$pkg/usr/bin/shadowcopy-writer" "$pkg/usr/sbin/shadowcopyd" \
    | sed -n 's/^shlibs:Depends=//p')"
installed_size="$(du -sk --apparent-size --exclude=DEBIAN "$pkg" | cut -f1)"
cat >"$pkg/DEBIAN/control" <<EOF
Package: shadowcopy
Version: $version
Architecture: $arch
Maintainer: shadowcopy developers <shadowcopy@example.invalid>
Installed-Size: $installed_size
Depends: $depends
Recommends: btrfs-progs, xfsprogs, restic
Section: admin
Priority: optional
Description: application-consistent shadow copies and backups for Linux
 shadowcopy brings the Volume Shadow Copy Service model to Linux: applications
 (writers) describe their data and quiesce when asked, backup tools
 (requesters) choose what to back up, snapshot backends (providers) cut
 point-in-time copies of volumes, and the coordinator, shadowcopyd, sequences
 them so that a set of shadow copies is consistent across applications and
 volumes and no application is left frozen.
 .
 This package holds shadowcopyd (started through its socket), the shadowcopy
 command for shadow copies, backups into restic repositories and restores,
 and shadowcopy-writer, which runs declared writers (scripts, hook
 directories, cgroups, PostgreSQL, MariaDB, SQLite). btrfs-progs and xfsprogs
 make the file systems its providers copy; restic reads its repositories.
EOF
(cd "$pkg" && find etc -type f -printf '/%p\n' | sort) >"$pkg/DEBIAN/conffiles"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$pkg/DEBIAN/md5sums"
for script in postinst prerm postrm; do
    sed -e "s/@ENABLE_UNITS@/${enable_units[*]}/" "$here/$script" >"$pkg/DEBIAN/$script"
    chmod 0755 "$pkg/DEBIAN/$script"
done
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/md5sums"
find "$pkg" -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

# A debug build is packaged for the install test, which wants it fast more than small.
if [[ "$profile" == debug ]]; then
    compression=(-Zgzip -z1)
else
    compression=(-Zxz)
fi
mkdir -p "$out"
deb="$(cd "$out" && pwd)/shadowcopy_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compression[@]}" --build "$pkg" "$deb" >/dev/null
echo "$deb"
