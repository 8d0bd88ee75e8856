#!/usr/bin/env bash
# Builds the host image build/images/host.ext4: an ext4 filesystem holding
# the host OS (boot/vmlinuz and boot/initramfs.cpio.xz from
# `build-initramfs.sh host`). This is what the host partition receives; the
# maintenance agent kexecs into it. mke2fs -d needs no root and no loop device.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/host/initramfs.cpio.xz ] || scripts/build-initramfs.sh host
root=build/images/host-root
rm -rf "$root"
mkdir -p "$root/boot" build/images
cp build/host/vmlinuz build/host/initramfs.cpio.xz "$root/boot/"
cp build/host/kernel-version "$root/boot/"
# Size: the content plus a quarter, in whole MiB, at least 16 MiB.
kb=$(du -sk "$root" | cut -f1)
mib=$(( (kb * 5 / 4) / 1024 + 8 ))
[ "$mib" -lt 16 ] && mib=16
rm -f build/images/host.ext4
E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext4 -L loom-host -U 6c6f6f6d-686f-7374-0000-000000000001 \
	-E root_owner=0:0,hash_seed=6c6f6f6d-686f-7374-0000-000000000002 -d "$root" build/images/host.ext4 "${mib}M"
ls -l build/images/host.ext4
