package apikey

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Method overrides: a request may ask the upstream to run it as another
// method, and frameworks honour that in the places listed below. Every
// method a request asks for is checked against the key's role and
// permissions, wherever an upstream could read it:
//
//   - the X-HTTP-Method-Override, X-Method-Override and X-HTTP-Method
//     headers (Express's method-override, ASP.NET, Symfony, Google's APIs);
//   - a "_method" query parameter (Express, Symfony and Laravel, Spring);
//   - a "_method" field of a body, read as each framework reads it:
//     application/x-www-form-urlencoded and multipart/* (Rails' Rack, PHP
//     and so Symfony and Laravel, Spring, ASP.NET, gorilla), a body with no
//     Content-Type on a POST (Rack reads it as a form), and any Content-Type
//     holding "json" (Express with a body getter, Laravel). The media type is
//     cut at ";", ",", a space or a tab (PHP cuts at a space too), in any
//     case. Field names are matched as PHP, qs and ASP.NET match them: in
//     any case, after percent-decoding, cut at a NUL or an array suffix
//     ("_method[]", "_method[0]"), with leading spaces dropped and "." or " "
//     taken as "_" (PHP reads ".method" as "_method"). JSON keys are matched
//     after their escapes are decoded ("\u005fmethod").
//
// The body is read both as sent (PHP, Rack, Spring and ASP.NET ignore
// Content-Encoding) and decoded (Express's body parsers inflate gzip,
// deflate, br and zstd). A body the gateway cannot read that way (another
// Content-Encoding, more than one, a corrupt one, a charset that is not a
// superset of ASCII, a compressed body longer than maxOverridePeek or one
// that decodes to more than maxOverrideDecoded) cannot be checked, and is
// refused to a key that may not use every method it could ask for.
//
// None of this costs anything to a request without a body, or with a body
// no framework reads an override from, or made with a key that may use
// every method an override can ask for.

// methodOverrideHeaders are the headers frameworks read to run a request as
// another method.
var methodOverrideHeaders = [...]string{"X-Http-Method-Override", "X-Method-Override", "X-Http-Method"}

const (
	// maxOverridePeek is how much of a body is read, before the request is
	// admitted, for an override: all of it when it is compressed (a longer
	// compressed body is refused), its start otherwise (the rest is watched
	// as it streams to the upstream, see peekedBody).
	maxOverridePeek = 64 << 10
	// maxOverrideDecoded bounds what a compressed body may decode to.
	maxOverrideDecoded = 4 << 20
)

// anyOverride stands for an override whose method could not be read: it is
// allowed only to a key that may use every method it could be.
var anyOverride = []string{http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodPost, http.MethodGet}

// overrideVerdict is what overrideCheck found.
type overrideVerdict uint8

const (
	overrideAllowed    overrideVerdict = iota
	overrideForbidden                  // a method the key may not use
	overrideUnreadable                 // a body that could hold one, which the gateway cannot read
	overrideKeyBodies                  // its start could not be read: the key holds its max_inflight_body
	overrideAllBodies                  // its start could not be read: all requests hold theirs
)

// overrideRefusal returns the refusal for a request that asks to be run as a
// method the key may not use, or nil. The start of a body it reads is
// counted in hold (max_inflight_body) until the request ends.
func (h *Handler) overrideRefusal(k *keystore.Key, r *http.Request, hold *bodyHold) *denial {
	switch overrideCheck(k, r, hold) {
	case overrideForbidden:
		return h.denials.method
	case overrideUnreadable:
		return h.denials.methodUnreadable
	case overrideKeyBodies:
		return h.denials.keyBodies
	case overrideAllBodies:
		return h.denials.allBodies
	}
	return nil
}

