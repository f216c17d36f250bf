package client

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// relay copies between a proxy client connection and a tunnel connection in
// both directions until both directions are done. An EOF in one direction is
// passed on as a half-close; an error in either direction closes both.
func (t *Tunnel) relay(local, remote net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(remote, local, &t.stats.bytesOut, local, remote)
	}()
	pipe(local, remote, &t.stats.bytesIn, local, remote)
	wg.Wait()
}

func pipe(dst, src net.Conn, count *atomic.Uint64, a, b net.Conn) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				a.Close()
				b.Close()
				return
			}
			count.Add(uint64(n))
		}
		if rerr != nil {
			if rerr == io.EOF {
				if closeWrite(dst) == nil {
					return
				}
			}
			a.Close()
			b.Close()
			return
		}
	}
}

// closeWrite half-closes c, or reports that it cannot.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// lingerClose closes c after sending what was written, draining (a bounded
// amount of) unread input first: closing a TCP socket with unread input
// sends a reset, which can destroy an error reply before the client reads it.
func lingerClose(c net.Conn) {
	if closeWrite(c) == nil {
		_ = c.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, c, 64<<10)
	}
	c.Close()
}

// Reply codes shared by the SOCKS5 and HTTP front ends.
const (
	repSucceeded        = 0x00
	repGeneralFailure   = 0x01
	repNotAllowed       = 0x02
	repNetUnreachable   = 0x03
	repHostUnreachable  = 0x04
	repConnRefused      = 0x05
	repTTLExpired       = 0x06
	repCmdNotSupported  = 0x07
	repAddrNotSupported = 0x08
)

// dialFailure classifies a dial error as a SOCKS5 reply code and a short,
// destination-free description for humans and logs.
func dialFailure(err error) (rep byte, why string) {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return repConnRefused, "connection refused"
	case errors.Is(err, syscall.ENETUNREACH):
		return repNetUnreachable, "network unreachable"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return repHostUnreachable, "host unreachable"
	case errors.As(err, &dnsErr):
		return repHostUnreachable, "name not resolved through the tunnel"
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return repHostUnreachable, "timed out"
	case errors.Is(err, net.ErrClosed), errors.Is(err, context.Canceled):
		return repGeneralFailure, "tunnel closing"
	}
	return repGeneralFailure, "connection failed"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
