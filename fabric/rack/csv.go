// Package rack reads rack manifests: the CSV an operator gets with a new
// rack (one line per server) and imports with `loom rack import`.
//
// The first line names the columns, in any order, case-insensitively:
//
//	mac            the boot MAC (required)
//	rack           the rack's name (required; a-z 0-9 . _ -)
//	slot           where in the rack (free text, unique within the rack)
//	profile        the profile to image it with
//	bmc_address    its BMC: a URL or host[:port]
//	bmc_protocol   redfish (the default when bmc_address is set) or ipmi
//	credential     the stored BMC credential to log in with (loom credential set)
//	bmc_insecure   true to skip the BMC's TLS certificate check
//
// Lines starting with # and blank lines are skipped. Parse checks
// everything it can without the store and reports every wrong line and
// field, up to MaxErrors of them.
package rack

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/loomfabric/loom/fabric/api"
)

// MaxEntries bounds one import (it is one store transaction).
const MaxEntries = 512

// MaxErrors bounds how many problems one Parse reports.
const MaxErrors = 20

// Columns are the columns a rack CSV may have.
var Columns = []string{"mac", "rack", "slot", "profile", "bmc_address", "bmc_protocol", "credential", "bmc_insecure"}

// Errors is the list of a file's problems, each naming its line and field.
type Errors []string

func (e Errors) Error() string {
	if len(e) == 1 {
		return e[0]
	}
	return fmt.Sprintf("%d problems:\n  %s", len(e), strings.Join(e, "\n  "))
}

// Parse reads a rack CSV. On any problem it returns Errors and no entries.
func Parse(r io.Reader) ([]api.RackEntry, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = false
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, Errors{"the file is empty: want a header line naming the columns (" + strings.Join(Columns, ",") + ")"}
	}
	if err != nil {
		return nil, Errors{csvError(err)}
	}
	var errs Errors
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		line, _ := cr.FieldPos(i)
		switch {
		case !known(name):
			errs = append(errs, fmt.Sprintf("line %d, column %d %q: unknown column (want some of %s)", line, i+1, h, strings.Join(Columns, ", ")))
		case col[name] != 0:
			errs = append(errs, fmt.Sprintf("line %d, column %d %q: named twice", line, i+1, h))
		default:
			col[name] = i + 1 // 0 means absent
		}
	}
	for _, req := range []string{"mac", "rack"} {
		if col[req] == 0 {
			errs = append(errs, fmt.Sprintf("line 1: no %q column (it is required)", req))
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}

	var out []api.RackEntry
	macLine := map[string]int{}  // MAC → line first seen
	slotLine := map[string]int{} // rack/slot → line first seen
	for len(errs) < MaxErrors {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, csvError(err))
			continue
		}
		line, _ := cr.FieldPos(0)
		field := func(name string) string {
			if i := col[name]; i > 0 {
				return strings.TrimSpace(rec[i-1])
			}
			return ""
		}
		bad := func(name, format string, args ...any) {
			errs = append(errs, fmt.Sprintf("line %d, field %s: %s", line, name, fmt.Sprintf(format, args...)))
		}
		e := api.RackEntry{Line: line, Rack: field("rack"), Slot: field("slot"), Profile: field("profile")}
		if hw, err := net.ParseMAC(field("mac")); err != nil || len(hw) != 6 {
			bad("mac", "%q is not a MAC address (want e.g. 52:54:00:12:34:56)", field("mac"))
		} else {
			e.MAC = hw.String()
			if first, dup := macLine[e.MAC]; dup {
				bad("mac", "%s is on line %d already", e.MAC, first)
			} else {
				macLine[e.MAC] = line
			}
		}
		if !api.ValidName(e.Rack) {
			bad("rack", "%q: want 1-63 of a-z 0-9 . _ -", e.Rack)
		}
		if len(e.Slot) > 32 || strings.ContainsFunc(e.Slot, func(r rune) bool { return r < ' ' }) {
			bad("slot", "%q: want at most 32 printable characters", e.Slot)
		} else if e.Slot != "" {
			key := e.Rack + "/" + e.Slot
			if first, dup := slotLine[key]; dup {
				bad("slot", "rack %s slot %s is on line %d already", e.Rack, e.Slot, first)
			} else {
				slotLine[key] = line
			}
		}
		if e.Profile != "" && !api.ValidName(e.Profile) {
			bad("profile", "%q: want 1-63 of a-z 0-9 . _ -", e.Profile)
		}
		addr, proto, cred, insecure := field("bmc_address"), field("bmc_protocol"), field("credential"), field("bmc_insecure")
		if addr == "" {
			for name, v := range map[string]string{"bmc_protocol": proto, "credential": cred, "bmc_insecure": insecure} {
				if v != "" {
					bad(name, "%q given without a bmc_address", v)
				}
			}
		} else {
			b := &api.BMC{Protocol: strings.ToLower(proto), Address: addr, Credential: cred}
			b.Default()
			switch strings.ToLower(insecure) {
			case "", "false", "no", "0":
			case "true", "yes", "1":
				b.Insecure = true
			default:
				bad("bmc_insecure", "%q: want true or false", insecure)
			}
			if b.Protocol != api.BMCRedfish && b.Protocol != api.BMCIPMI {
				bad("bmc_protocol", "%q: want %s or %s", proto, api.BMCRedfish, api.BMCIPMI)
			}
			if strings.ContainsAny(addr, " \t") {
				bad("bmc_address", "%q: want a URL or host[:port]", addr)
			}
			if cred == "" {
				bad("credential", "required with a bmc_address (the name given to loom credential set)")
			} else if !api.ValidName(cred) {
				bad("credential", "%q: want 1-63 of a-z 0-9 . _ -", cred)
			}
			e.BMC = b
		}
		out = append(out, e)
		if len(out) > MaxEntries {
			return nil, Errors{fmt.Sprintf("line %d: more than %d servers in one file; split it", line, MaxEntries)}
		}
	}
	if len(errs) > 0 {
		if len(errs) >= MaxErrors {
			errs = append(errs, fmt.Sprintf("(stopped after %d problems)", MaxErrors))
		}
		return nil, errs
	}
	if len(out) == 0 {
		return nil, Errors{"no servers: the file has a header and nothing else"}
	}
	return out, nil
}

func known(col string) bool {
	for _, c := range Columns {
		if c == col {
			return true
		}
	}
	return false
}

// csvError words a csv.ParseError with its line and column.
func csvError(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			return fmt.Sprintf("line %d: wrong number of fields (the header names a different number)", pe.Line)
		}
		return fmt.Sprintf("line %d, column %d: %v", pe.Line, pe.Column, pe.Err)
	}
	return err.Error()
}
