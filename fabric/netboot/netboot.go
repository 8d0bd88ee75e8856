// Package netboot serves what a server's firmware needs to boot the
// maintenance OS over HTTP: a per-MAC iPXE script, the kernel and the
// initramfs. DHCP (package dhcp) points iPXE clients at the script.
//
// The script puts the fabric's URL, the enrollment token and the boot MAC
// on the kernel command line (loom.fabric=, loom.token=, loom.bootmac=),
// which is how the maintenance agent finds its way back. Firmware cannot
// authenticate, so these URLs are open to the netboot network: keep that
// network to the machines being booted.
package netboot

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/loomfabric/loom/fabric/api"
)

// Config says what to serve.
type Config struct {
	// BootDir holds the maintenance kernel and initramfs. Required.
	BootDir string
	// FirstStageDir holds the iPXE first stages (ipxe.efi, snponly.efi,
	// undionly.kpxe), served at /boot/NAME for UEFI HTTP boot. Default:
	// none served.
	FirstStageDir string
	// Kernel and Initramfs are file names in BootDir. Defaults "vmlinuz"
	// and "initramfs.cpio.xz".
	Kernel, Initramfs string
	// BaseURL is how booting machines reach this server, e.g.
	// "http://10.0.0.1:8080". Required.
	BaseURL string
	// FabricURLs is what the maintenance OS is told of the API
	// (loom.fabric=): every replica's URL, comma-separated, this one's
	// first. Default BaseURL.
	FabricURLs string
	// EnrollToken goes on the kernel command line. Required.
	EnrollToken string
	// KernelArgs are extra kernel arguments. Default
	// "console=tty0 console=ttyS0,115200 panic=-1".
	KernelArgs string
	// MAC normalises a MAC address or says why it is not one. Required.
	MAC func(string) (string, error)
	// Boot says what the machine with this MAC is to boot (default: the
	// maintenance OS, always):
	//   - api.BootMaintenance: the maintenance OS;
	//   - api.BootKexec: the maintenance OS with loom.boot=host, which acts
	//     as a boot loader and kexecs the host kernel on the disk;
	//   - api.BootLocal: nothing; iPXE exits to the firmware's next boot
	//     device (the disk's own boot loader);
	//   - api.BootCustom: the choice's kernel and initrd with its Args.
	Boot func(mac string) api.BootChoice
}

// Handler serves /boot/.
type Handler struct {
	cfg Config
	log *slog.Logger
}

var script = template.Must(template.New("ipxe").Parse(`#!ipxe
echo Loom: booting the maintenance OS on {{.MAC}}
kernel {{.Base}}/boot/vmlinuz initrd=initramfs loom.fabric={{.Fabric}} loom.token={{.Token}} loom.bootmac={{.MAC}} {{.Args}} || goto retry
initrd --name initramfs {{.Base}}/boot/initramfs || goto retry
boot || goto retry
:retry
echo Loom: boot failed, retrying in 5 seconds
sleep 5
chain {{.Base}}/boot/{{.MAC}}.ipxe
`))

var localScript = template.Must(template.New("local").Parse(`#!ipxe
echo Loom: {{.MAC}} boots from its disk
exit
`))

var customScript = template.Must(template.New("custom").Parse(`#!ipxe
echo Loom: booting {{.Kernel}} on {{.MAC}}
kernel {{.Kernel}}{{if .Initrd}} initrd=initrd{{end}} {{.Args}} || goto retry
{{if .Initrd}}initrd --name initrd {{.Initrd}} || goto retry
{{end}}boot || goto retry
:retry
echo Loom: boot failed, retrying in 5 seconds
sleep 5
chain {{.Base}}/boot/{{.MAC}}.ipxe
`))

// New checks cfg and the boot files.
func New(cfg Config, log *slog.Logger) (*Handler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Kernel == "" {
		cfg.Kernel = "vmlinuz"
	}
	if cfg.Initramfs == "" {
		cfg.Initramfs = "initramfs.cpio.xz"
	}
	if cfg.KernelArgs == "" {
		cfg.KernelArgs = "console=tty0 console=ttyS0,115200 panic=-1"
	}
	if cfg.BaseURL == "" || cfg.EnrollToken == "" || cfg.MAC == nil {
		return nil, errors.New("netboot: BaseURL, EnrollToken and MAC are required")
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	for _, f := range []string{cfg.Kernel, cfg.Initramfs} {
		p := filepath.Join(cfg.BootDir, f)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("netboot: boot file: %w (run 'make initramfs')", err)
		}
	}
	return &Handler{cfg: cfg, log: log}, nil
}

// FirstStageURL is the base URL of the first stages: UEFI HTTP boot
// clients get FirstStageURL()+"/ipxe.efi".
func (h *Handler) FirstStageURL() string { return h.cfg.BaseURL + "/boot" }

// firstStages are the files served from FirstStageDir.
var firstStages = map[string]bool{"ipxe.efi": true, "snponly.efi": true, "undionly.kpxe": true}

// ScriptURL is the iPXE script URL for a MAC (what DHCP hands out).
func (h *Handler) ScriptURL(mac string) string { return h.cfg.BaseURL + "/boot/" + mac + ".ipxe" }

// ServeHTTP serves GET /boot/{file}.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	switch {
	case name == "vmlinuz":
		h.file(w, r, h.cfg.Kernel)
	case name == "initramfs":
		h.file(w, r, h.cfg.Initramfs)
	case firstStages[name] && h.cfg.FirstStageDir != "":
		h.log.Info("netboot: serving the first stage over HTTP", "file", name, "to", r.RemoteAddr)
		http.ServeFile(w, r, filepath.Join(h.cfg.FirstStageDir, name))
	case strings.HasSuffix(name, ".ipxe"):
		mac, err := h.cfg.MAC(strings.TrimSuffix(name, ".ipxe"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		choice := api.BootChoice{Kind: api.BootMaintenance}
		if h.cfg.Boot != nil {
			choice = h.cfg.Boot(mac)
		}
		h.log.Info("netboot: iPXE script", "mac", mac, "from", r.RemoteAddr, "boot", choice.Kind)
		w.Header().Set("Content-Type", "text/plain")
		vars := map[string]string{"MAC": mac, "Base": h.cfg.BaseURL, "Fabric": cmp.Or(h.cfg.FabricURLs, h.cfg.BaseURL), "Token": h.cfg.EnrollToken, "Args": h.cfg.KernelArgs}
		t := script
		switch choice.Kind {
		case api.BootKexec:
			vars["Args"] += " loom.boot=host"
		case api.BootLocal:
			t = localScript
		case api.BootCustom:
			t = customScript
			vars["Kernel"], vars["Initrd"], vars["Args"] = choice.Kernel, choice.Initrd, choice.Args
		}
		if err := t.Execute(w, vars); err != nil {
			h.log.Warn("netboot: writing script", "err", err)
		}
	default:
		http.NotFound(w, r)
	}
}

func (h *Handler) file(w http.ResponseWriter, r *http.Request, name string) {
	h.log.Info("netboot: serving", "file", name, "to", r.RemoteAddr)
	http.ServeFile(w, r, filepath.Join(h.cfg.BootDir, name))
}
