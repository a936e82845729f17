package apikey

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/testtools"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// Method overrides in request bodies, against the frameworks that honour
// them: Express with npm's method-override (testdata/clients/override.mjs)
// and PHP's own request parsing, as Symfony and Laravel read it
// (testdata/overrides/router.php on Debian's php-cli built-in server). Each
// body below is first sent to the framework itself, which must run it as
// DELETE (so the case is a real way around a writer key's role), then
// through a real Caddy reverse_proxy with a writer key, which must refuse
// it (403, reason method) before the framework sees it.

// overrideBody is a request body and how it is labelled.
type overrideBody struct {
	name, contentType, contentEncoding string
	body                               []byte
}

// startExpress runs override.mjs and returns its address; skipped (failed
// under APIKEY_REQUIRE_NODE) without node or the npm packages.
func startExpress(t *testing.T) string {
	t.Helper()
	const install = "cd testdata/clients && npm ci --no-audit --no-fund"
	node := testtools.Require(t, "node", "APIKEY_REQUIRE_NODE", "apt-get install nodejs npm, then "+install)
	for _, pkg := range []string{"express", "method-override"} {
		if _, err := os.Stat(filepath.Join("testdata/clients/node_modules", pkg, "package.json")); err != nil {
			testtools.Missing(t, "the npm packages in testdata/clients", "APIKEY_REQUIRE_NODE",
				"npm package "+pkg+" is not installed in testdata/clients/node_modules ("+install+")")
		}
	}
	cmd := exec.Command(node, "override.mjs")
	cmd.Dir = "testdata/clients"
	return startServerProcess(t, cmd, regexp.MustCompile(`\{"port":(\d+)\}`), false)
}

// startPHP runs PHP's built-in server with router.php on a free port and
// returns its address; skipped (failed under APIKEY_REQUIRE_PHP) without
// php.
func startPHP(t *testing.T) string {
	t.Helper()
	php := testtools.Require(t, "php", "APIKEY_REQUIRE_PHP", "apt-get install php-cli")
	cmd := exec.Command(php, "-S", "127.0.0.1:0", "router.php")
	cmd.Dir = "testdata/overrides"
	return startServerProcess(t, cmd, regexp.MustCompile(`Development Server \(http://127\.0\.0\.1:(\d+)\) started`), true)
}

// startServerProcess starts cmd, waits for the line that names its port
// (on stdout, or stderr when onStderr), and stops it when the test ends.
func startServerProcess(t *testing.T, cmd *exec.Cmd, portLine *regexp.Regexp, onStderr bool) string {
	t.Helper()
	var out io.ReadCloser
	var err error
	if onStderr {
		out, err = cmd.StderrPipe()
	} else {
		out, err = cmd.StdoutPipe()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := portLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- "127.0.0.1:" + m[1]
				break
			}
		}
		io.Copy(io.Discard, out) // keep the pipe drained
	}()
	select {
	case addr := <-found:
		return addr
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not say which port it listens on", cmd.Path)
		return ""
	}
}

// frameworkAnswer is what override.mjs and router.php answer: the method
// the framework runs the request as.
type frameworkAnswer struct {
	Method    string `json:"method"`    // Express: after method-override; PHP: the request's
	Effective string `json:"effective"` // PHP: as Symfony and Laravel take it
}

func (a frameworkAnswer) runAs() string {
	if a.Effective != "" {
		return a.Effective
	}
	return a.Method
}

// postBody sends b to url with the key's secret (none when k is nil) and
// returns the status and body of the answer.
func postBody(t *testing.T, url string, k *gatewaytest.Key, b overrideBody) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(b.body))
	if err != nil {
		t.Fatal(err)
	}
	if b.contentType != "" {
		req.Header.Set("Content-Type", b.contentType)
	}
	if b.contentEncoding != "" {
		req.Header.Set("Content-Encoding", b.contentEncoding)
	}
	if k != nil {
		req.Header.Set("Authorization", "Bearer "+k.Secret)
	}
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", b.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// overrideGateway starts Caddy with a writer and an admin key on /api/*
// in front of upstream, and returns the gateway's base URL.
func overrideGateway(t *testing.T, upstream string, keys ...gatewaytest.Key) string {
	t.Helper()
	records := make([]keystore.Record, len(keys))
	for i, k := range keys {
		records[i] = k.Record
	}
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, guardedSite(port, filepath.Join(t.TempDir(), "caddy.log"), gatewaytest.WriteKeyFile(t, records...), upstream, "", ""))
	return fmt.Sprintf("http://127.0.0.1:%d/api", port)
}

