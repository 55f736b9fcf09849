package proxy

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// auditRecord is one line of the audit log: one per request, allowed or not.
// It names the token by accessor; it never holds a token or a credential.
type auditRecord struct {
	Time           time.Time `json:"time"`
	RequestID      string    `json:"request_id"`
	Accessor       string    `json:"accessor,omitempty"`
	Route          string    `json:"route,omitempty"`
	Method         string    `json:"method"`
	Path           string    `json:"path"`
	Tunnel         string    `json:"tunnel,omitempty"` // the request_id of the CONNECT a request came through
	Decision       string    `json:"decision"`         // allowed, denied, error
	Reason         string    `json:"reason,omitempty"`
	Status         int       `json:"status"`                    // what the agent got
	UpstreamStatus int       `json:"upstream_status,omitempty"` // what the upstream said
	BytesIn        int64     `json:"bytes_in"`
	BytesOut       int64     `json:"bytes_out"`
	DurationMS     float64   `json:"duration_ms"`
	ClientAddr     string    `json:"client_addr"`
	// Usage, for a request that spent what the proxy meters (usage_settle.go):
	// "measured", its usage read from the answer, or "unreadable", not read
	// (phantom_proxy_usage_unreadable_total says why).
	Usage string `json:"usage,omitempty"`
}

// appendJSON appends r as one JSON line, exactly as encoding/json would
// write it (audit_test.go checks), without reflection: it runs for every
// request.
func (r *auditRecord) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","request_id":`...)
	b = appendJSONString(b, r.RequestID)
	if r.Accessor != "" {
		b = append(b, `,"accessor":`...)
		b = appendJSONString(b, r.Accessor)
	}
	if r.Route != "" {
		b = append(b, `,"route":`...)
		b = appendJSONString(b, r.Route)
	}
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, r.Path)
	if r.Tunnel != "" {
		b = append(b, `,"tunnel":`...)
		b = appendJSONString(b, r.Tunnel)
	}
	b = append(b, `,"decision":`...)
	b = appendJSONString(b, r.Decision)
	if r.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, r.Reason)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	if r.UpstreamStatus != 0 {
		b = append(b, `,"upstream_status":`...)
		b = strconv.AppendInt(b, int64(r.UpstreamStatus), 10)
	}
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, r.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, r.BytesOut, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, r.DurationMS, 'f', -1, 64) // milliseconds: never tiny or huge
	b = append(b, `,"client_addr":`...)
	b = appendJSONString(b, r.ClientAddr)
	if r.Usage != "" {
		b = append(b, `,"usage":`...)
		b = appendJSONString(b, r.Usage)
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string the way encoding/json does:
// <, >, &, U+2028 and U+2029 escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// auditLog writes JSON lines, never interleaved. Writes are group
// committed: while one request writes, the records of others gather and go
// out together in its next write, so under load the log costs a fraction of
// a write per request while an idle proxy writes each line at once.
type auditLog struct {
	w io.Writer
	c io.Closer // nil for stdout

	mu      sync.Mutex
	pending []byte // records waiting for the writer
	spare   []byte // the other buffer, reused
	writing bool   // a request is writing; it takes pending before it stops
}

func openAuditLog(path string) (*auditLog, error) {
	if path == "" || path == "-" {
		return newAuditLog(os.Stdout, nil), nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	return newAuditLog(f, f), nil
}

func newAuditLog(w io.Writer, c io.Closer) *auditLog {
	return &auditLog{w: w, c: c}
}

// write records r. The caller that finds no write in progress writes
// everything pending, its own record and those that arrive meanwhile; the
// others return at once. An error is the writer's, reported once.
func (a *auditLog) write(r *auditRecord) error {
	a.mu.Lock()
	a.pending = r.appendJSON(a.pending)
	if a.writing {
		a.mu.Unlock()
		return nil
	}
	a.writing = true
	var err error
	for len(a.pending) > 0 {
		out := a.pending
		a.pending = a.spare[:0]
		a.mu.Unlock()
		if _, werr := a.w.Write(out); werr != nil && err == nil {
			err = werr
		}
		a.mu.Lock()
		a.spare = out
	}
	a.writing = false
	if cap(a.spare) > 1<<20 {
		a.spare = nil // after a burst, do not keep a big buffer
	}
	a.mu.Unlock()
	return err
}

// Close closes the file. Every write has returned by then (the server has
// drained), so nothing is pending.
func (a *auditLog) Close() error {
	if a.c == nil {
		return nil
	}
	return a.c.Close()
}

// statusWriter records the status and body size sent to the agent. Unwrap
// lets http.ResponseController reach Flush for streaming.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx responses are interim
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
