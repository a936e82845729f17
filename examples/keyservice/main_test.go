package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The demo reader's hash, from examples/keys.json.
const readerHash = "sha256:58419fa4c3c4a2c4395528fef8b58612456b77d87dbbc4fce13c8f95bd810656"

func TestLookup(t *testing.T) {
	h, err := newHandler("../keys.json", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(auth, body string) (int, string) {
		req, _ := http.NewRequest("POST", srv.URL+"/lookup", strings.NewReader(body))
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("Bearer s3cret", `{"hash":"`+readerHash+`"}`); code != 200 || !strings.Contains(body, `"id": "k_demo_reader"`) {
		t.Errorf("known hash: %d %s", code, body)
	}
	// An old secret of a rotated key finds the record too.
	if code, body := post("Bearer s3cret", `{"hash":"sha256:257e545d52bea1f89ef006b3e71193d9f9856052f8ca892674fae8b53a56bc2a"}`); code != 200 || !strings.Contains(body, "k_demo_rotated") {
		t.Errorf("previous hash: %d %s", code, body)
	}
	if code, _ := post("Bearer s3cret", `{"hash":"sha256:`+strings.Repeat("0", 64)+`"}`); code != 404 {
		t.Errorf("unknown hash: %d", code)
	}
	if code, _ := post("Bearer wrong", `{"hash":"`+readerHash+`"}`); code != 401 {
		t.Errorf("wrong token: %d", code)
	}
}