// checkOverrideRefused sends each body to the framework directly, which
// must run it as DELETE, then through the gateway with the writer key,
// which must refuse it with reason method; unreadable bodies get the
// message that says the body could not be read.
func checkOverrideRefused(t *testing.T, direct, gateway string, writer gatewaytest.Key, bodies []overrideBody, unreadable map[string]bool) {
	t.Helper()
	for _, b := range bodies {
		status, answer := postBody(t, direct+"/x", nil, b)
		var a frameworkAnswer
		if err := json.Unmarshal(answer, &a); err != nil || status != 200 || a.runAs() != "DELETE" {
			t.Errorf("%s: the framework itself runs it as %q (%d %s), want DELETE: not a way around the role", b.name, a.runAs(), status, answer)
			continue
		}
		status, answer = postBody(t, gateway+"/x", &writer, b)
		if status != 403 || !bytes.Contains(answer, []byte(`"reason":"method"`)) {
			t.Errorf("%s with a writer key: %d %s, want 403 reason method (the framework runs it as DELETE)", b.name, status, answer)
			continue
		}
		if said := bytes.Contains(answer, []byte("cannot read")); said != unreadable[b.name] {
			t.Errorf("%s: the refusal says the body could not be read: %v, want %v: %s", b.name, said, unreadable[b.name], answer)
		}
	}
}

func gzipped(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func deflated(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstded(t *testing.T, s string) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll([]byte(s), nil)
}

// utf16le is s (ASCII) in UTF-16LE.
func utf16le(s string) []byte {
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, s[i], 0)
	}
	return b
}

// brotliBody is "_method=DELETE" compressed with brotli (by Node's zlib):
// the gateway has no brotli decoder, and Express has one.
var brotliBody = []byte{0x1b, 0x0d, 0x00, 0xf8, 0xa5, 0x7a, 0xbe, 0x82, 0x91, 0x0a, 0x43, 0xa7, 0x84, 0x60}

const formType = "application/x-www-form-urlencoded"

// TestMethodOverrideInBodiesExpress: the bodies Express's body parsers and
// method-override run as DELETE are refused to a writer key: compressed
// forms and JSON, JSON with escaped keys or an array value, qs array
// fields, UTF-16 JSON, and a brotli body the gateway cannot decode.
func TestMethodOverrideInBodiesExpress(t *testing.T) {
	express := startExpress(t)
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ovx_writer", Role: "writer"})
	gateway := overrideGateway(t, express, writer)
	bodies := []overrideBody{
		{"gzip form", formType, "gzip", gzipped(t, "_method=DELETE")},
		{"GZIP form (coding in capitals)", formType, "GZIP", gzipped(t, "a=1&_method=DELETE")},
		{"deflate form", formType, "deflate", deflated(t, "_method=DELETE")},
		{"JSON", "application/json", "", []byte(`{"_method":"DELETE"}`)},
		{"JSON, type in capitals", "Application/JSON", "", []byte(`{"model":"m","_method":"DELETE"}`)},
		{"JSON, escaped key", "application/json", "", []byte(`{"\u005fmethod":"DELETE"}`)},
		{"JSON, escaped value", "application/json", "", []byte(`{"_method":"\u0044ELETE"}`)},
		{"JSON, array value", "application/json", "", []byte(`{"_method":["DELETE"]}`)},
		{"gzip JSON", "application/json", "gzip", gzipped(t, `{"messages":[],"_method":"DELETE"}`)},
		{"UTF-16 JSON", "application/json; charset=utf-16le", "", utf16le(`{"_method":"DELETE"}`)},
		{"form, qs array", formType, "", []byte("_method[0]=DELETE")},
		{"form, qs list", formType, "", []byte("_method[]=DELETE")},
		{"brotli form", formType, "br", brotliBody},
	}
	checkOverrideRefused(t, "http://"+express, gateway, writer, bodies, map[string]bool{"UTF-16 JSON": true, "brotli form": true})
}

