package image

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
)

// FuzzParseBmap: any .bmap gets ranges that are sorted, non-overlapping
// and inside the image, or an error.
func FuzzParseBmap(f *testing.F) {
	f.Add(bmapFile(`<Range chksum="ab"> 1-2 </Range><Range> 5 </Range>`))
	f.Add(bmapFile(`<Range> 15-15 </Range>`))
	f.Add("<bmap><ImageSize>1</ImageSize><BlockSize>4096</BlockSize><BlockMap><Range>0</Range></BlockMap></bmap>")
	f.Fuzz(func(t *testing.T, doc string) {
		size, ranges, err := ParseBmap(bytes.NewReader([]byte(doc)))
		if err != nil {
			return
		}
		var end uint64
		for i, r := range ranges {
			if r.Offset < end || r.Offset+r.Length > size || r.Length == 0 {
				t.Fatalf("range %d %+v: overlapping, empty or past size %d", i, r, size)
			}
			end = r.Offset + r.Length
		}
	})
}

// FuzzManifest: Validate never panics, and what it accepts is consistent.
func FuzzManifest(f *testing.F) {
	m := api.Manifest{Name: "x", Digest: digest([]byte("a")), Format: api.FormatRaw, Size: 8192, BlockSize: 4096,
		Ranges: []api.Range{{Offset: 4096, Length: 4096, SHA256: digest([]byte("b"))}}, DataBytes: 4096}
	m.MapDigest = m.ComputeMapDigest()
	b, _ := json.Marshal(m)
	f.Add(b)
	f.Add([]byte(`{"format":"raw","blockSize":3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m api.Manifest
		if json.Unmarshal(b, &m) != nil || m.Validate() != nil {
			return
		}
		if m.SumRanges() != m.DataBytes || m.ComputeMapDigest() != m.MapDigest {
			t.Fatalf("Validate accepted an inconsistent manifest %+v", m)
		}
	})
}
