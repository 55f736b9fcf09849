package harness

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Upstream is a stand-in server on loopback that records every request it
// receives and then serves it with its handler; it is stopped in t.Cleanup.
type Upstream struct {
	URL string // http://127.0.0.1:port

	mu   sync.Mutex
	reqs []Request
}

// Request is one request an Upstream received: recorded as it arrives,
// its body as the handler reads it.
type Request struct {
	Method string
	URI    string // the request target as sent (RequestURI)
	Header http.Header
	Body   []byte // what the handler read of the body
}

// Dump is the request as text: "METHOD URI", the headers in wire format,
// then the body read.
func (r Request) Dump() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s\n", r.Method, r.URI)
	r.Header.Write(&b)
	b.Write(r.Body)
	return b.String()
}

// StartUpstream serves h on a free loopback port, recording each request.
func StartUpstream(t testing.TB, h http.Handler) *Upstream {
	t.Helper()
	ln := Listen(t)
	u := &Upstream{URL: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, Request{Method: r.Method, URI: r.RequestURI, Header: r.Header.Clone()})
		i := len(u.reqs) - 1
		u.mu.Unlock()
		r.Body = &recordedBody{ReadCloser: r.Body, u: u, i: i}
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return u
}

// recordedBody adds what the handler reads to request i's record.
type recordedBody struct {
	io.ReadCloser
	u *Upstream
	i int
}

func (b *recordedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.u.mu.Lock()
		b.u.reqs[b.i].Body = append(b.u.reqs[b.i].Body, p[:n]...)
		b.u.mu.Unlock()
	}
	return n, err
}

// Requests returns a copy of the requests received so far, in order.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]Request, len(u.reqs))
	for i, r := range u.reqs {
		r.Body = bytes.Clone(r.Body)
		out[i] = r
	}
	return out
}

// Count is how many requests it has received.
func (u *Upstream) Count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// Log is the Dump of every request received so far, one after another.
func (u *Upstream) Log() string {
	var dumps []string
	for _, r := range u.Requests() {
		dumps = append(dumps, r.Dump())
	}
	return strings.Join(dumps, "\n")
}