// TestMethodOverrideInBodiesPHP: the bodies PHP parses into
// $_POST['_method'] (which Symfony and Laravel run a POST as) are refused
// to a writer key: a media type cut at a space, field names PHP rewrites to
// "_method", and the form PHP reads from a compressed body's raw bytes.
func TestMethodOverrideInBodiesPHP(t *testing.T) {
	php := startPHP(t)
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ovp_writer", Role: "writer"})
	gateway := overrideGateway(t, php, writer)
	multipart := "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n"
	bodies := []overrideBody{
		{"urlencoded, type cut at a space", formType + " x", "", []byte("_method=DELETE")},
		{"multipart, boundary after a space", "multipart/form-data boundary=XX", "", []byte(multipart)},
		{"form, .method", formType, "", []byte(".method=DELETE")},
		{"form, +.method", formType, "", []byte("+.method=DELETE")},
		{"form, name cut at a NUL", formType, "", []byte("_method%00x=DELETE")},
		{"multipart, name on a folded line", "multipart/form-data; boundary=XX", "",
			[]byte("--XX\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n")},
		{"multipart, .method", "multipart/form-data; boundary=XX", "",
			[]byte("--XX\r\nContent-Disposition: form-data; name=\".method\"\r\n\r\nDELETE\r\n--XX--\r\n")},
		// PHP ignores Content-Encoding: a gzip body's raw bytes are its form.
		{"form in a gzip body's raw bytes", formType, "gzip", storedGzip(t, "x=&_method=DELETE&y=")},
	}
	checkOverrideRefused(t, "http://"+php, gateway, writer, bodies, nil)
}

// storedGzip is a valid gzip stream of s in one stored (uncompressed) block:
// its raw bytes hold s as it is.
func storedGzip(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b.Bytes(), []byte(s)) {
		t.Fatal("the stored gzip block does not hold the text as it is")
	}
	return b.Bytes()
}

// TestMethodOverrideAllowedBodiesPass: a writer key's ordinary requests
// (JSON with or without gzip, a body that mentions "_method" in a value, a
// form asking for PUT, which the role allows) reach Express as the method
// the writer may use; bodies that cannot be read for an override (corrupt,
// or compressed past the read limit) are refused to the writer only, and
// an admin key's pass untouched.
func TestMethodOverrideAllowedBodiesPass(t *testing.T) {
	express := startExpress(t)
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ova_writer", Role: "writer"})
	admin := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ova_admin", Role: "admin"})
	gateway := overrideGateway(t, express, writer, admin)
	for _, c := range []struct {
		b    overrideBody
		want string
	}{
		{overrideBody{"JSON", "application/json", "", []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)}, "POST"},
		{overrideBody{"gzip JSON", "application/json", "gzip", gzipped(t, `{"model":"m","stream":true}`)}, "POST"},
		{overrideBody{"JSON mentioning _method in a value", "application/json", "",
			[]byte(`{"messages":[{"content":"what does Laravel's {\"_method\":\"DELETE\"} do?"}],"n":{"_method":"DELETE"}}`)}, "POST"},
		{overrideBody{"form asking for PUT", formType, "", []byte("a=1&_method=put")}, "PUT"},
		{overrideBody{"gzip form asking for PATCH", formType, "gzip", gzipped(t, "_method=PATCH")}, "PATCH"},
		{overrideBody{"text, not read for overrides", "text/plain", "br", brotliBody}, "POST"},
	} {
		status, answer := postBody(t, gateway+"/x", &writer, c.b)
		var a frameworkAnswer
		if json.Unmarshal(answer, &a); status != 200 || a.Method != c.want {
			t.Errorf("writer, %s: %d %s, want 200 and Express running it as %s", c.b.name, status, answer, c.want)
		}
	}

	corrupt := gzipped(t, "a=1")
	corrupt[len(corrupt)-5] ^= 0xff // the CRC
	big := make([]byte, 0, 200<<10)
	for i := 0; len(big) < 150<<10; i++ {
		big = fmt.Appendf(big, "f%d=%x&", i, sha256.Sum256([]byte{byte(i), byte(i >> 8)}))
	}
	for _, b := range []overrideBody{
		{"corrupt gzip form", formType, "gzip", corrupt},
		{"gzip form over 64 KiB compressed", formType, "gzip", gzipped(t, string(big))},
		{"form in two codings", formType, "gzip, gzip", gzipped(t, string(gzipped(t, "a=1")))},
	} {
		status, answer := postBody(t, gateway+"/x", &writer, b)
		if status != 403 || !bytes.Contains(answer, []byte(`"reason":"method"`)) || !bytes.Contains(answer, []byte("cannot read")) {
			t.Errorf("writer, %s: %d %s, want 403 reason method, saying the body cannot be read", b.name, status, answer)
		}
		if status, answer := postBody(t, gateway+"/x", &admin, b); status == 403 {
			t.Errorf("admin, %s: %d %s: a key that may use every method is refused", b.name, status, answer)
		}
	}
}

