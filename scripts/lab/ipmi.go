package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Chassis answers OpenIPMI's ipmi_sim as its chassis_control program for
// one lab server, over the server's QMP socket: "get power|boot ..." prints
// "name:value" lines, "set power 0|1" stops the server or resets and runs
// it, "set boot pxe|none|..." records the boot device (lab servers boot
// from the network first anyway). So a lab server can have an IPMI BMC:
// ipmi_sim speaks RMCP+ and runs `lab chassis -qmp SOCK ...` for the rest.
func Chassis(qmpSock string, args []string, out io.Writer) error {
	b := &VirtualBMC{QMP: qmpSock}
	bootFile := qmpSock + ".boot"
	if len(args) < 2 {
		return fmt.Errorf("chassis: want get NAME... or set NAME VALUE..., got %q", args)
	}
	switch args[0] {
	case "get":
		for _, name := range args[1:] {
			switch name {
			case "power":
				state, err := b.powerState()
				if err != nil {
					return err
				}
				v := 0
				if state == "On" {
					v = 1
				}
				fmt.Fprintf(out, "power:%d\n", v)
			case "boot":
				boot, err := os.ReadFile(bootFile)
				if err != nil || len(boot) == 0 {
					boot = []byte("default")
				}
				fmt.Fprintf(out, "boot:%s\n", strings.TrimSpace(string(boot)))
			default:
				return fmt.Errorf("chassis: cannot get %q", name)
			}
		}
		return nil
	case "set":
		for i := 1; i+1 < len(args); i += 2 {
			name, val := args[i], strings.Trim(args[i+1], `"`)
			switch name {
			case "power":
				kind := "On"
				if val == "0" {
					kind = "ForceOff"
				}
				if err := b.reset(kind); err != nil {
					return err
				}
			case "boot":
				if err := os.WriteFile(bootFile, []byte(val+"\n"), 0o644); err != nil {
					return err
				}
			case "reset":
				if err := b.reset("ForceRestart"); err != nil {
					return err
				}
			default:
				return fmt.Errorf("chassis: cannot set %q", name)
			}
		}
		return nil
	}
	return fmt.Errorf("chassis: %q: want get or set", args[0])
}

// IPMIBMC runs OpenIPMI's ipmi_sim in the namespace as a server's IPMI
// BMC on listen (host:port), with one administrator, its chassis driven by
// `labBin chassis -qmp QMP`. Files go to dir; the caller ends the command.
func (n *Net) IPMIBMC(ctx context.Context, dir, listen, user, password, labBin, qmpSock string) (*exec.Cmd, error) {
	args, err := IPMISim(dir, listen, user, password, labBin+" chassis -qmp "+qmpSock)
	if err != nil {
		return nil, err
	}
	cmd := n.Command(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// IPMISim writes the configuration of an OpenIPMI ipmi_sim BMC into dir:
// RMCP+ on listen (host:port), one administrator, and chassisCmd as its
// chassis_control program (power and boot device). It returns the command
// line that runs it.
func IPMISim(dir, listen, user, password, chassisCmd string) ([]string, error) {
	host, port, ok := strings.Cut(listen, ":")
	if !ok {
		return nil, fmt.Errorf("ipmi: listen %q: want host:port", listen)
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`name "loomlab"
set_working_mc 0x20
  startlan 1
    addr %s %s
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 2 true  %q %q admin 10 none md2 md5 straight
`, host, port, chassisCmd, user, password)
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"
	if err := os.WriteFile(filepath.Join(dir, "lan.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sim.emu"), []byte(emu), 0o644); err != nil {
		return nil, err
	}
	return []string{"ipmi_sim", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", filepath.Join(dir, "state"), "-n"}, nil
}
