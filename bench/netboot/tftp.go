package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// fetch reads file from a TFTP server (RFC 1350) asking for blksize and
// windowsize (RFC 2348, 7440); a server that ignores an option gets the
// transfer it offers instead. It returns the bytes and the window the
// server granted.
func fetch(server, file string, blksize, window int) ([]byte, int, error) {
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	dst, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return nil, 0, err
	}
	var rrq bytes.Buffer
	rrq.Write([]byte{0, 1})
	for _, s := range []string{file, "octet", "blksize", strconv.Itoa(blksize), "windowsize", strconv.Itoa(window), "tsize", "0"} {
		rrq.WriteString(s)
		rrq.WriteByte(0)
	}
	if _, err := conn.WriteToUDP(rrq.Bytes(), dst); err != nil {
		return nil, 0, err
	}
	bs, win := 512, 1 // until an OACK says otherwise
	var peer *net.UDPAddr
	var data []byte
	var last uint16 // last block received in order
	pending := 0    // blocks received since the last ACK
	buf := make([]byte, 65536)
	lastAck := []byte{0, 4, 0, 0}
	tries := 0
	// A send that fails is a packet lost: the read timeout sends again.
	send := func(b []byte, to *net.UDPAddr) { _, _ = conn.WriteToUDP(b, to) }
	for {
		if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return nil, 0, err
		}
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && tries < 5 {
				tries++
				if peer == nil {
					send(rrq.Bytes(), dst)
				} else {
					send(lastAck, peer)
				}
				continue
			}
			return nil, 0, fmt.Errorf("after block %d: %w", last, err)
		}
		tries = 0
		if peer == nil {
			peer = from
		} else if from.Port != peer.Port {
			continue
		}
		p := buf[:n]
		if len(p) < 4 {
			continue
		}
		switch binary.BigEndian.Uint16(p) {
		case 6: // OACK
			opts := bytes.Split(p[2:], []byte{0})
			for i := 0; i+1 < len(opts); i += 2 {
				v, _ := strconv.Atoi(string(opts[i+1]))
				switch string(bytes.ToLower(opts[i])) {
				case "blksize":
					bs = v
				case "windowsize":
					win = v
				}
			}
			send(lastAck, peer)
		case 3: // DATA
			block := binary.BigEndian.Uint16(p[2:])
			if block != last+1 {
				send(lastAck, peer) // out of order: ack what we have
				pending = 0
				continue
			}
			last = block
			data = append(data, p[4:]...)
			pending++
			end := len(p)-4 < bs
			if pending >= win || end {
				lastAck = []byte{0, 4, byte(last >> 8), byte(last)}
				send(lastAck, peer)
				pending = 0
			}
			if end {
				return data, win, nil
			}
		case 5:
			return nil, 0, fmt.Errorf("server error: %s", bytes.TrimRight(p[4:], "\x00"))
		}
	}
}
