// Package netboot serves what a server's firmware needs to boot the
// maintenance OS over HTTP: a per-MAC iPXE script, the kernel and the
// initramfs. DHCP (package dhcp) points iPXE clients at the script.
//
// The script puts the fabric's URLs and the boot MAC on the kernel command
// line (loom.fabric=, loom.bootmac=); the fabric's CA certificate and the
// enrollment token travel in a cpio segment appended to the initramfs
// served (package seed), which is how the maintenance agent finds its way
// back and checks it is talking to its fabric. Firmware cannot
// authenticate, so these URLs are open to the netboot network: keep that
// network to the machines being booted.
package netboot

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/loomfabric/loom/agent/seed"
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
	// EnrollToken and CA (PEM) go in the seed appended to the initramfs.
	// Required.
	EnrollToken string
	CA          []byte
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
	cfg  Config
	log  *slog.Logger
	seed []byte // the segment appended to the initramfs
}

var script = template.Must(template.New("ipxe").Parse(`#!ipxe
echo Loom: booting the maintenance OS on {{.MAC}}
kernel {{.Base}}/boot/vmlinuz initrd=initramfs loom.fabric={{.Fabric}} loom.bootmac={{.MAC}} {{.Args}} || goto retry
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
	if cfg.BaseURL == "" || cfg.MAC == nil {
		return nil, errors.New("netboot: BaseURL and MAC are required")
	}
	// Machines' clocks are set no earlier than now (the replica's
	// certificate was made a moment ago).
	seg, err := seed.Seed{CA: cfg.CA, Token: cfg.EnrollToken, NotBefore: time.Now()}.Segment()
	if err != nil {
		return nil, fmt.Errorf("netboot: %w", err)
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	for _, f := range []string{cfg.Kernel, cfg.Initramfs} {
		p := filepath.Join(cfg.BootDir, f)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("netboot: boot file: %w (run 'make initramfs')", err)
		}
	}
	return &Handler{cfg: cfg, log: log, seed: seg}, nil
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
		h.initramfs(w, r)
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
		vars := map[string]string{"MAC": mac, "Base": h.cfg.BaseURL, "Fabric": cmp.Or(h.cfg.FabricURLs, h.cfg.BaseURL), "Args": h.cfg.KernelArgs}
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

// initramfs serves the initramfs with the seed appended (ranges work).
func (h *Handler) initramfs(w http.ResponseWriter, r *http.Request) {
	f, err := os.Open(filepath.Join(h.cfg.BootDir, h.cfg.Initramfs))
	if err != nil {
		h.log.Error("netboot: initramfs", "err", err)
		http.Error(w, "initramfs unavailable", http.StatusInternalServerError)
		return
	}
	defer func() { _ = f.Close() }() // read only
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "initramfs unavailable", http.StatusInternalServerError)
		return
	}
	tail := append(make([]byte, seed.Pad(fi.Size())), h.seed...)
	h.log.Info("netboot: serving", "file", h.cfg.Initramfs, "seed", len(tail), "to", r.RemoteAddr)
	all := &joined{head: f, size: fi.Size(), tail: tail}
	http.ServeContent(w, r, "initramfs", fi.ModTime(), io.NewSectionReader(all, 0, fi.Size()+int64(len(tail))))
}

// joined is a file of size bytes followed by tail, for ReadAt.
type joined struct {
	head io.ReaderAt
	size int64
	tail []byte
}

func (j *joined) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < j.size {
		m, err := j.head.ReadAt(p[:min(int64(len(p)), j.size-off)], off)
		n += m
		if err != nil && !(errors.Is(err, io.EOF) && off+int64(m) == j.size) {
			return n, err
		}
		off += int64(m)
	}
	if n < len(p) {
		t := off - j.size
		if t >= int64(len(j.tail)) {
			return n, io.EOF
		}
		n += copy(p[n:], j.tail[t:])
		if n < len(p) {
			return n, io.EOF
		}
	}
	return n, nil
}