// TestMethodOverrideCheckKeepsBodies: the bodies a writer key may send reach
// the upstream byte for byte, however they are encoded and however long
// (past the part read for overrides, the rest streams).
func TestMethodOverrideCheckKeepsBodies(t *testing.T) {
	var mu sync.Mutex
	var got [][32]byte
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, sha256.Sum256(b))
		mu.Unlock()
	}))
	t.Cleanup(up.Close)
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ovk_writer", Role: "writer"})
	gateway := overrideGateway(t, strings.TrimPrefix(up.URL, "http://"), writer)
	long := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("tell me more, ", 10<<10) + `"}]}`
	for _, b := range []overrideBody{
		{"JSON", "application/json", "", []byte(`{"model":"m","messages":[]}`)},
		{"JSON past 64 KiB", "application/json", "", []byte(long)},
		{"gzip JSON", "application/json", "gzip", gzipped(t, long)},
		{"form past 64 KiB", formType, "", []byte("a=" + strings.Repeat("x", 100<<10) + "&b=1")},
		{"form asking for PUT", formType, "", []byte("_method=PUT&a=1")},
		{"POST without a type", "", "", []byte("plain bytes")},
		{"zstd form asking for PUT", formType, "zstd", zstded(t, "_method=PUT")},
	} {
		before := len(got)
		status, answer := postBody(t, gateway+"/x", &writer, b)
		mu.Lock()
		n := len(got)
		var last [32]byte
		if n > before {
			last = got[n-1]
		}
		mu.Unlock()
		if status != 200 || n != before+1 || last != sha256.Sum256(b.body) {
			t.Errorf("%s: %d %s, and the upstream got the body byte for byte: %v", b.name, status, answer, n == before+1 && last == sha256.Sum256(b.body))
		}
	}
	// Node 20's Express has no zstd decoder; newer ones do.
	zstdDelete := overrideBody{"zstd form asking for DELETE", formType, "zstd", zstded(t, "_method=DELETE")}
	if status, answer := postBody(t, gateway+"/x", &writer, zstdDelete); status != 403 || !bytes.Contains(answer, []byte(`"reason":"method"`)) {
		t.Errorf("%s: %d %s, want 403 reason method", zstdDelete.name, status, answer)
	}
}

