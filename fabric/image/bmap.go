package image

import (
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/loomfabric/loom/fabric/api"
)

type bmapXML struct {
	XMLName      xml.Name `xml:"bmap"`
	Version      string   `xml:"version,attr"`
	ImageSize    string   `xml:"ImageSize"`
	BlockSize    string   `xml:"BlockSize"`
	ChecksumType string   `xml:"ChecksumType"`
	Ranges       []struct {
		Chksum string `xml:"chksum,attr"`
		Text   string `xml:",chardata"`
	} `xml:"BlockMap>Range"`
}

// ParseBmap reads a bmaptool .bmap file (version 1.x or 2.x) and returns
// the image size and its data ranges in bytes. Checksums are kept only
// when they are sha256.
func ParseBmap(r io.Reader) (uint64, []api.Range, error) {
	var b bmapXML
	dec := xml.NewDecoder(io.LimitReader(r, 64<<20))
	if err := dec.Decode(&b); err != nil {
		return 0, nil, fmt.Errorf("bmap: line %d: %w", lineOf(dec), err)
	}
	size, err := strconv.ParseUint(strings.TrimSpace(b.ImageSize), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("bmap: ImageSize %q: %w", b.ImageSize, err)
	}
	bs, err := strconv.ParseUint(strings.TrimSpace(b.BlockSize), 10, 32)
	if err != nil || bs == 0 || bs%BlockSize != 0 {
		return 0, nil, fmt.Errorf("bmap: BlockSize %q: want a multiple of %d", b.BlockSize, BlockSize)
	}
	sha := strings.TrimSpace(b.ChecksumType) == "sha256"
	var out []api.Range
	var end uint64
	for i, rg := range b.Ranges {
		first, last, ok := strings.Cut(strings.TrimSpace(rg.Text), "-")
		if !ok {
			last = first
		}
		f, err1 := strconv.ParseUint(strings.TrimSpace(first), 10, 64)
		l, err2 := strconv.ParseUint(strings.TrimSpace(last), 10, 64)
		if err1 != nil || err2 != nil || l < f {
			return 0, nil, fmt.Errorf("bmap: Range %d %q: want FIRST-LAST block numbers", i, rg.Text)
		}
		r := api.Range{Offset: f * bs, Length: (l - f + 1) * bs}
		if r.Offset < end {
			return 0, nil, fmt.Errorf("bmap: Range %d %q overlaps or precedes the one before", i, rg.Text)
		}
		if r.Offset+r.Length > size {
			// The last block of an image whose size is not block-aligned.
			if r.Offset >= size {
				return 0, nil, fmt.Errorf("bmap: Range %d %q lies past ImageSize %d", i, rg.Text, size)
			}
			r.Length = size - r.Offset
		}
		if sha {
			r.SHA256 = strings.ToLower(strings.TrimSpace(rg.Chksum))
		}
		end = r.Offset + r.Length
		out = append(out, r)
	}
	return size, out, nil
}

func lineOf(d *xml.Decoder) int {
	line, _ := d.InputPos()
	return line
}
