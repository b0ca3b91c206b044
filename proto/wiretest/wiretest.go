// Package wiretest records what crosses a gRPC connection and counts its
// HTTP/2 frames, for tests of the connection's settings on both sides.
package wiretest

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
)

// Conn wraps a connection and keeps every byte read from it: what the
// other side sent.
type Conn struct {
	net.Conn
	mu   sync.Mutex
	data []byte
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.data = append(c.data, p[:n]...)
	c.mu.Unlock()
	return n, err
}

// Recorded returns a copy of what was read so far.
func (c *Conn) Recorded() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.data...)
}

// Listener wraps a listener whose connections are Conns.
type Listener struct {
	net.Listener
	mu    sync.Mutex
	conns []*Conn
}

func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &Conn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, rc)
	l.mu.Unlock()
	return rc, nil
}

// Conns returns the connections accepted so far.
func (l *Listener) Conns() []*Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Conn(nil), l.conns...)
}

// Frames counts the HTTP/2 frames in b, one side of one connection from
// its start (fromClient: the client's, which opens with the preface), and
// among them the PINGs that are not answers to a PING. A frame cut short
// at the end is not counted.
func Frames(b []byte, fromClient bool) (frames, pings int, err error) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	if fromClient {
		if len(b) < len(preface) || string(b[:len(preface)]) != preface {
			return 0, 0, fmt.Errorf("no HTTP/2 client preface in %d bytes", len(b))
		}
		b = b[len(preface):]
	}
	const typePing, flagAck = 0x6, 0x1
	for len(b) >= 9 {
		size := int(b[0])<<16 | int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < 9+size {
			break
		}
		if b[3] == typePing && b[4]&flagAck == 0 {
			pings++
		}
		frames++
		b = b[9+size:]
	}
	return frames, pings, nil
}
