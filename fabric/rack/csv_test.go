package rack

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
)

func TestParse(t *testing.T) {
	in := `# rack r7, delivered 2026-11-20
MAC, Rack, Slot, Profile, BMC_Address, Credential
52:54:00:00:00:01, r7, u1, host, https://10.0.7.11, r7-bmc
52-54-00-00-00-02, r7, u2, host, 10.0.7.12:8443, r7-bmc

52:54:00:00:00:03, r7, u3, , ,
`
	got, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []api.RackEntry{
		{Line: 3, MAC: "52:54:00:00:00:01", Rack: "r7", Slot: "u1", Profile: "host", BMC: &api.BMC{Protocol: "redfish", Address: "https://10.0.7.11", Credential: "r7-bmc"}},
		{Line: 4, MAC: "52:54:00:00:00:02", Rack: "r7", Slot: "u2", Profile: "host", BMC: &api.BMC{Protocol: "redfish", Address: "10.0.7.12:8443", Credential: "r7-bmc"}},
		{Line: 6, MAC: "52:54:00:00:00:03", Rack: "r7", Slot: "u3"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Parse (-want +got):\n%s", d)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // each must appear in the error
	}{
		{"empty", "", []string{"empty"}},
		{"header only", "mac,rack\n", []string{"no servers"}},
		{"unknown column", "mac,rack,colour\n52:54:00:00:00:01,r1,red\n", []string{`line 1, column 3 "colour": unknown column`}},
		{"column twice", "mac,rack,MAC\n", []string{`line 1, column 3 "MAC": named twice`}},
		{"no rack column", "mac,slot\n52:54:00:00:00:01,1\n", []string{`no "rack" column`}},
		{"bad mac", "mac,rack\n52:54:00:00:00:01,r1\nzz:54:00:00:00:02,r1\n", []string{`line 3, field mac: "zz:54:00:00:00:02" is not a MAC`}},
		{"eui64 mac", "mac,rack\n02:00:00:00:00:00:00:01,r1\n", []string{"line 2, field mac"}},
		{"duplicate mac", "mac,rack\n52:54:00:00:00:01,r1\n52:54:00:00:00:01,r1\n", []string{"line 3, field mac: 52:54:00:00:00:01 is on line 2 already"}},
		{"duplicate slot", "mac,rack,slot\n52:54:00:00:00:01,r1,u1\n52:54:00:00:00:02,r1,u1\n", []string{"line 3, field slot: rack r1 slot u1 is on line 2 already"}},
		{"bad rack", "mac,rack\n52:54:00:00:00:01,Rack 1\n", []string{`line 2, field rack: "Rack 1"`}},
		{"bmc without credential", "mac,rack,bmc_address\n52:54:00:00:00:01,r1,10.0.0.1\n", []string{"line 2, field credential: required"}},
		{"credential without bmc", "mac,rack,credential\n52:54:00:00:00:01,r1,c\n", []string{"line 2, field credential: \"c\" given without a bmc_address"}},
		{"bad protocol", "mac,rack,bmc_address,bmc_protocol,credential\n52:54:00:00:00:01,r1,10.0.0.1,snmp,c\n", []string{`line 2, field bmc_protocol: "snmp"`}},
		{"bad insecure", "mac,rack,bmc_address,credential,bmc_insecure\n52:54:00:00:00:01,r1,10.0.0.1,c,maybe\n", []string{`line 2, field bmc_insecure: "maybe"`}},
		{"field count", "mac,rack\n52:54:00:00:00:01,r1,extra\n", []string{"line 2: wrong number of fields"}},
		{"bad quote", "mac,rack\n\"52:54:00:00:00:01,r1\n", []string{"line 2"}},
		{"several", "mac,rack\nxx,r1\n52:54:00:00:00:02,R!\n", []string{"2 problems", "line 2, field mac", "line 3, field rack"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", got)
			}
			if got != nil {
				t.Errorf("Parse returned entries with an error: %+v", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseTooMany(t *testing.T) {
	var b strings.Builder
	b.WriteString("mac,rack\n")
	for i := 0; i <= MaxEntries; i++ {
		fmt.Fprintf(&b, "52:54:00:00:%02x:%02x,r1\n", i>>8, i&0xff)
	}
	if _, err := Parse(strings.NewReader(b.String())); err == nil || !strings.Contains(err.Error(), "more than 512") {
		t.Errorf("err = %v, want too many servers", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("mac,rack,slot\n52:54:00:00:00:01,r1,u1\n")
	f.Add("mac,rack,bmc_address,credential\n52:54:00:00:00:01,r1,http://x,c\n")
	f.Add("\"")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Parse(strings.NewReader(in))
		if err != nil && got != nil {
			t.Fatal("entries with an error")
		}
		for _, e := range got {
			if e.MAC == "" || !api.ValidName(e.Rack) {
				t.Fatalf("accepted %+v", e)
			}
		}
	})
}
