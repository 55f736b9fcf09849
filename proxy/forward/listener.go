package forward

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

// handshakeTimeout bounds how long a CONNECT's client may take to begin
// and finish TLS.
const handshakeTimeout = 10 * time.Second

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// plainHTTPInTunnel answers a client that sent plain HTTP inside a CONNECT.
const plainHTTPInTunnel = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
	"Phantom's forward proxy speaks TLS inside CONNECT tunnels, and this client sent plain HTTP. " +
	"Send https:// URLs through HTTPS_PROXY, or use the reverse-proxy listener for http://.\n"

// Closed says why a tunnel closed before TLS was up: the status and reason
// its CONNECT's audit record gets (status 0: no answer could be sent), and
// the error, for the log.
type Closed struct {
	Status int
	Reason string
	Err    error
}

// Terminate terminates TLS on a CONNECT's hijacked connection, reading
// first what the server had buffered after the CONNECT, and returns the
// tunnel's TLS connection for Listener.Push; or closes it and says why: a
// client that sends plain HTTP gets a clear 400, one whose SNI names
// another host a failed handshake.
func Terminate(conn net.Conn, buffered *bufio.Reader, tun *Tunnel, ca *CA) (net.Conn, *Closed) {
	bc := &bufferedConn{Conn: conn, r: buffered}
	bc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	first, err := bc.r.Peek(1)
	if err != nil {
		bc.Close()
		return nil, &Closed{Err: err}
	}
	if first[0] != tlsRecordHandshake {
		bc.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(bc, plainHTTPInTunnel)
		bc.Close()
		return nil, &Closed{Status: http.StatusBadRequest, Reason: "plain_http_in_tunnel"}
	}
	tc := tls.Server(bc, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" && strings.ToLower(hello.ServerName) != tun.Origin.Host {
				return nil, fmt.Errorf("the TLS server name is not the CONNECT host")
			}
			return ca.Leaf(tun.Origin.Host)
		},
	})
	bc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return nil, &Closed{Reason: resolve.ReasonTLSHandshakeFailed, Err: err}
	}
	bc.SetDeadline(time.Time{})
	return &tunnelConn{Conn: tc, tunnel: tun}, nil
}

// bufferedConn reads first what the server had buffered after the CONNECT.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// tunnelConn is a tunnel's TLS connection, as the inner server accepts it.
type tunnelConn struct {
	net.Conn
	tunnel *Tunnel
}

// TunnelOf is the tunnel of a connection Terminate returned; nil for any
// other connection.
func TunnelOf(c net.Conn) *Tunnel {
	if tc, ok := c.(*tunnelConn); ok {
		return tc.tunnel
	}
	return nil
}

// Listener hands opened tunnels to the server that serves the requests
// inside them.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewListener is a Listener reporting addr (the forward listener's) as its
// address.
func NewListener(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next tunnel pushed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener; tunnels pushed later are closed.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the forward listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Push hands c over, or closes it once the listener is closed.
func (l *Listener) Push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}
