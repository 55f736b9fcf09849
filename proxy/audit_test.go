package proxy

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/testutil"
)

// FuzzAuditJSON: the hand-written encoder writes what encoding/json would,
// whatever bytes a hostile request puts in the path or method.
func FuzzAuditJSON(f *testing.F) {
	f.Add("GET", "/v1/x", "r", 200, 1.5)
	f.Add("P\"OST", "/a<b>&c\u2028\u2029\x00\x1f\xff\xfe", "", 0, 0.0)
	f.Add("\t\n\r\b\f", "é日本\U0001F600", "route", 404, 123456.789)
	f.Fuzz(func(t *testing.T, method, path, route string, status int, ms float64) {
		if ms < 0 || ms > 1e9 || ms != 0 && ms < 1e-3 {
			return // durations are whole microseconds, never negative or huge
		}
		r := &auditRecord{
			Time: time.Unix(1700000000, 123456789).UTC(), RequestID: "abc", Route: route, Method: method,
			Path: path, Tunnel: route, Decision: "denied", Reason: path, Status: status, UpstreamStatus: status,
			BytesIn: int64(status), BytesOut: 7, DurationMS: ms, ClientAddr: "127.0.0.1:1234", Usage: route,
		}
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		if got := r.appendJSON(nil); string(got) != want.String() {
			t.Fatalf("\ngot  %s\nwant %s", got, want.String())
		}
	})
}

// TestAuditLogGroupCommit: records written concurrently all arrive, each on
// a line of its own.
func TestAuditLogGroupCommit(t *testing.T) {
	var buf testutil.LockedBuffer
	a := newAuditLog(&buf, nil)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.write(&auditRecord{RequestID: strings.Repeat("x", i%7), Method: "GET", Path: "/", Decision: "allowed"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 200 {
		t.Fatalf("%d lines, want 200", len(lines))
	}
	for _, l := range lines {
		var r auditRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Decision != "allowed" {
			t.Fatalf("line %q: %v", l, err)
		}
	}
}

func BenchmarkAuditRecord(b *testing.B) {
	r := &auditRecord{
		Time: time.Now().UTC(), RequestID: "0123456789abcdef01234567", Accessor: "pha_17ezMC9tEKb3Z74gsrUnlB", Route: "openai",
		Method: "POST", Path: "/v1/chat/completions", Decision: "allowed", Status: 200, UpstreamStatus: 200,
		BytesIn: 512, BytesOut: 2048, DurationMS: 1.234, ClientAddr: "10.1.2.3:54321",
	}
	b.Run("appendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = r.appendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			enc.Encode(r)
		}
	})
}
