//go:build tools

// Package initramfs holds the maintenance OS recipe: commands.txt (the
// u-root commands), modules.txt (kernel modules to load), kernel.txt (the
// kernel package), built by scripts/build-initramfs.sh, and the VM test
// that boots it. This file keeps the u-root commands in go.mod.
package initramfs

import (
	_ "github.com/u-root/u-root/cmds/core/cat"
	_ "github.com/u-root/u-root/cmds/core/dmesg"
	_ "github.com/u-root/u-root/cmds/core/gosh"
	_ "github.com/u-root/u-root/cmds/core/init"
	_ "github.com/u-root/u-root/cmds/core/ip"
	_ "github.com/u-root/u-root/cmds/core/kexec"
	_ "github.com/u-root/u-root/cmds/core/ls"
	_ "github.com/u-root/u-root/cmds/core/lsmod"
	_ "github.com/u-root/u-root/cmds/core/poweroff"
	_ "github.com/u-root/u-root/cmds/core/ps"
)
