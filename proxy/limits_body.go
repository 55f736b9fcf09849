package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/sync/semaphore"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Reading a body that a limit of its token applies to (applyLimits): into
// memory the proxy reserves first, once, at about the body's own size, and
// scanned in place. Bounds: each body (Config.MaxLimitedBodyBytes, then
// 413) and all of them held at once (Config.LimitedBodyMemory, then 503),
// so that many large bodies cannot grow the proxy without bound.

// editSlack is the room kept after a limited body for the bytes the proxy
// inserts (the cap, stream_options), so that inserting them copies nothing.
const editSlack = 256

// maxModelName bounds a model name the proxy reads; a longer one is refused
// before it is copied.
const maxModelName = 256

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
	m := &bodyMemory{perRequest: perRequest, total: semaphore.NewWeighted(total + editSlack), byClient: map[netip.Prefix]int64{}}
	if !shared {
		m.perClient = max(total/4, perRequest) + editSlack
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
// it with editSlack bytes of spare capacity. The reservation is ex.held's
// until the exchange ends.
func (m *bodyMemory) read(out *http.Request, ex *exchange) ([]byte, *refusal) {
	size := out.ContentLength
	if size > m.perRequest {
		return nil, limitedBodyTooLarge()
	}
	reserve := size + editSlack
	if size < 0 { // unknown length: the most it may be, until it is read
		reserve = m.perRequest + editSlack
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

// checkModelTarget refuses, when a model rule applies, request targets
// where the model that runs is not the one the proxy checks: a model query
// parameter, and an Azure-style deployment, whose model is chosen by the
// deployment in the path whatever the body names.
func checkModelTarget(path, rawQuery string) *refusal {
	for _, seg := range strings.Split(path, "/") {
		if strings.EqualFold(seg, "deployments") {
			return badBody("a model rule applies, and the model of an Azure deployment is in its path, not in the body: scope the token with allowed_paths instead")
		}
	}
	for _, pair := range strings.FieldsFunc(rawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		name, _, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(name)
		if err != nil || strings.EqualFold(strings.TrimSpace(name), "model") {
			return badBody("a model rule applies, so the model must be named in the request body alone, not in the query")
		}
	}
	return nil
}

// validModelName reports whether name is a model name the proxy matches
// against a model rule: 1 to 256 bytes of letters, digits and "._-", and
// in a body also ':' and '/' (OpenAI fine-tunes are ft:base:org::id;
// OpenRouter-style names are vendor/model). Anything else ('@', ',',
// spaces, escapes) could be read by an upstream as another model than
// the glob matched.
func validModelName(name string, colonSlash bool) bool {
	if name == "" || len(name) > maxModelName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		case colonSlash && (c == ':' || c == '/'):
		default:
			return false
		}
	}
	return true
}

// bodyModel reads the model a request body names, refusing it before any
// copy when it is too long to be a model name.
func bodyModel(raw []byte) (string, *refusal) {
	if len(raw) > maxModelName+2 {
		return "", badBody("the request body's model is longer than 256 bytes")
	}
	var model string
	if err := json.Unmarshal(raw, &model); err != nil {
		return "", badBody("the request body's model is not a string")
	}
	if !validModelName(model, true) {
		return "", badBody("a model rule applies, and the request body's model is not 1 to 256 letters, digits and ._:/-")
	}
	return model, nil
}

// scanObject reads the JSON object b (which starts at offset base of the
// body) and keeps the members named in watched, as slices of b: it copies
// nothing. It refuses anything but one valid JSON object in valid UTF-8, a
// watched key twice, and a key equal to a watched one but for case
// (encoding/json matches keys so, with bytes.EqualFold).
func scanObject(b []byte, base int, watched []string) (*object, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("not valid UTF-8")
	}
	if !json.Valid(b) {
		return nil, errors.New("not one valid JSON value")
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, errors.New("not a JSON object")
	}
	o := &object{members: map[string]member{}, empty: true}
	i = skipSpace(b, i+1)
	for b[i] != '}' {
		o.empty = false
		keyEnd := skipString(b, i)
		key := b[i+1 : keyEnd-1]
		i = skipSpace(b, keyEnd) // ':'
		start := skipSpace(b, i+1)
		end := skipValue(b, start)
		if err := o.keep(key, watched, member{raw: b[start:end], start: base + start, end: base + end}); err != nil {
			return nil, err
		}
		i = skipSpace(b, end)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	o.closeAt = base + i
	return o, nil
}

// keep records m under the watched key that key (as written, quotes off)
// names, if any.
func (o *object) keep(key []byte, watched []string, m member) error {
	if bytes.IndexByte(key, '\\') >= 0 {
		// An escaped character is at most 12 bytes (a surrogate pair): a
		// longer key is longer than any watched one, folded or not.
		if len(key) > 256 {
			return nil
		}
		var s string
		if err := json.Unmarshal(quoted(key), &s); err != nil {
			return errors.New("not valid JSON")
		}
		key = []byte(s)
	}
	for _, w := range watched {
		// Folding only maps a rune to another of 1 to 3 bytes: a key more
		// than three times as long as w cannot fold to it.
		if len(key) > 3*len(w) || !bytes.EqualFold(key, []byte(w)) {
			continue
		}
		if string(key) != w {
			return fmt.Errorf("the key %q differs from %q only in case", key, w)
		}
		if _, dup := o.members[w]; dup {
			return fmt.Errorf("the key %q appears twice", w)
		}
		o.members[w] = m
		return nil
	}
	return nil
}

// quoted is key with its quotes, as it stands in the body.
func quoted(key []byte) []byte {
	q := make([]byte, 0, len(key)+2)
	q = append(q, '"')
	q = append(q, key...)
	return append(q, '"')
}

// The skip functions walk JSON that json.Valid has accepted: each returns
// the offset just past what starts at i.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString skips the string whose opening quote is at i.
func skipString(b []byte, i int) int {
	i++
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b) // unreachable for valid JSON
		}
		i += q
		slashes := 0
		for j := i - 1; b[j] == '\\'; j-- {
			slashes++
		}
		i++
		if slashes%2 == 0 {
			return i
		}
	}
}

// skipValue skips the value that starts at i.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
		i++
	}
	return i
}
