package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// errOverrideInBody stops a request body that names a method override: Rails
// (Rack::MethodOverride) and Express's method-override read a form field
// _method, Laravel a form field or a top-level JSON key, and run that method
// instead of POST.
var errOverrideInBody = errors.New("the request body names a method override")

// maxFieldName bounds the field names and header lines the guard keeps; a
// longer one where an override could hide is refused rather than guessed.
const maxFieldName = 4096

var (
	errTwoContentTypes = errors.New("the request has more than one Content-Type header")
	errEncodedPost     = errors.New("a POST body with a Content-Encoding cannot be checked for a method override: send it uncompressed")
	errBodyCharset     = errors.New("a request body in a charset other than UTF-8, US-ASCII or ISO-8859-1 is refused: it cannot be checked, and an upstream may answer in the same charset, which the scrubber cannot read")
)

// checkBodyShape refuses bodies whose fields the guard could not read the
// way the upstream will: two Content-Type headers (which one would a
// framework use?), a POST body in a Content-Encoding (body-parser and
// others inflate gzip and deflate before reading fields), and a body (or a
// POST) in a charset the guard cannot read, which an upstream may also
// answer in (charset.go).
func checkBodyShape(r *http.Request) error {
	if len(r.Header.Values("Content-Type")) > 1 {
		return errTwoContentTypes
	}
	if (r.Method == http.MethodPost || r.ContentLength != 0) && !readableBodyCharset(r.Header.Get("Content-Type")) {
		return errBodyCharset
	}
	if r.Method == http.MethodPost {
		if len(contentCodings(r.Header)) > 0 {
			return errEncodedPost
		}
	}
	return nil
}

// overrideGuard returns body wrapped so that reading it fails, before the
// bytes that complete it are passed on, once it names an override field;
// nil when the request cannot carry one. Only POST is overridden. The body
// is read as every framework would read it, which can only refuse more:
// as a form when it has no media type or a form type (PHP and Rack take
// the type up to the first ';', ',' or space), as multipart for any
// multipart type (Rack also parses multipart/mixed and related), and as
// JSON when the header names "/json" or "+json" anywhere (Laravel).
func overrideGuard(r *http.Request, body io.ReadCloser, found func()) io.ReadCloser {
	if r.Method != http.MethodPost {
		return nil
	}
	raw := strings.ToLower(r.Header.Get("Content-Type"))
	mediaType := mediaTypeOf(raw)
	var scans []func(b []byte, eof bool) error
	if mediaType == "" || mediaType == "application/x-www-form-urlencoded" {
		scans = append(scans, (&formScanner{}).scan)
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		scans = append(scans, (&multipartScanner{}).scan)
		if !strings.Contains(raw, "boundary=") {
			// Rack reads a multipart body without a boundary as a form.
			scans = append(scans, (&formScanner{}).scan)
		}
	}
	if strings.Contains(raw, "/json") || strings.Contains(raw, "+json") {
		scans = append(scans, (&jsonKeyScanner{}).scan)
	}
	if len(scans) == 0 {
		return nil
	}
	return &guardedBody{ReadCloser: body, scans: scans, found: found}
}

type guardedBody struct {
	io.ReadCloser
	scans []func(b []byte, eof bool) error
	found func()
	err   error
}

func (g *guardedBody) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.ReadCloser.Read(p)
	for _, scan := range g.scans {
		if scanErr := scan(p[:n], err == io.EOF); scanErr != nil {
			g.err = scanErr
			g.found()
			return 0, scanErr
		}
	}
	return n, err
}

// isOverrideName reports whether a decoded field or parameter name names
// an override the way some framework reads names, or holds a control byte
// (refused rather than guessed at). Each reading, without case:
//   - PHP cuts a name at NUL, drops leading spaces, and reads ' ', '.' and
//     a first '[' as '_' ("_method%00x", ".method");
//   - Rack 2 strips leading and trailing brackets ("[_method]", "_method]");
//   - qs (Express) and PHP read "_method[]" and "_method[0]" as an array
//     named "_method", whose first element method-override takes;
//   - qs reads a name that starts with a bracket group by that group alone
//     ("[_method]x" is "_method").
func isOverrideName(name string) bool {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	for i := 0; i < len(name); i++ {
		if name[i] < ' ' || name[i] == 0x7f {
			return true
		}
	}
	name = strings.ToLower(strings.TrimLeft(name, " "))
	php := strings.Map(func(r rune) rune {
		if r == ' ' || r == '.' || r == '[' {
			return '_'
		}
		return r
	}, name)
	rack := strings.Trim(name, "[]")
	array, _, _ := strings.Cut(rack, "[")
	group := ""
	if rest, ok := strings.CutPrefix(name, "["); ok {
		group, _, _ = strings.Cut(rest, "]")
	}
	for _, reading := range []string{name, php, rack, array, group} {
		if slices.Contains(overrideParams, reading) {
			return true
		}
	}
	return false
}

// formScanner reads application/x-www-form-urlencoded names.
type formScanner struct {
	name   []byte
	inName bool
	begun  bool
}

