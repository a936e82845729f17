package keystore

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func BenchmarkCheck(b *testing.B) {
	k, _ := Generate(Dev)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Check(k); !ok {
			b.Fatal("rejected")
		}
	}
}

func BenchmarkCheckMalformed(b *testing.B) {
	k, _ := Generate(Dev)
	bad := k[:len(k)-1] + "!"
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Check(bad); ok {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkSum(b *testing.B) {
	k, _ := Generate(Dev)
	b.ReportAllocs()
	for b.Loop() {
		Sum(k)
	}
}

func BenchmarkSetLookup(b *testing.B) {
	records := make([]Record, 10000)
	var d Digest
	for i := range records {
		k, _ := Generate(Dev)
		records[i] = Record{ID: fmt.Sprintf("k_%d", i), Hash: Sum(k).Encode(), Role: "reader"}
		if i == 5000 {
			d = Sum(k)
		}
	}
	set, err := NewSet(records)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if set.Lookup(d).Key == nil {
			b.Fatal("not found")
		}
	}
}

func BenchmarkPermitsCustom(b *testing.B) {
	secret, _ := Generate(Dev)
	k, err := Compile(Record{ID: "k", Hash: Sum(secret).Encode(), Role: "custom", Permissions: []string{"GET /api/tags", "POST /api/chat", "* /v1/*"}})
	if err != nil {
		b.Fatal(err)
	}
	r, _ := http.NewRequest("POST", "/v1/models/x", nil)
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	b.ReportAllocs()
	for b.Loop() {
		if !k.Permits(r) {
			b.Fatal("refused")
		}
	}
}
