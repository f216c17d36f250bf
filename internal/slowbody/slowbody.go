// Package slowbody opens HTTP requests whose bodies trickle in, a byte at
// a time, the way a slow-body flood holds a server's connections. Tests
// and bench/slowbody use it against loopback servers only.
package slowbody

import (
	"fmt"
	"io"
	"net"
	"time"
)

// Conn is one slow request: its headers sent, its body trickling.
type Conn struct {
	c      net.Conn
	closed chan struct{}
}

// Open connects from the local address src (empty: any) to addr, sends a
// POST to path announcing a body of 1,000 bytes, and then sends one byte
// every interval, for at most maxTime, or until the server closes the
// connection.
func Open(src, addr, path string, every, maxTime time.Duration) (*Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", path); err != nil {
		c.Close()
		return nil, err
	}
	sb := &Conn{c: c, closed: make(chan struct{})}
	go func() { // the server's side: whatever it answers, until it closes
		defer close(sb.closed)
		c.SetReadDeadline(time.Now().Add(maxTime))
		io.Copy(io.Discard, c)
	}()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		stop := time.After(maxTime)
		for {
			select {
			case <-sb.closed:
				return
			case <-stop:
				return
			case <-t.C:
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	return sb, nil
}

// Closed is closed when the server has closed the connection (or maxTime
// has passed, or Close was called).
func (sb *Conn) Closed() <-chan struct{} { return sb.closed }

// Close ends the request from this side.
func (sb *Conn) Close() error { return sb.c.Close() }