// TestMethodOverridesAreChecked: a reader's GET that asks to be run as
// DELETE, through any override header or _method, is refused (403 method)
// and never reaches the upstream; an override the role allows passes.
func TestMethodOverridesAreChecked(t *testing.T) {
	reader := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_override_reader", Role: "reader"})
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_override_writer", Role: "writer"})
	custom := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_override_custom", Role: "custom", Permissions: []string{"GET /x", "POST /chat"}})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, guardedSite(port, filepath.Join(t.TempDir(), "caddy.log"),
		gatewaytest.WriteKeyFile(t, reader.Record, writer.Record, custom.Record), up.Addr(), "", ""))
	base := fmt.Sprintf("http://127.0.0.1:%d/api", port)

	for _, c := range []struct {
		name    string
		key     gatewaytest.Key
		path    string
		headers []string
		status  int
	}{
		{"X-HTTP-Method-Override", reader, "/x", []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"X-Method-Override", reader, "/x", []string{"X-Method-Override", "delete"}, 403},
		{"X-HTTP-Method", reader, "/x", []string{"X-HTTP-Method", "PUT"}, 403},
		{"_method", reader, "/x?_method=DELETE", nil, 403},
		{"_method among others", reader, "/x?a=1&_method=patch", nil, 403},
		{"writer overrides to DELETE", writer, "/x", []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"writer overrides to PUT", writer, "/x", []string{"X-HTTP-Method-Override", "PUT"}, 200},
		{"custom overrides to a permitted method", custom, "/chat?_method=POST", nil, 403}, // GET /chat itself is not permitted
		{"custom override to POST on /x", custom, "/x", []string{"X-HTTP-Method-Override", "POST"}, 403},
		{"_method escaped", reader, "/x?%5Fmethod=DELETE", nil, 403},
		{"_method escaped lowercase", reader, "/x?%5fmethod=delete", nil, 403},
		{"_method after a semicolon", reader, "/x?a=1;_method=DELETE", nil, 403},
		{"no override", reader, "/x", nil, 200},
	} {
		before := up.Count()
		r := gatewaytest.Send(t, "GET", base+c.path, append(c.key.Bearer(), c.headers...)...)
		if r.Status != c.status {
			t.Errorf("%s: %d, want %d", c.name, r.Status, c.status)
			continue
		}
		if c.status == 403 {
			if r.Err.Reason != reasonMethod {
				t.Errorf("%s: reason %q, want method", c.name, r.Err.Reason)
			}
			if up.Count() != before {
				t.Errorf("%s: the refused request reached the upstream", c.name)
			}
		}
	}

	// A form body's _method, as Rails and Laravel read it.
	for _, c := range []struct {
		name, contentType, body string
		status                  int
	}{
		{"urlencoded DELETE", "application/x-www-form-urlencoded", "a=1&_method=DELETE", 403},
		{"urlencoded escaped", "application/x-www-form-urlencoded", "a=1&%5Fmethod=delete", 403},
		{"urlencoded PUT", "application/x-www-form-urlencoded", "_method=PUT&a=1", 200},
		{"multipart", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n", 403},
		{"multipart, name unquoted", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--XX--\r\n", 403},
		{"multipart, NAME in capitals", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; NAME=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n", 403},
		{"urlencoded, a type list", "application/x-www-form-urlencoded, text/plain", "_method=DELETE", 403},
		{"urlencoded, charset twice", "application/x-www-form-urlencoded; charset=utf-8; charset=latin1", "_method=DELETE", 403},
		{"JSON, as Express's body getter and Laravel read it", "application/json", `{"_method": "DELETE"}`, 403},
		{"JSON asking for PUT", "application/json", `{"_method": "PUT"}`, 200},
	} {
		req, _ := http.NewRequest("POST", base+"/x", strings.NewReader(c.body))
		req.Header.Set("Content-Type", c.contentType)
		req.Header.Set("Authorization", "Bearer "+writer.Secret)
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("writer POST with %s: %d, want %d", c.name, resp.StatusCode, c.status)
		}
		if c.status == 200 {
			if seen := up.Last(t); seen.Method != "POST" {
				t.Errorf("%s: the upstream got %s", c.name, seen.Method)
			}
		}
	}
}

// TestMethodOverrideLateInABody: a "_method" past the first 64 KiB of a
// form body, which frameworks still read, fails the request: the upstream
// never gets the whole body, so it never acts on it.
func TestMethodOverrideLateInABody(t *testing.T) {
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_late_writer", Role: "writer"})
	var complete atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "cut body", http.StatusBadRequest)
			return
		}
		complete.Add(1)
	}))
	t.Cleanup(up.Close)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, guardedSite(port, filepath.Join(t.TempDir(), "caddy.log"), gatewaytest.WriteKeyFile(t, writer.Record),
		strings.TrimPrefix(up.URL, "http://"), "", ""))
	post := func(body string) int {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/x", port), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+writer.Secret)
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	padding := "a=" + strings.Repeat("x", 70<<10)
	if code := post(padding + "&b=1"); code != 200 || complete.Load() != 1 {
		t.Fatalf("a large form without _method: %d, %d complete", code, complete.Load())
	}
	if code := post(padding + "&_method=DELETE"); code == 200 || complete.Load() != 1 {
		t.Errorf("a _method past 64 KiB: %d, and the upstream got %d whole bodies (want 1)", code, complete.Load())
	}
}
