package proxy

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// requestBody is an admitted request's body, read only now: each read
// bounded in time, a method override in it noted, its bytes counted.
func (s *Server) requestBody(sw *statusWriter, r *http.Request, ex *exchange) *countingReader {
	var reqBody io.ReadCloser = &stallReader{
		ReadCloser: http.MaxBytesReader(sw, r.Body, s.cfg.MaxBodyBytes),
		rc:         http.NewResponseController(sw),
		timeout:    s.cfg.BodyStallTimeout,
		stalled:    &ex.bodyStalled,
	}
	if guarded := overrideGuard(r, reqBody, func() { ex.bodyOverride.Store(true) }); guarded != nil {
		reqBody = guarded
	}
	return &countingReader{ReadCloser: reqBody}
}

// countingReader counts the request body bytes read, for the audit record.
type countingReader struct {
	io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// stallReader bounds how long one read of a request body may wait for the
// client, so a body announced and never sent cannot hold a connection and
// an upstream request open for ever. When the body ends the deadline is
// lifted, as the connection then waits for the next request; when it is
// abandoned (a stall, an upstream that answered without reading it), the
// connection may read no more, so the server closes it instead of waiting
// to drain the rest.
type stallReader struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	stalled *atomic.Bool
	ended   bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.rc.SetReadDeadline(time.Now().Add(s.timeout))
	n, err := s.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		s.ended = true
		s.rc.SetReadDeadline(time.Time{})
	case err != nil:
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.stalled.Store(true)
		}
		s.rc.SetReadDeadline(time.Now())
	}
	return n, err
}

func (s *stallReader) Close() error {
	if !s.ended {
		s.rc.SetReadDeadline(time.Now())
	}
	return s.ReadCloser.Close()
}
