package apikey

import (
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A route with tokens asks its upstream for answers in identity (see
// proxyLLM), so that the usage is read as the answer streams. An upstream
// that compresses anyway (gzip, deflate or zstd) is decoded: the answer goes
// on to the client decoded, without its Content-Encoding (identity is always
// acceptable to a client), so that the scanner reads it and can still hide
// the usage chunk the gateway asked for. Another encoding (br) passes on
// unread, and is charged its reservation.
//
// Go's decoders pull from a reader, and the answer is pushed by Write: a
// goroutine per such answer decodes what Write hands it through a pipe.
// This path is for upstreams that ignore Accept-Encoding; plain answers never
// take it.

// identity reports whether a Content-Encoding says the body is not encoded.
func identity(ce []string) bool {
	for _, v := range ce {
		if v = strings.TrimSpace(v); v != "" && !strings.EqualFold(v, "identity") {
			return false
		}
	}
	return true
}

// decodeBufferSize is how much decoded text one read hands the scanner.
const decodeBufferSize = 32 << 10

// decoder decodes a compressed answer for its tokenWriter.
type decoder struct {
	tw   *tokenWriter
	pw   *io.PipeWriter
	done chan struct{}
	// mu guards the client's writer, which the decoding goroutine writes
	// and Flush flushes, and werr, the first error writing to it.
	mu   sync.Mutex
	werr error
}

// newDecoder starts decoding an answer in Content-Encoding ce, or returns
// nil for an encoding it cannot decode. It removes the Content-Encoding.
func newDecoder(tw *tokenWriter, ce []string) *decoder {
	if len(ce) != 1 {
		return nil // several encodings, one over the other: not decoded
	}
	name := strings.ToLower(strings.TrimSpace(ce[0]))
	switch name {
	case "gzip", "x-gzip", "deflate", "zstd":
	default:
		return nil
	}
	tw.Header().Del("Content-Encoding")
	pr, pw := io.Pipe()
	d := &decoder{tw: tw, pw: pw, done: make(chan struct{})}
	go d.run(pr, name)
	return d
}

// run decodes what comes through pr until it ends or cannot be decoded;
// then writes into the pipe fail, which ends the answer.
func (d *decoder) run(pr *io.PipeReader, name string) {
	defer close(d.done)
	var rd io.Reader
	var err error
	switch name {
	case "gzip", "x-gzip":
		rd, err = gzip.NewReader(pr)
	case "deflate":
		rd, err = zlib.NewReader(pr)
	case "zstd":
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true)); err == nil {
			defer zr.Close()
			rd = zr
		}
	}
	if err == nil {
		buf := make([]byte, decodeBufferSize)
		for {
			n, rerr := rd.Read(buf)
			if n > 0 {
				d.pass(buf[:n])
			}
			if rerr != nil {
				err = rerr
				break
			}
		}
	}
	if err == io.EOF {
		err = nil
	}
	// Writes still coming get the error (or io.ErrClosedPipe at the end).
	pr.CloseWithError(err)
}

// pass hands decoded text to the scanner and what it lets through to the
// client, flushed: the answer may be a stream.
func (d *decoder) pass(p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.tw.scan.Feed(p)
	if len(out) == 0 || d.werr != nil {
		return
	}
	if _, d.werr = d.tw.ResponseWriter.Write(out); d.werr == nil {
		_ = http.NewResponseController(d.tw.ResponseWriter).Flush()
	}
}

// write hands compressed bytes to the decoder; it returns once they were
// read, with the error of a client that went away.
func (d *decoder) write(p []byte) (int, error) {
	n, err := d.pw.Write(p)
	if err != nil {
		return n, err
	}
	d.mu.Lock()
	werr := d.werr
	d.mu.Unlock()
	if werr != nil {
		return 0, werr
	}
	return n, nil
}

func (d *decoder) flush() {
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = http.NewResponseController(d.tw.ResponseWriter).Flush()
}

// close ends the compressed answer and waits until all of it was decoded.
func (d *decoder) close() {
	d.pw.Close()
	<-d.done
}
