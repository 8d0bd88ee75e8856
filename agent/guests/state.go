package guests

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/loomfabric/loom/agent/atomicfile"
)

// stateFile is where a guest's persisted state lives, in its directory.
const stateFile = "state.json"

// persisted is what of a guest outlives its host agent: a restarted agent
// adopts the guest and reports the same counters, reopens the same
// ingress port and can say why QEMU went away.
type persisted struct {
	// Restarts is how many times the guest was restarted after a crash.
	Restarts int `json:"restarts"`
	// Rebooted is the reboot generation last carried out.
	Rebooted int64 `json:"rebooted"`
	// IngressPort is the host port of a web role's ingress (0: none yet).
	IngressPort int `json:"ingressPort,omitempty"`
	// LastEvent is QEMU's last SHUTDOWN, RESET, STOP or GUEST_PANICKED.
	LastEvent string `json:"lastEvent,omitempty"`
	// Boot is how the guest last started (api.VMStatus.Boot).
	Boot string `json:"boot,omitempty"`
}

// loadState reads dir's persisted state. A guest without one (new, or
// left by a host agent that kept one file per counter) starts from what
// those files say, or from zero.
func loadState(dir string) (persisted, error) {
	var st persisted
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &st); err != nil {
			return persisted{}, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
		}
		return st, nil
	case !errors.Is(err, os.ErrNotExist):
		return persisted{}, err
	}
	legacy := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}
	st.Restarts, _ = strconv.Atoi(legacy("restarts"))
	st.Rebooted, _ = strconv.ParseInt(legacy("rebooted"), 10, 64)
	st.IngressPort, _ = strconv.Atoi(legacy("ingress.port"))
	st.LastEvent = legacy("last-event")
	return st, nil
}

// save writes st into dir atomically: a temporary file, fsynced, renamed
// over the old one, and the directory fsynced, so that a crash leaves
// either the old state or the new one, never a torn file.
func (st persisted) save(dir string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("saving guest state: %w", err)
	}
	return nil
}
