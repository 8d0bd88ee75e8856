# Loom's front door. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := build/bin
N ?= 3
KINDS ?= bios
.DEFAULT_GOAL := help

GO_SOURCES := $(shell find agent fabric scripts initramfs -name '*.go' -not -name '*_test.go') $(shell find fabric/ui/static -type f) go.mod go.sum
AGENT_SOURCES := $(shell find agent fabric/api fabric/client -name '*.go' -not -name '*_test.go') initramfs/commands.txt initramfs/modules.txt initramfs/kernel.txt go.mod go.sum scripts/build-initramfs.sh

.PHONY: help deps build initramfs images lab lab-down lint test bench fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: build/.deps ## install Debian packages (qemu, ipxe-qemu, kea, ...) and Go modules
build/.deps: scripts/deps.sh go.mod
	scripts/deps.sh
	@mkdir -p build && touch $@

build: $(BIN)/loomd $(BIN)/loom $(BIN)/loom-agent ## build loomd, loom and loom-agent into build/bin
$(BIN)/loomd: $(GO_SOURCES) | build/.deps
	$(GO) build -o $@ ./fabric/cmd/loomd
$(BIN)/loom: $(GO_SOURCES) | build/.deps
	$(GO) build -o $@ ./fabric/cmd/loom
$(BIN)/loom-agent: $(AGENT_SOURCES) | build/.deps
	CGO_ENABLED=0 $(GO) build -o $@ ./agent/cmd/loom-agent

initramfs: build/maintenance/initramfs.cpio.xz ## build the maintenance OS: build/maintenance/{vmlinuz,initramfs.cpio.xz}
build/maintenance/initramfs.cpio.xz: $(AGENT_SOURCES) | build/.deps
	scripts/build-initramfs.sh maintenance

images: build/images/host.ext4 build/guest/initramfs.cpio.xz build/roles/web.tar ## build the host image (build/images/host.ext4: kernel + u-root with loom-agent host and QEMU), the guest OS (build/guest) and the role packages of the samples (build/roles: images/roles, images/services)
build/host/initramfs.cpio.xz: $(AGENT_SOURCES) initramfs/host-modules.txt initramfs/host-files.txt build/guest/initramfs.cpio.xz | build/.deps
	scripts/build-initramfs.sh host
build/images/host.ext4: build/host/initramfs.cpio.xz scripts/build-host-image.sh
	scripts/build-host-image.sh
build/guest/initramfs.cpio.xz: $(AGENT_SOURCES) initramfs/guest-modules.txt | build/.deps
	scripts/build-initramfs.sh guest
build/roles/web.tar: $(wildcard images/roles/*/* images/services/*/*/*) scripts/build-roles.sh | build/.deps
	scripts/build-roles.sh

lab: deps build initramfs images ## run the lab (as root): loomd and N=3 QEMU servers (KINDS=bios,bios-e1000,uefi,uefi-ipxe in turn) that netboot, get imaged and boot their host OS (LOOM_ACCEL=auto|kvm|tcg)
	@# Under sudo, what was built goes back to the invoking user, so that a
	@# later `make build` without sudo works; build/lab (the running lab's
	@# disks, logs and secrets) stays root's.
	@if [ -n "$$SUDO_UID" ]; then find build -path build/lab -prune -o -exec chown -h "$$SUDO_UID:$$SUDO_GID" {} +; fi
	$(GO) run ./scripts/lab/cmd/lab up -n $(N) -kinds $(KINDS)

lab-down: ## remove the lab: its processes, namespace, bridge and taps (also after a crash)
	$(GO) run ./scripts/lab/cmd/lab down

lint: build/.deps ## go vet, staticcheck and errcheck on every package (pinned in go.mod's tool directive; .errcheck-excludes says which calls are never checked, and why)
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) tool errcheck -ignoretests -exclude .errcheck-excludes ./...

test: deps build initramfs images lint ## run every test (VM tests need root and QEMU; LOOM_REQUIRE_VM=1 makes them mandatory; LOOM_ACCEL=auto|kvm|tcg)
	$(GO) run ./scripts/lab/cmd/lab accel
	$(GO) test -count=1 -timeout 30m ./... # never from the cache: VM tests run binaries it does not track

bench: deps build initramfs images ## run the benchmarks against their peer tools (LOOM_ACCEL=auto|kvm|tcg)
	$(GO) run ./scripts/lab/cmd/lab accel
	$(GO) run ./bench/boot
	$(GO) run ./bench/dhcp
	$(GO) run ./bench/imaging
	$(GO) run ./bench/channel
	$(GO) run ./bench/guest
	$(GO) run ./bench/netboot
	$(GO) run ./bench/ha
	$(GO) run ./bench/ui
	$(GO) run ./bench/fabric -hosts 10000 -services 1000 -instances 100 # needs ~12,500 open files (it raises its limit up to the hard one)

fuzz: ## run each fuzz target for a while (FUZZTIME=30s)
	$(GO) test ./fabric/dhcp -run '^$$' -fuzz FuzzHandle -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./agent/cmdline -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./fabric/server -run '^$$' -fuzz FuzzRegister -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./fabric/image -run '^$$' -fuzz FuzzParseBmap -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./fabric/image -run '^$$' -fuzz FuzzManifest -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./fabric/api -run '^$$' -fuzz FuzzProfile -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./agent/channel -run '^$$' -fuzz FuzzFrame -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./agent/channel -run '^$$' -fuzz FuzzHostStream -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./agent/guests -run '^$$' -fuzz FuzzControl -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./fabric/tftp -run '^$$' -fuzz FuzzParseRequest -fuzztime $${FUZZTIME:-30s}

clean: ## remove build/ (keeps nothing, not even the kernel cache)
	rm -rf build