// overrideCheck checks every method the request asks to be run as against
// the key's role and permissions. The start of the body it reads is counted
// in hold first, when hold is not nil.
func overrideCheck(k *keystore.Key, r *http.Request, hold *bodyHold) overrideVerdict {
	permits := func(m string) bool {
		return k.PermitsMethod(r, strings.ToUpper(strings.TrimSpace(m)))
	}
	for _, name := range methodOverrideHeaders {
		for _, m := range r.Header[name] {
			if !permits(m) {
				return overrideForbidden
			}
		}
	}
	if q := r.URL.RawQuery; q != "" && formMayOverride(q) {
		for _, m := range formOverrides(q) {
			if !permits(m) {
				return overrideForbidden
			}
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		return overrideAllowed
	}
	kinds := bodyKinds(r)
	if kinds == 0 {
		return overrideAllowed
	}
	for _, m := range anyOverride {
		if !permits(m) {
			return bodyOverrideCheck(r, kinds, permits, hold)
		}
	}
	return overrideAllowed // whatever the body asks, the key may do it
}

// bodyOverrideCheck reads the body's start (all of it when compressed) for
// overrides; kinds says how frameworks could read it.
func bodyOverrideCheck(r *http.Request, kinds bodyKind, permits func(string) bool, hold *bodyHold) overrideVerdict {
	coding, ok := contentCoding(r.Header)
	if !ok || !asciiCharsets(r.Header["Content-Type"]) {
		return overrideUnreadable
	}
	if hold != nil {
		size := int64(maxOverridePeek)
		if r.ContentLength >= 0 && r.ContentLength < size {
			size = r.ContentLength
		}
		switch err := hold.take(size); {
		case errors.Is(err, errKeyBodies):
			return overrideKeyBodies
		case err != nil:
			return overrideAllBodies
		}
	}
	raw, complete := peekBody(r, maxOverridePeek, kinds, coding == "")
	methods, unknown := bodyOverrides(kinds, raw)
	if coding != "" {
		if !complete {
			return overrideUnreadable
		}
		more, moreUnknown, err := decodedOverrides(kinds, coding, raw)
		if err != nil {
			return overrideUnreadable
		}
		methods, unknown = append(methods, more...), unknown || moreUnknown
	}
	if unknown {
		methods = append(methods, anyOverride...)
	}
	for _, m := range methods {
		if !permits(m) {
			return overrideForbidden
		}
	}
	return overrideAllowed
}

// bodyKind is a way frameworks read a body for a "_method".
type bodyKind uint8

const (
	kindForm      bodyKind = 1 << iota // application/x-www-form-urlencoded, or none on a POST
	kindMultipart                      // multipart/*
	kindJSON                           // a type holding "json"
)

// bodyKinds says how frameworks could read the request's body for a
// "_method", from its Content-Type headers (all of them).
func bodyKinds(r *http.Request) bodyKind {
	types := r.Header["Content-Type"]
	if len(types) == 0 && r.Method == http.MethodPost {
		return kindForm // Rack parses a POST without a type as a form
	}
	var kinds bodyKind
	for _, v := range types {
		v = strings.TrimSpace(v)
		media := v
		if i := strings.IndexAny(media, ";, \t"); i >= 0 {
			media = media[:i]
		}
		switch {
		case media == "" && r.Method == http.MethodPost:
			kinds |= kindForm
		case strings.EqualFold(media, "application/x-www-form-urlencoded"):
			kinds |= kindForm
		case len(media) >= len("multipart/") && strings.EqualFold(media[:len("multipart/")], "multipart/"):
			kinds |= kindMultipart
		}
		if indexFold(v, "json") >= 0 {
			kinds |= kindJSON
		}
	}
	return kinds
}

// contentCoding returns the one content coding the body is in ("" for
// none): ok is false for a coding the gateway cannot decode, or more than
// one.
func contentCoding(h http.Header) (coding string, ok bool) {
	for _, v := range h["Content-Encoding"] {
		for v != "" {
			var c string
			c, v, _ = strings.Cut(v, ",")
			c = strings.TrimSpace(c)
			if c == "" || strings.EqualFold(c, "identity") {
				continue
			}
			if coding != "" {
				return "", false
			}
			switch {
			case strings.EqualFold(c, "gzip"), strings.EqualFold(c, "x-gzip"):
				coding = "gzip"
			case strings.EqualFold(c, "deflate"):
				coding = "deflate"
			case strings.EqualFold(c, "zstd"):
				coding = "zstd"
			default:
				return "", false
			}
		}
	}
	return coding, true
}

// asciiCharsets reports whether every charset the Content-Type headers name
// writes ASCII as ASCII, so that "_method" is found in the bytes.
func asciiCharsets(types []string) bool {
	for _, v := range types {
		for {
			i := indexFold(v, "charset")
			if i < 0 {
				break
			}
			v = strings.TrimLeft(v[i+len("charset"):], " \t")
			if !strings.HasPrefix(v, "=") {
				continue
			}
			v = strings.TrimLeft(v[1:], " \t\"'")
			end := strings.IndexAny(v, ";, \t\"'")
			if end < 0 {
				end = len(v)
			}
			if !asciiCharset(v[:end]) {
				return false
			}
			v = v[end:]
		}
	}
	return true
}

func asciiCharset(c string) bool {
	for _, name := range [...]string{"utf-8", "utf8", "us-ascii", "ascii", "latin1"} {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	for _, prefix := range [...]string{"iso-8859-", "windows-125", "cp125"} {
		if len(c) > len(prefix) && strings.EqualFold(c[:len(prefix)], prefix) {
			return true
		}
	}
	return false
}

// bodyOverrides returns the "_method" values in b, a body (or its start)
// read the ways kinds says; unknown means one whose value could not be read.
func bodyOverrides(kinds bodyKind, b []byte) (methods []string, unknown bool) {
	if kinds&kindForm != 0 && formMayOverride(b) {
		methods = formOverrides(string(b))
	}
	if kinds&kindMultipart != 0 && multipartMayOverride(b) {
		unknown = true // a part named like "_method", whatever it holds
	}
	if kinds&kindJSON != 0 && jsonMayOverride(b) {
		more, cut := jsonOverrides(b)
		methods, unknown = append(methods, more...), unknown || cut
	}
	return methods, unknown
}

// errOverrideInBody aborts a request whose body, past the part read before
// the request was admitted, may ask for another method.
var errOverrideInBody = errors.New(`a "_method" past the first 64 KiB of a body`)

// errUnreadable is a compressed body that decodes to more than
// maxOverrideDecoded.
var errUnreadable = errors.New("the body decodes to more than the gateway reads")

// decodedOverrides decodes raw, a whole body in coding, and returns the
// "_method" values in its first maxOverridePeek bytes; past them, any sign
// of one (overrideNeedle) counts as unknown.
func decodedOverrides(kinds bodyKind, coding string, raw []byte) (methods []string, unknown bool, err error) {
	var dec io.Reader
	switch coding {
	case "gzip":
		g, _ := gzipReaders.Get().(*gzipState)
		if g == nil {
			g = new(gzipState)
		}
		g.src.Reset(raw)
		if err := g.zr.Reset(&g.src); err != nil {
			return nil, false, err
		}
		defer func() {
			g.src.Reset(nil)
			gzipReaders.Put(g)
		}()
		dec = &g.zr
	case "deflate":
		zr, err := zlib.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, false, err
		}
		dec = zr
	case "zstd":
		out, err := zstdDecoder().DecodeAll(raw, nil)
		if err != nil {
			return nil, false, err
		}
		dec = bytes.NewReader(out)
	}
	bufp := decodeBuffers.Get().(*[]byte)
	defer decodeBuffers.Put(bufp)
	buf := *bufp
	n, err := io.ReadFull(dec, buf)
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		methods, unknown = bodyOverrides(kinds, buf[:n])
		return methods, unknown, nil
	case nil:
	default:
		return nil, false, err
	}
	methods, unknown = bodyOverrides(kinds, buf)
	// Past the first part, any sign of an override is one of unknown method.
	var seam overrideSeam
	seam.kinds = kinds
	seam.keep(buf)
	total := n
	for !unknown {
		n, err := dec.Read(buf)
		total += n
		if total > maxOverrideDecoded {
			return nil, false, errUnreadable
		}
		unknown = seam.found(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, err
		}
	}
	return methods, unknown, nil
}

