#!/usr/bin/env bash
# Installs the Debian packages Loom needs (idempotent: only what is missing)
# and downloads the Go modules. The kernel package for the maintenance OS is
# fetched into build/cache by build-initramfs.sh, never installed into /boot.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(
	qemu-system-x86 ipxe-qemu qemu-utils   # the lab's servers and their PXE ROMs
	iproute2 kmod cpio xz-utils zstd        # namespaces, module closure, initramfs
	curl ca-certificates git make gcc       # build and fetch
	kea-admin kea-dhcp4-server dnsmasq-base # bench/dhcp peers (perfdhcp is in kea-admin)
	bmap-tools e2fsprogs util-linux fdisk   # bench/imaging peer; host filesystem; losetup; sfdisk (GPT test)
	strace                                  # bench/imaging -strace (system calls per MiB)
	ipxe tftp-hpa atftp ovmf                # first-stage iPXE over TFTP; real TFTP clients and UEFI firmware (tests)
	isc-dhcp-relay                          # a relayed subnet in the lab tests
	tftpd-hpa nginx-light                   # bench/netboot peers (their services are not started)
	openipmi ipmitool                       # an IPMI BMC simulator (ipmi_sim) for the IPMI power tests
	prometheus                              # promtool checks loomd's /metrics (its service is not started)
	chromium fonts-dejavu-core              # the dashboard's browser test and bench/ui (headless)
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "== installing Debian packages: ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	# Packaged services (Kea, tftpd-hpa, nginx, Prometheus) must not start and grab ports on the host.
	echo exit 101 | $sudo tee /usr/sbin/policy-rc.d >/dev/null; $sudo chmod +x /usr/sbin/policy-rc.d
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
	$sudo rm -f /usr/sbin/policy-rc.d
fi
command -v go >/dev/null || { echo "Go 1.26 or newer is required (https://go.dev/dl/)" >&2; exit 1; }
go mod download
