package proxy

import (
	"net"
	"net/netip"
	"sync"
)

// perClientListener bounds the open connections of each client address (an
// IPv4 address or an IPv6 /64), so that one client cannot hold every slot of
// the listener with idle or slow connections. A connection over the bound is
// closed as soon as it is accepted.
type perClientListener struct {
	net.Listener
	max int

	mu   sync.Mutex
	open map[netip.Prefix]int
}

func limitPerClient(ln net.Listener, max int) net.Listener {
	if max <= 0 {
		return ln
	}
	return &perClientListener{Listener: ln, max: max, open: map[netip.Prefix]int{}}
}

func (l *perClientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		key := clientKey(host)
		l.mu.Lock()
		if l.open[key] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[key]++
		l.mu.Unlock()
		return &clientConn{Conn: c, release: func() { l.release(key) }}, nil
	}
}

func (l *perClientListener) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

// clientConn gives its slot back once, however often it is closed.
type clientConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *clientConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