// gzipState is a gzip reader and its source, reused across requests.
type gzipState struct {
	src bytes.Reader
	zr  gzip.Reader
}

var (
	gzipReaders   sync.Pool
	headBuffers   = sync.Pool{New: func() any { b := make([]byte, maxOverridePeek); return &b }}
	decodeBuffers = sync.Pool{New: func() any { b := make([]byte, maxOverridePeek); return &b }}
	zstdOnce      sync.Once
	zstdDec       *zstd.Decoder
)

// zstdDecoder is one decoder shared by all requests (DecodeAll may be called
// concurrently), bounded to maxOverrideDecoded.
func zstdDecoder() *zstd.Decoder {
	zstdOnce.Do(func() {
		zstdDec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(maxOverrideDecoded))
	})
	return zstdDec
}

// peekBody reads up to n bytes of the body and puts them back in front of
// the rest, so the upstream gets the body whole; complete says the body
// ended there. When guard is set, the rest, if any, is watched for signs of
// an override as it streams.
func peekBody(r *http.Request, n int, kinds bodyKind, guard bool) (head []byte, complete bool) {
	size := n
	if r.ContentLength >= 0 && r.ContentLength < int64(n) {
		size = int(r.ContentLength)
	}
	bufp := headBuffers.Get().(*[]byte)
	got, err := io.ReadFull(r.Body, (*bufp)[:size])
	buf := (*bufp)[:got]
	complete = err != nil || (r.ContentLength >= 0 && int64(got) == r.ContentLength)
	p := &peekedBody{head: buf, buf: bufp, body: r.Body, guard: !complete && guard}
	if p.guard {
		p.seam.kinds = kinds
		p.seam.keep(buf)
	}
	r.Body = p
	return buf, complete
}

