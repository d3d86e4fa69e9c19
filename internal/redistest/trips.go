package redistest

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// TripCounter is a TCP proxy in front of a Redis that counts round trips:
// a client's request that follows the server's last answer on its
// connection (a command or a whole pipeline) is one.
type TripCounter struct {
	ln     net.Listener
	target string
	n      atomic.Int64
}

// CountTrips starts a TripCounter in front of target (host:port), closed
// when t ends.
func CountTrips(t testing.TB, target string) *TripCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &TripCounter{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			cl, err := ln.Accept()
			if err != nil {
				return
			}
			go c.pipe(cl)
		}
	}()
	return c
}

func (c *TripCounter) URL() string { return "redis://" + c.ln.Addr().String() }

func (c *TripCounter) pipe(cl net.Conn) {
	srv, err := net.Dial("tcp", c.target)
	if err != nil {
		cl.Close()
		return
	}
	var sent atomic.Bool // the client sent, and no answer came back yet
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := srv.Read(buf)
			if n > 0 {
				sent.Store(false)
				if _, err := cl.Write(buf[:n]); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		cl.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := cl.Read(buf)
		if n > 0 {
			if !sent.Swap(true) {
				c.n.Add(1)
			}
			if _, err := srv.Write(buf[:n]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	srv.Close()
}

// Trips runs f and returns the round trips it made.
func (c *TripCounter) Trips(f func()) int64 {
	c.n.Store(0)
	f()
	return c.n.Load()
}

// DropFirstAnswer starts a TCP proxy in front of target (host:port) that
// forwards everything, except that it closes the first connection on which
// the server answers, instead of forwarding that answer: the server did
// the work, the client never hears of it (a connection lost at the worst
// moment). It returns the proxy's redis:// URL.
func DropFirstAnswer(t testing.TB, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var dropped atomic.Bool
	go func() {
		for {
			cl, err := ln.Accept()
			if err != nil {
				return
			}
			srv, err := net.Dial("tcp", target)
			if err != nil {
				cl.Close()
				continue
			}
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := srv.Read(buf)
					if n > 0 {
						if !dropped.Load() && isAnswerToDrop(buf[:n]) && dropped.CompareAndSwap(false, true) {
							break
						}
						if _, err := cl.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				cl.Close()
				srv.Close()
			}()
			go func() {
				_, _ = io.Copy(srv, cl)
				srv.Close()
			}()
		}
	}()
	return "redis://" + ln.Addr().String()
}

// isAnswerToDrop: a script's answer (an array), not the connection's
// handshake (HELLO's map, or +OK) or a PING's.
func isAnswerToDrop(b []byte) bool { return len(b) > 0 && b[0] == '*' }
