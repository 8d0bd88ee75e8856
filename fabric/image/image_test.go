package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"

	"github.com/loomfabric/loom/fabric/api"
)

// sample builds an image: data at [4K,12K), [20K,24K), the tail block,
// zeros elsewhere.
func sample() []byte {
	img := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for _, span := range [][2]int{{4 << 10, 12 << 10}, {20 << 10, 24 << 10}, {60 << 10, 64 << 10}} {
		for i := span[0]; i < span[1]; i++ {
			img[i] = byte(r.IntN(255) + 1)
		}
	}
	return img
}

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestIngest(t *testing.T) {
	img := sample()
	wantRanges := []api.Range{
		{Offset: 4 << 10, Length: 8 << 10, SHA256: digest(img[4<<10 : 12<<10])},
		{Offset: 20 << 10, Length: 4 << 10, SHA256: digest(img[20<<10 : 24<<10])},
		{Offset: 60 << 10, Length: 4 << 10, SHA256: digest(img[60<<10:])},
	}
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(img)
	zw.Close()

	for _, tc := range []struct {
		name   string
		in     []byte
		format api.Format
	}{
		{"raw", img, api.FormatRaw},
		{"zstd", zbuf.Bytes(), api.FormatRawZstd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Blobs{Dir: t.TempDir()}
			m, err := b.Ingest(bytes.NewReader(tc.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantRanges, m.Ranges); diff != "" {
				t.Errorf("ranges (-want +got):\n%s", diff)
			}
			if m.Format != tc.format || m.Size != uint64(len(img)) || m.DataBytes != 16<<10 || m.Digest != digest(tc.in) {
				t.Errorf("manifest = %s %d data %d digest %s", m.Format, m.Size, m.DataBytes, m.Digest)
			}
			m.Name = "x"
			if err := m.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			m.Ranges[1].SHA256 = digest([]byte("tampered"))
			if err := m.Validate(); err == nil {
				t.Errorf("Validate accepted a tampered range digest")
			}
		})
	}
}

func TestIngestRejects(t *testing.T) {
	b := Blobs{Dir: t.TempDir()}
	if _, err := b.Ingest(bytes.NewReader(make([]byte, 4097)), nil); err == nil {
		t.Errorf("Ingest of a 4097-byte image succeeded; want not-a-disk-image error")
	}
	if _, err := b.Ingest(bytes.NewReader(append([]byte{0x28, 0xb5, 0x2f, 0xfd}, "garbage"...)), nil); err == nil {
		t.Errorf("Ingest of a corrupt zstd stream succeeded")
	}
}

func bmapFile(ranges string) string {
	return `<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> 65536 </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> 16 </BlocksCount>
    <MappedBlocksCount> 4 </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BlockMap>` + ranges + `
    </BlockMap>
</bmap>`
}

func TestBmap(t *testing.T) {
	img := sample()
	good := fmt.Sprintf(`<Range chksum="%s"> 1-2 </Range><Range chksum="%s"> 5 </Range><Range chksum="%s"> 15 </Range>`,
		digest(img[4<<10:12<<10]), digest(img[20<<10:24<<10]), digest(img[60<<10:]))
	size, ranges, err := ParseBmap(strings.NewReader(bmapFile(good)))
	if err != nil || size != 65536 || len(ranges) != 3 {
		t.Fatalf("ParseBmap = %d, %v, %v", size, ranges, err)
	}
	if _, err := (Blobs{Dir: t.TempDir()}).Ingest(bytes.NewReader(img), ranges); err != nil {
		t.Errorf("Ingest with a matching bmap: %v", err)
	}
	bad := strings.Replace(good, digest(img[20<<10:24<<10]), digest([]byte("x")), 1)
	_, ranges, _ = ParseBmap(strings.NewReader(bmapFile(bad)))
	if _, err := (Blobs{Dir: t.TempDir()}).Ingest(bytes.NewReader(img), ranges); err == nil || !strings.Contains(err.Error(), "bmap range 1") {
		t.Errorf("Ingest with a wrong bmap checksum = %v, want an error naming bmap range 1", err)
	}
	for name, doc := range map[string]string{
		"not xml":      "hello",
		"bad range":    bmapFile(`<Range> 9-3 </Range>`),
		"past the end": bmapFile(`<Range> 16-20 </Range>`),
		"overlap":      bmapFile(`<Range> 1-4 </Range><Range> 3 </Range>`),
	} {
		if _, _, err := ParseBmap(strings.NewReader(doc)); err == nil {
			t.Errorf("ParseBmap(%s) succeeded", name)
		}
	}
}