// peekedBody is a body whose start was read before the request was
// admitted: that start, then the rest. When guard is set, it fails the
// request on any sign of an override in the rest: the upstream then gets a
// cut body, which no framework acts on, and the client a 502.
//
// The start is held in a buffer shared between requests: it goes back to
// the pool once read whole (by Read only, since Close may run while a Read
// is under way); a body never read whole leaves it to the garbage
// collector.
type peekedBody struct {
	head  []byte
	buf   *[]byte // head's buffer, until read whole
	body  io.ReadCloser
	guard bool
	seam  overrideSeam
}

func (p *peekedBody) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		if p.head = p.head[n:]; len(p.head) == 0 {
			p.head = nil
			headBuffers.Put(p.buf)
			p.buf = nil
		}
		return n, nil
	}
	n, err := p.body.Read(b)
	if p.guard && n > 0 && p.seam.found(b[:n]) {
		return 0, errOverrideInBody
	}
	return n, err
}

func (p *peekedBody) Close() error { return p.body.Close() }

// overrideSeam looks for the signs of an override (overrideNeedle) in a
// stream read in parts, including across the parts.
type overrideSeam struct {
	kinds bodyKind
	tail  [needleLen]byte
	n     int
}

// needleLen is more than the longest sign of an override.
const needleLen = 15

// keep remembers the end of b, for a sign that goes on in the next part.
func (s *overrideSeam) keep(b []byte) {
	if len(b) >= needleLen {
		s.n = copy(s.tail[:], b[len(b)-needleLen:])
		return
	}
	keep := min(s.n, needleLen-len(b))
	copy(s.tail[:], s.tail[s.n-keep:s.n])
	s.n = keep + copy(s.tail[keep:], b)
}

// found reports a sign of an override in p, or across the end of the part
// before it and p.
func (s *overrideSeam) found(p []byte) bool {
	var window [2 * needleLen]byte
	w := copy(window[:], s.tail[:s.n])
	w += copy(window[w:], p[:min(len(p), needleLen)])
	if overrideNeedle(s.kinds, window[:w]) || overrideNeedle(s.kinds, p) {
		return true
	}
	s.keep(p)
	return false
}
