package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/metering"
)

// Reading a body that a limit of its token applies to (applyLimits): into
// memory the proxy reserves first, once, at about the body's own size, and
// checked in place (metering.CheckBody). Bounds: each body
// (Config.MaxLimitedBodyBytes, then 413) and all of them held at once
// (Config.LimitedBodyMemory, then 503), so that many large bodies cannot
// grow the proxy without bound.

// bodyMemory bounds the limited request bodies held in memory: each, all
// of them, and those of one client address (clientKey), so that a client
// dripping large bodies slowly holds a quarter of the memory at most, not
// all of it. (Behind a load balancer every agent has its address: then
// perClient is 0, no share.)
type bodyMemory struct {
	perRequest int64
	total      *semaphore.Weighted

	perClient int64
	mu        sync.Mutex
	byClient  map[netip.Prefix]int64
}

func newBodyMemory(perRequest, total int64, shared bool) *bodyMemory {
	m := &bodyMemory{perRequest: perRequest, total: semaphore.NewWeighted(total + metering.EditRoom), byClient: map[netip.Prefix]int64{}}
	if !shared {
		m.perClient = max(total/4, perRequest) + metering.EditRoom
	}
	return m
}

// acquire reserves n bytes for client, or reports that the client's share
// or the whole bound is used up.
func (m *bodyMemory) acquire(client netip.Prefix, n int64) bool {
	if m.perClient > 0 {
		m.mu.Lock()
		if m.byClient[client]+n > m.perClient {
			m.mu.Unlock()
			return false
		}
		m.byClient[client] += n
		m.mu.Unlock()
	}
	if m.total.TryAcquire(n) {
		return true
	}
	m.releaseClient(client, n)
	return false
}

func (m *bodyMemory) release(client netip.Prefix, n int64) {
	m.total.Release(n)
	m.releaseClient(client, n)
}

func (m *bodyMemory) releaseClient(client netip.Prefix, n int64) {
	if m.perClient == 0 {
		return
	}
	m.mu.Lock()
	if m.byClient[client] -= n; m.byClient[client] <= 0 {
		delete(m.byClient, client)
	}
	m.mu.Unlock()
}

// heldBody is a limited body read into memory: it counts against the
// proxy's bound until the transport has read it all or the exchange ends,
// whichever comes first, and drops its bytes then.
type heldBody struct {
	mu       sync.Mutex
	r        *bytes.Reader // nil once released
	eof      bool          // released because it was read to the end
	mem      *bodyMemory
	client   netip.Prefix
	reserved int64
}

var errBodyReleased = errors.New("the request body was released")

func (h *heldBody) Read(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.r == nil {
		if h.eof {
			return 0, io.EOF
		}
		return 0, errBodyReleased
	}
	n, err := h.r.Read(p)
	if err == io.EOF {
		h.eof = true
		h.releaseLocked()
	}
	return n, err
}

// Close does nothing: ReverseProxy's Close never reaches it, and the
// exchange releases the body when it ends (releaseHeldBody).
func (h *heldBody) Close() error { return nil }

func (h *heldBody) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.releaseLocked()
}

func (h *heldBody) releaseLocked() {
	if h.mem != nil {
		h.mem.release(h.client, h.reserved)
		h.mem = nil
	}
	h.r = nil
}

// releaseHeldBody gives back the memory of the exchange's limited body, if
// it holds one; ServeHTTP defers it.
func (ex *exchange) releaseHeldBody() {
	if ex.held != nil {
		ex.held.release()
	}
}

// read reads out's body whole into memory it reserves first, and returns
// it with metering.EditRoom bytes of spare capacity. The reservation is
// ex.held's until the exchange ends.
func (m *bodyMemory) read(out *http.Request, ex *exchange) ([]byte, *refusal) {
	size := out.ContentLength
	if size > m.perRequest {
		return nil, limitedBodyTooLarge()
	}
	reserve := size + metering.EditRoom
	if size < 0 { // unknown length: the most it may be, until it is read
		reserve = m.perRequest + metering.EditRoom
	}
	client := clientKey(clientIP(out))
	if !m.acquire(client, reserve) {
		ref := refusalFor(resolve.ReasonOverloaded)
		ref.retryAfter = "1"
		ref.message = "Phantom is checking too many large request bodies against token limits at once (from this address, or in all); retry later"
		return nil, ref
	}
	ex.held = &heldBody{mem: m, client: client, reserved: reserve}
	var buf []byte
	if size >= 0 {
		buf = make([]byte, size, reserve)
		if _, err := io.ReadFull(out.Body, buf); err != nil {
			return nil, bodyReadRefusal(err, ex)
		}
		// The server stops at Content-Length; this read sees that end (and
		// runs the override guard's end-of-body check).
		if n, err := io.ReadFull(out.Body, buf[size:size+1]); n > 0 {
			return nil, badBody("the request body is longer than its Content-Length")
		} else if err != io.EOF {
			return nil, bodyReadRefusal(err, ex)
		}
	} else {
		buf = make([]byte, 0, min(reserve, 64<<10))
		for {
			if len(buf) == cap(buf) {
				if int64(cap(buf)) >= reserve {
					return nil, limitedBodyTooLarge()
				}
				grown := make([]byte, len(buf), min(2*int64(cap(buf)), reserve))
				copy(grown, buf)
				buf = grown
			}
			n, err := out.Body.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, bodyReadRefusal(err, ex)
			}
		}
		if int64(len(buf)) > m.perRequest {
			return nil, limitedBodyTooLarge()
		}
		if spare := reserve - int64(cap(buf)); spare > 0 {
			ex.held.mu.Lock()
			ex.held.mem.release(client, spare)
			ex.held.reserved -= spare
			ex.held.mu.Unlock()
		}
	}
	return buf, nil
}

// hold makes body, read by read, the exchange's request body.
func (ex *exchange) hold(out *http.Request, body []byte) {
	ex.held.mu.Lock()
	ex.held.r = bytes.NewReader(body)
	ex.held.mu.Unlock()
	out.Body = ex.held
	out.ContentLength = int64(len(body))
	out.TransferEncoding = nil
	out.Header.Del("Content-Length") // the transport writes it from ContentLength
}

func limitedBodyTooLarge() *refusal {
	ref := refusalFor(resolve.ReasonBodyTooLarge)
	ref.message = "a limit of the phantom token applies, so the proxy reads the request body whole, and it is larger than the proxy reads (-max-limited-body-bytes)"
	return ref
}
