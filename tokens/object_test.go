package tokens

import (
	"bytes"
	"testing"
)

// FuzzObjectInPlace: object, which reads fields in place, finds the same
// fields, values and errors as encoding/json's decoder (objectDecoded).
func FuzzObjectInPlace(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"a\"}b"}],"max_tokens":5}`))
	f.Add([]byte(` { "Model" : "x" , "n":1e3,"stream":true,"x":null,"y":{"a":[1,{"b":"]"}]}} `))
	f.Add([]byte(`{"mod\u0065l":"m","model":"n"}`))
	f.Add([]byte(`{"\xff":1,"a":"\xfe"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"a":1}{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		watch := topWatch[OpenAI]
		got, err := object(data, watch)
		want, wantErr := objectDecoded(data, watch)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("errors differ: %v, decoder %v", err, wantErr)
		}
		if len(got) != len(want) {
			t.Fatalf("%d fields, decoder %d", len(got), len(want))
		}
		for name, v := range want {
			if !bytes.Equal(got[name], v) {
				t.Fatalf("field %q: %q, decoder %q", name, got[name], v)
			}
		}
	})
}
