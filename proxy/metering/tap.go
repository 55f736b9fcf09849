package metering

import (
	"io"
	"sync"
	"time"
)

// Bounds of reading a metered response on after its agent has gone: long
// enough for any stream an LLM API sends, short of holding a connection to
// the upstream (and a handler) forever.
const (
	MaxDrainTime  = 10 * time.Minute
	maxDrainBytes = 256 << 20
)

// Tap reads a response body for the agent and, on the side, the usage in
// it. Whoever forwards the body (httputil.ReverseProxy) closes it at its
// end, or when writing to the agent fails: a body closed before its end is
// read on to its end, through the scanner, so that the usage the upstream
// reports last is still charged. done receives what was read, once, before
// Close returns.
type Tap struct {
	body  io.ReadCloser
	scan  func([]byte)
	end   func() // the body ended: the scanner notes a truncated document
	count Usage
	ended bool // read to its end
	cut   bool // a read failed: the upstream (or the drain's bound) cut it
	stop  func()
	once  sync.Once
	done  func(u Usage, ended bool)
}

// NewTap reads body for usage in format (resolve.Usage*), as server-sent
// events when sse; stop cancels the upstream request, to bound the drain.
func NewTap(body io.ReadCloser, format string, sse bool, stop func(), done func(u Usage, ended bool)) *Tap {
	t := &Tap{body: body, stop: stop, done: done}
	if sse {
		sc := newSSEUsageScanner(format, &t.count)
		t.scan, t.end = sc.write, sc.end
	} else {
		sc := newJSONUsageScanner(format, &t.count)
		t.scan, t.end = sc.write, sc.end
	}
	return t
}

func (t *Tap) Read(p []byte) (int, error) {
	n, err := t.body.Read(p)
	t.scan(p[:n])
	switch {
	case err == io.EOF:
		t.ended = true
		t.end()
	case err != nil:
		t.cut = true
	}
	return n, err
}

func (t *Tap) Close() error {
	t.once.Do(func() {
		if !t.ended && !t.cut {
			t.drain()
		}
		t.done(t.count, t.ended)
	})
	return t.body.Close()
}

// drain reads the rest of the body into the scanner only, within
// maxDrainBytes and MaxDrainTime.
func (t *Tap) drain() {
	if t.stop != nil {
		timer := time.AfterFunc(MaxDrainTime, t.stop)
		defer timer.Stop()
	}
	buf := make([]byte, 32<<10)
	for left := int64(maxDrainBytes); left > 0; {
		n, err := t.body.Read(buf[:min(int64(len(buf)), left)])
		t.scan(buf[:n])
		left -= int64(n)
		switch {
		case err == io.EOF:
			t.ended = true
			t.end()
			return
		case err != nil:
			t.cut = true
			return
		}
	}
}
