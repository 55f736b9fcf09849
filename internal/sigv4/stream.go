package sigv4

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MaxChunk bounds one chunk of a signed streaming body: each is held whole
// while its signature is made (the SDKs send 64 KiB to 1 MiB).
const MaxChunk = 8 << 20

const (
	chunkSigPrefix   = ";chunk-signature="
	trailerSigPrefix = "x-amz-trailer-signature:"
	maxLine          = 4 << 10
)

// ErrChunk is a signed streaming body Phantom cannot read.
var ErrChunk = errors.New("the aws-chunked body is malformed")

// ResignChunks returns body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or its
// -TRAILER form when trailer is set) with each chunk's signature, and the
// trailer's, made again by s: the first chained to seed, the request's own
// signature. Sizes and lengths are kept, so Content-Length holds.
func (s *Signer) ResignChunks(body io.ReadCloser, amzDate, seed string, trailer bool) io.ReadCloser {
	return &chunkResigner{in: bufio.NewReaderSize(body, 64<<10), body: body, s: s, date: amzDate, prev: seed, trailer: trailer}
}

type chunkResigner struct {
	in      *bufio.Reader
	body    io.Closer
	s       *Signer
	date    string
	prev    string // the last signature made
	trailer bool
	out     bytes.Buffer // re-signed bytes not yet read
	done    bool
	err     error
}

func (c *chunkResigner) Read(p []byte) (int, error) {
	for c.out.Len() == 0 && c.err == nil {
		if c.done {
			return 0, io.EOF
		}
		c.err = c.next()
	}
	if c.out.Len() > 0 {
		return c.out.Read(p)
	}
	return 0, c.err
}

func (c *chunkResigner) Close() error { return c.body.Close() }

// next re-signs one chunk, and the end of the body after the last.
func (c *chunkResigner) next() error {
	line, err := c.line()
	if err != nil {
		return err
	}
	sizeText, sig, ok := strings.Cut(line, chunkSigPrefix)
	size, perr := strconv.ParseInt(sizeText, 16, 64)
	if !ok || perr != nil || size < 0 || size > MaxChunk || len(sig) != 64 {
		return fmt.Errorf("%w: a chunk header is not <hex size>;chunk-signature=<signature>", ErrChunk)
	}
	if size == 0 {
		c.prev = c.s.ChunkSignature(c.date, c.prev, nil)
		c.out.WriteString(sizeText + chunkSigPrefix + c.prev + "\r\n")
		if c.trailer {
			return c.end()
		}
		if blank, err := c.line(); err != nil || blank != "" {
			return fmt.Errorf("%w: the last chunk is not followed by an empty line", ErrChunk)
		}
		c.out.WriteString("\r\n")
		c.done = true
		return nil
	}
	data := make([]byte, size+2)
	if _, err := io.ReadFull(c.in, data); err != nil {
		return fmt.Errorf("%w: a chunk ends early", ErrChunk)
	}
	if !bytes.HasSuffix(data, []byte("\r\n")) {
		return fmt.Errorf("%w: a chunk is longer than its size", ErrChunk)
	}
	c.prev = c.s.ChunkSignature(c.date, c.prev, data[:size])
	c.out.WriteString(sizeText + chunkSigPrefix + c.prev + "\r\n")
	c.out.Write(data)
	return nil
}

// end re-signs the trailer after the last, empty chunk: its headers, then
// x-amz-trailer-signature, then an empty line.
func (c *chunkResigner) end() error {
	var trailers strings.Builder
	for range 16 {
		line, err := c.line()
		if err != nil {
			return err
		}
		if sig, ok := strings.CutPrefix(line, trailerSigPrefix); ok {
			if len(sig) != 64 { // ours replaces it byte for byte
				return fmt.Errorf("%w: the trailer signature is not 64 characters", ErrChunk)
			}
			if blank, err := c.line(); err != nil || blank != "" {
				return fmt.Errorf("%w: the trailer does not end with an empty line", ErrChunk)
			}
			sig := c.s.TrailerSignature(c.date, c.prev, trailers.String())
			c.out.WriteString(trailerSigPrefix + sig + "\r\n\r\n")
			c.done = true
			return nil
		}
		if !strings.Contains(line, ":") {
			return fmt.Errorf("%w: a trailer line is not name:value", ErrChunk)
		}
		trailers.WriteString(line + "\n")
		c.out.WriteString(line + "\r\n")
	}
	return fmt.Errorf("%w: too many trailers", ErrChunk)
}

// line reads one CRLF-terminated line, without its CRLF.
func (c *chunkResigner) line() (string, error) {
	var b []byte
	for {
		part, err := c.in.ReadSlice('\n')
		b = append(b, part...)
		if len(b) > maxLine {
			return "", fmt.Errorf("%w: a line is too long", ErrChunk)
		}
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				return "", fmt.Errorf("%w: the body ends early", ErrChunk)
			}
			return "", err
		}
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return "", fmt.Errorf("%w: a line does not end in CRLF", ErrChunk)
	}
	return string(b[:len(b)-2]), nil
}
