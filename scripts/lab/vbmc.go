package lab

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// VirtualBMC is a Redfish BMC for one lab server, backed by its QEMU's QMP
// socket, so that loomd powers lab servers exactly as real ones:
//   - power off stops the machine (QMP stop): it stays off, its console
//     silent, until powered on;
//   - power on and power cycle reset it (QMP system_reset) and let it run;
//   - a boot override is recorded and reported. Lab servers boot from the
//     network first anyway (their NIC has bootindex 1), so PXE-once holds.
//
// It serves the Redfish service root without authentication (as the
// standard says) and everything else with HTTP basic authentication.
type VirtualBMC struct {
	QMP                string // the server's QMP socket
	Name               string // the system's name
	Username, Password string
	Log                *slog.Logger

	mu       sync.Mutex
	off      bool
	override string // "Pxe" while a one-time override is pending, else "None"
}

const (
	vbmcRoot   = "/redfish/v1/"
	vbmcSystem = "/redfish/v1/Systems/1"
)

// ServeHTTP serves the Redfish API.
func (b *VirtualBMC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == vbmcRoot || r.URL.Path == "/redfish/v1" {
		vbmcJSON(w, http.StatusOK, map[string]any{
			"@odata.id": vbmcRoot, "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "Id": "RootService",
			"Name": "Loom lab BMC", "RedfishVersion": "1.6.0", "Systems": map[string]string{"@odata.id": "/redfish/v1/Systems"},
		})
		return
	}
	u, p, ok := r.BasicAuth()
	if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(b.Username)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(b.Password)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="lab BMC"`)
		vbmcError(w, http.StatusUnauthorized, "Base.1.0.InsufficientPrivilege", "wrong user name or password")
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1/Systems":
		vbmcJSON(w, http.StatusOK, map[string]any{
			"@odata.id": "/redfish/v1/Systems", "Name": "Systems", "Members@odata.count": 1,
			"Members": []map[string]string{{"@odata.id": vbmcSystem}},
		})
	case r.Method == http.MethodGet && r.URL.Path == vbmcSystem:
		state, err := b.powerState()
		if err != nil {
			vbmcError(w, http.StatusServiceUnavailable, "Base.1.0.GeneralError", err.Error())
			return
		}
		b.mu.Lock()
		override := b.override
		b.mu.Unlock()
		enabled := "Disabled"
		if override != "None" {
			enabled = "Once"
		}
		vbmcJSON(w, http.StatusOK, map[string]any{
			"@odata.id": vbmcSystem, "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem", "Id": "1", "Name": b.Name,
			"PowerState": state,
			"Boot":       map[string]any{"BootSourceOverrideEnabled": enabled, "BootSourceOverrideTarget": override},
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target":                            vbmcSystem + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": []string{"On", "ForceOff", "ForceRestart", "PowerCycle"},
			}},
		})
	case r.Method == http.MethodPatch && r.URL.Path == vbmcSystem:
		var body struct {
			Boot struct{ BootSourceOverrideEnabled, BootSourceOverrideTarget string }
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
			vbmcError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", err.Error())
			return
		}
		b.mu.Lock()
		switch bo := body.Boot; {
		case bo.BootSourceOverrideEnabled == "Disabled" || bo.BootSourceOverrideTarget == "None":
			b.override = "None"
		case bo.BootSourceOverrideTarget == "Pxe":
			b.override = "Pxe"
		default:
			b.mu.Unlock()
			vbmcError(w, http.StatusBadRequest, "Base.1.0.PropertyValueNotInList", fmt.Sprintf("boot override %q: this BMC does Pxe only", bo.BootSourceOverrideTarget))
			return
		}
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == vbmcSystem+"/Actions/ComputerSystem.Reset":
		var body struct{ ResetType string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
			vbmcError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", err.Error())
			return
		}
		if err := b.reset(body.ResetType); err != nil {
			vbmcError(w, http.StatusBadRequest, "Base.1.0.ActionParameterNotSupported", err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		vbmcError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", r.Method+" "+r.URL.Path)
	}
}

// reset carries out a Redfish reset type over QMP.
func (b *VirtualBMC) reset(kind string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var cmds []string
	switch kind {
	case "On", "ForceOn":
		// Off is either stopped by this BMC or never started (QEMU -S).
		if state, err := b.powerState(); err != nil {
			return err
		} else if state == "On" {
			return nil
		}
		cmds = []string{"system_reset", "cont"}
	case "ForceOff":
		cmds = []string{"stop"}
	case "ForceRestart", "PowerCycle":
		cmds = []string{"system_reset", "cont"}
	default:
		return fmt.Errorf("reset type %q: want On, ForceOff, ForceRestart or PowerCycle", kind)
	}
	if err := b.qmp(cmds...); err != nil {
		return err
	}
	b.off = kind == "ForceOff"
	if !b.off {
		b.override = "None" // the one-time override is used by this start
	}
	if b.Log != nil {
		b.Log.Info("lab BMC: reset", "server", b.Name, "type", kind)
	}
	return nil
}

// powerState is "On" or "Off".
func (b *VirtualBMC) powerState() (string, error) {
	out, err := b.qmpOut("query-status")
	if err != nil {
		return "", err
	}
	var st struct {
		Return struct {
			Running bool   `json:"running"`
			Status  string `json:"status"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("query-status: %w", err)
	}
	if st.Return.Running {
		return "On", nil
	}
	return "Off", nil
}

func (b *VirtualBMC) qmp(cmds ...string) error {
	_, err := b.qmpOut(cmds...)
	return err
}

// qmpOut runs commands on a fresh QMP connection and returns the last
// one's answer.
func (b *VirtualBMC) qmpOut(cmds ...string) ([]byte, error) {
	mon, err := qmp.NewSocketMonitor("unix", b.QMP, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", b.QMP, err)
	}
	if err := mon.Connect(); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", b.QMP, err)
	}
	defer func() { _ = mon.Disconnect() }() // the commands' answers are in
	var out []byte
	for _, c := range cmds {
		if out, err = mon.Run([]byte(`{"execute":"` + c + `"}`)); err != nil {
			return nil, fmt.Errorf("QMP %s: %w", c, err)
		}
	}
	return out, nil
}

func vbmcJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // a client that went away: nobody to tell
}

func vbmcError(w http.ResponseWriter, code int, id, msg string) {
	vbmcJSON(w, code, map[string]any{"error": map[string]any{"code": id, "message": msg}})
}