func (f *formScanner) scan(b []byte, eof bool) error {
	if !f.begun {
		f.begun, f.inName = true, true
	}
	for _, c := range b {
		switch {
		case c == '&':
			if err := f.check(); err != nil {
				return err
			}
			f.name, f.inName = f.name[:0], true
		case !f.inName:
		case c == '=':
			if err := f.check(); err != nil {
				return err
			}
			f.inName = false
		default:
			if len(f.name) >= maxFieldName {
				return errOverrideInBody
			}
			f.name = append(f.name, c)
		}
	}
	if eof {
		return f.check()
	}
	return nil
}

func (f *formScanner) check() error {
	if !f.inName || len(f.name) == 0 {
		return nil
	}
	name, err := url.QueryUnescape(string(f.name))
	if err != nil || isOverrideName(name) {
		return errOverrideInBody
	}
	return nil
}

// multipartScanner looks for "_method" standing as a name anywhere in a
// multipart body rather than parsing part headers, which frameworks read
// too leniently to follow (Rack takes a name from Content-ID, PHP joins a
// header line without a colon to the one before, strips single quotes, and
// cuts a name at NUL). A name here is "method" after one of the characters
// PHP reads as '_' ('_', '.', '[', ' '), with a delimiter before that (a
// quote, '=', ':', ';', '<', '[', space or line break) and one after it (a
// quote, ']', '[', '>', ';', NUL, space or line break). "payment_method" or
// "_method.txt" are not such names.
type multipartScanner struct {
	tail []byte // the last bytes of the previous read, normalised
	read bool   // tail follows earlier bytes: buf does not start the body
}

// normaliseMultipart drops backslashes (Rack's dequote removes every
// backslash escape: "\_\m\e\t\h\o\d" is "_method") and reads every
// space-like byte as a space (PHP and Rack skip any isspace byte, vertical
// tab and form feed included).
func normaliseMultipart(dst, b []byte) []byte {
	for _, c := range b {
		switch c {
		case '\\':
		case '\v', '\f':
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

const (
	nameBefore = "\"'=:;<[ \t\r\n"
	nameAfter  = "\"']>[;\x00 \t\r\n"
	nameFirst  = "_.[ "
)

func (m *multipartScanner) scan(b []byte, eof bool) error {
	buf := normaliseMultipart(m.tail, b)
	for i := 0; i+len("method") <= len(buf); i++ {
		if !strings.EqualFold(string(buf[i:i+6]), "method") {
			continue
		}
		if i < 1 || strings.IndexByte(nameFirst, buf[i-1]) < 0 {
			continue
		}
		if i < 2 && m.read {
			continue // judged by the previous read, which saw what came before
		}
		if i >= 2 && strings.IndexByte(nameBefore, buf[i-2]) < 0 {
			continue
		}
		end := i + 6
		if end == len(buf) && !eof {
			break // the next read says whether the name ends here
		}
		if end == len(buf) || strings.IndexByte(nameAfter, buf[end]) >= 0 {
			return errOverrideInBody
		}
	}
	keep := min(len(buf), 8) // enough for a delimiter, '_', "method"
	m.read = m.read || len(buf) > keep
	m.tail = append(m.tail[:0], buf[len(buf)-keep:]...)
	return nil
}

// jsonKeyScanner reads the keys of a JSON body's top-level object.
type jsonKeyScanner struct {
	depth    int
	inString bool
	escape   bool
	isKey    bool   // the string being read is a top-level key
	wantKey  bool   // at depth 1, the next string is a key
	key      []byte // raw bytes of the top-level key being read
}

func (j *jsonKeyScanner) scan(b []byte, eof bool) error {
	for _, c := range b {
		if j.inString {
			if j.isKey {
				if len(j.key) >= maxFieldName {
					return errOverrideInBody
				}
				j.key = append(j.key, c)
			}
			switch {
			case j.escape:
				j.escape = false
			case c == '\\':
				j.escape = true
			case c == '"':
				j.inString = false
				if j.isKey {
					if err := j.check(); err != nil {
						return err
					}
				}
			}
			continue
		}
		switch c {
		case '"':
			j.inString = true
			j.isKey = j.depth == 1 && j.wantKey
			j.wantKey = false
			j.key = append(j.key[:0], '"')
		case '{', '[':
			j.depth++
			j.wantKey = c == '{' && j.depth == 1
		case '}', ']':
			j.depth--
		case ',':
			j.wantKey = j.depth == 1
		}
	}
	return nil
}

func (j *jsonKeyScanner) check() error {
	var key string
	if err := json.Unmarshal(j.key, &key); err != nil || isOverrideName(key) {
		return errOverrideInBody
	}
	return nil
}

// mediaTypeOf is a Content-Type's media type as the laxest framework reads
// it: lower case, up to the first ';', ',' or white space.
func mediaTypeOf(contentType string) string {
	mediaType, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(contentType)), ";")
	if i := strings.IndexAny(mediaType, ", \t"); i >= 0 {
		mediaType = mediaType[:i]
	}
	return mediaType
}
