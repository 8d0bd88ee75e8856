package channel

import (
	"io"
	"net"
)

// Pipe copies both ways between a and b until both directions are done.
// When one direction ends (EOF or error) its writer is half-closed
// (CloseWrite where the connection has it, Close otherwise), as the peer's
// close would be: the other direction is left to finish on its own.
func Pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // ends the direction either way
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
