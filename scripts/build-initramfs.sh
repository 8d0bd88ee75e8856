#!/usr/bin/env bash
# Builds an OS image pair {vmlinuz,initramfs.cpio.xz} from the data files
# in initramfs/: kernel.txt (the Debian kernel package), modules.txt
# (modules to load, with their dependency closure), commands.txt (u-root
# commands). loom-agent is the uinit.
#
#   build-initramfs.sh [maintenance]  → build/maintenance/ (uinit: loom-agent maintenance)
#   build-initramfs.sh host           → build/host/        (uinit: loom-agent host;
#                                       plus host-modules.txt and host-files.txt)
#   build-initramfs.sh guest          → build/guest/       (uinit: loom-agent guest;
#                                       guest-modules.txt only: no NIC drivers)
# Needs: apt-get (download only), dpkg-deb, depmod/modprobe (kmod), xz, go.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-maintenance}
case "$flavour" in
maintenance | host | guest) ;;
*) echo "usage: $0 [maintenance|host|guest]" >&2; exit 2 ;;
esac
out=build/$flavour
cache=build/cache
data() { grep -v '^[[:space:]]*#' "$1" | sed '/^[[:space:]]*$/d'; }

pkg=$(data initramfs/kernel.txt | head -n1)
kver=${pkg#linux-image-}
kroot=$cache/kernel/$kver

if [ ! -f "$kroot/boot/vmlinuz-$kver" ]; then
	echo "== fetching kernel package $pkg"
	mkdir -p "$cache/deb"
	(cd "$cache/deb" && { ls "${pkg}"_*.deb >/dev/null 2>&1 || apt-get download "$pkg"; })
	rm -rf "$kroot.tmp"
	mkdir -p "$kroot.tmp"
	dpkg-deb -x "$cache/deb/${pkg}"_*.deb "$kroot.tmp"
	# Debian's package ships no modules.dep.
	depmod -b "$kroot.tmp" "$kver"
	rm -rf "$kroot"
	mv "$kroot.tmp" "$kroot"
fi

echo "== kernel modules (dependency closure)"
stage=build/initramfs-stage-$flavour
modlists=(initramfs/modules.txt)
[ "$flavour" = host ] && modlists+=(initramfs/host-modules.txt)
[ "$flavour" = guest ] && modlists=(initramfs/guest-modules.txt)
rm -rf "$stage"
mkdir -p "$stage/lib/modules/$kver" "$stage/lib/modules-load.d"
cat "${modlists[@]}" | grep -v '^[[:space:]]*#' | sed '/^[[:space:]]*$/d' | while read -r m; do
	modprobe -d "$kroot" -S "$kver" --show-depends "$m" || { echo "module $m not found in $pkg" >&2; exit 1; }
done | awk '$1 == "insmod" { print $2 }' | sort -u | while read -r f; do
	rel=lib/modules/${f#*/lib/modules/}
	mkdir -p "$stage/$(dirname "$rel")"
	cp "$f" "$stage/$rel"
done
cp "$kroot/lib/modules/$kver/modules.builtin" "$kroot/lib/modules/$kver/modules.order" "$stage/lib/modules/$kver/"
[ -f "$kroot/lib/modules/$kver/modules.builtin.modinfo" ] && cp "$kroot/lib/modules/$kver/modules.builtin.modinfo" "$stage/lib/modules/$kver/"
depmod -b "$stage" "$kver"
cat "${modlists[@]}" | grep -v '^[[:space:]]*#' | sed '/^[[:space:]]*$/d' > "$stage/lib/modules-load.d/loom.conf"
echo "   $(find "$stage/lib/modules" -name '*.ko*' | wc -l) modules"

extra=()
if [ "$flavour" = host ]; then
	while read -r f; do extra+=(-files "$f"); done < <(data initramfs/host-files.txt)
fi
echo "== u-root (takes a minute or two)"
mkdir -p "$out"

# shellcheck disable=SC2046
GOOS=linux GOARCH=amd64 CGO_ENABLED=0 \
	go tool u-root -o "$out/initramfs.cpio" \
	-uinitcmd="loom-agent $flavour" -defaultsh=gosh \
	-files "$stage/lib/modules:lib/modules" \
	-files "$stage/lib/modules-load.d:lib/modules-load.d" \
	"${extra[@]}" \
	$(data initramfs/commands.txt) ./agent/cmd/loom-agent
xz --check=crc32 -9 -T0 -f "$out/initramfs.cpio"
cp "$kroot/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$kver" > "$out/kernel-version"
ls -l "$out"
