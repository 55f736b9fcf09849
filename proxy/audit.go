package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
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
	Decision       string    `json:"decision"` // allowed, denied, error
	Reason         string    `json:"reason,omitempty"`
	Status         int       `json:"status"`                    // what the agent got
	UpstreamStatus int       `json:"upstream_status,omitempty"` // what the upstream said
	BytesIn        int64     `json:"bytes_in"`
	BytesOut       int64     `json:"bytes_out"`
	DurationMS     float64   `json:"duration_ms"`
	ClientAddr     string    `json:"client_addr"`
}

// auditLog writes JSON lines; concurrent requests never interleave.
type auditLog struct {
	mu  sync.Mutex
	w   io.Writer
	enc *json.Encoder
	c   io.Closer // nil for stdout
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
	return &auditLog{w: w, enc: json.NewEncoder(w), c: c}
}

func (a *auditLog) write(r *auditRecord) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enc.Encode(r)
}

func (a *auditLog) Close() error {
	if a.c == nil {
		return nil
	}
	return a.c.Close()
}
