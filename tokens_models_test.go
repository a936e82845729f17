package apikey

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestTokenModelSideDoors: a key limited to llama3* through a real Caddy
// with tokens routes in front of llmUpstream. Every field that names a
// model is checked (Ollama create's from and Modelfile FROM lines, copy's
// source and destination, the legacy name, the Responses API's tools,
// realtime sessions and client secrets, the realtime WebSocket upgrade's
// ?model=); a model the gateway cannot read (a multipart upload, a blob, a
// create from uploaded files) is refused to a restricted key; a name on
// another registry never matches a pattern without a host. Each is 403
// reason model before the upstream; allowed names still pass.
func TestTokenModelSideDoors(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := tokenKey(t, "k_llama3_only", func(r *keystore.Record) { r.Models = []string{"llama3*"}; r.Role = "admin" }) // admin: DELETE too
	open := tokenKey(t, "k_any_model", nil)
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record, open.Record), "")

	send := func(k gatewaytest.Key, method, path, contentType, body string, hdr ...string) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+k.Secret)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatalf("%s %s (key %s): %v", method, path, k.Record.ID, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	const jsonType = "application/json"
	const multipart = "multipart/form-data; boundary=XyZ"
	transcription := "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nllama3\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ--\r\n"

	refused := []struct{ what, method, path, contentType, body string }{
		{"create from another model", "POST", "/ollama/api/create", jsonType, `{"model":"llama3-alias","from":"gpt-4o"}`},
		{"create from a Modelfile", "POST", "/ollama/api/create", jsonType, `{"model":"llama3-alias","modelfile":"FROM gpt-4o"}`},
		{"create, a second FROM", "POST", "/ollama/api/create", jsonType, `{"model":"llama3-alias","modelfile":"FROM llama3\nADAPTER ./lora.gguf\n  from \"gpt-4o\"\n"}`},
		{"create from uploaded files", "POST", "/ollama/api/create", jsonType, `{"model":"llama3-alias","files":{"model.gguf":"sha256:0a1b"}}`},
		{"create, legacy name", "POST", "/ollama/api/create", jsonType, `{"name":"gpt-4o","from":"llama3"}`},
		{"copy from another model", "POST", "/ollama/api/copy", jsonType, `{"source":"gpt-4o","destination":"llama3-copy"}`},
		{"copy onto another model", "POST", "/ollama/api/copy", jsonType, `{"source":"llama3","destination":"gpt-4o"}`},
		{"pull from another registry", "POST", "/ollama/api/pull", jsonType, `{"model":"llama3.evil.example/x/big"}`},
		{"pull from another namespace", "POST", "/ollama/api/pull", jsonType, `{"model":"llama3-fan/big"}`},
		{"pull, legacy name", "POST", "/ollama/api/pull", jsonType, `{"name":"gpt-4o"}`},
		{"pull, model and name", "POST", "/ollama/api/pull", jsonType, `{"model":"llama3","name":"gpt-4o"}`},
		{"push", "POST", "/ollama/api/push", jsonType, `{"model":"gpt-4o"}`},
		{"delete", "DELETE", "/ollama/api/delete", jsonType, `{"name":"gpt-4o"}`},
		{"show", "POST", "/ollama/api/show", jsonType, `{"name":"gpt-4o"}`},
		{"embed", "POST", "/ollama/api/embed", jsonType, `{"model":"gpt-4o","input":"x"}`},
		{"embeddings", "POST", "/ollama/api/embeddings", jsonType, `{"model":"gpt-4o","prompt":"x"}`},
		{"a blob upload", "POST", "/ollama/api/blobs/sha256:0a1b", "application/octet-stream", "GGUF\x00\x01binary"},
		{"chat with a model of another registry", "POST", "/ollama/api/chat", jsonType, `{"model":"https://llama3.evil.example/x/big","messages":[]}`},
		{"responses, image tool", "POST", "/openai/v1/responses", jsonType, `{"model":"llama3","input":"x","tools":[{"type":"image_generation","model":"gpt-image-1"}]}`},
		{"realtime client secret", "POST", "/openai/v1/realtime/client_secrets", jsonType, `{"session":{"type":"realtime","model":"gpt-realtime"}}`},
		{"realtime client secret, transcription", "POST", "/openai/v1/realtime/client_secrets", jsonType, `{"session":{"type":"transcription","model":"llama3","audio":{"input":{"transcription":{"model":"whisper-1"}}}}}`},
		{"realtime session, transcription", "POST", "/openai/v1/realtime/sessions", jsonType, `{"model":"llama3","input_audio_transcription":{"model":"whisper-1"}}`},
		{"images", "POST", "/openai/v1/images/generations", jsonType, `{"model":"dall-e-3","prompt":"x"}`},
		{"speech", "POST", "/openai/v1/audio/speech", jsonType, `{"model":"tts-1","input":"x","voice":"alloy"}`},
		{"moderations with the default model", "POST", "/openai/v1/moderations", jsonType, `{"input":"x"}`},
		{"embeddings", "POST", "/openai/v1/embeddings", jsonType, `{"model":"text-embedding-3-small","input":"x"}`},
		{"a multipart transcription", "POST", "/openai/v1/audio/transcriptions", multipart, transcription},
	}
	for _, c := range refused {
		calls := up.calls.Load()
		status, body := send(key, c.method, c.path, c.contentType, c.body)
		if status != 403 || !strings.Contains(body, `"reason":"model"`) {
			t.Errorf("%s: %d %s, want 403 reason model", c.what, status, body)
		}
		if up.calls.Load() != calls {
			t.Errorf("%s: the upstream was called", c.what)
		}
	}

	// The realtime API's WebSocket upgrade names its model in the query.
	for _, q := range []string{"?model=gpt-realtime", "", "?model=llama3&model=gpt-realtime", "?mod%65l=gpt-realtime"} {
		calls := up.calls.Load()
		status, body := send(key, "GET", "/openai/v1/realtime"+q, "", "", "Connection", "Upgrade", "Upgrade", "websocket",
			"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		if status != 403 || !strings.Contains(body, `"reason":"model"`) || up.calls.Load() != calls {
			t.Errorf("realtime upgrade %q: %d %s (upstream called: %v), want 403 reason model", q, status, body, up.calls.Load() != calls)
		}
	}

	// A field given twice or in another case stays ambiguous (400 body).
	for _, body := range []string{`{"model":"llama3-alias","From":"gpt-4o"}`, `{"source":"llama3","source":"gpt-4o","destination":"llama3-b"}`} {
		calls := up.calls.Load()
		if status, got := send(key, "POST", "/ollama/api/create", jsonType, body); status != 400 || !strings.Contains(got, `"reason":"body"`) || up.calls.Load() != calls {
			t.Errorf("%s: %d %s, want 400 reason body", body, status, got)
		}
	}

	// Allowed names pass.
	allowed := []struct{ what, method, path, contentType, body string }{
		{"create from llama3", "POST", "/ollama/api/create", jsonType, `{"model":"llama3-alias","from":"llama3:8b"}`},
		{"create from a Modelfile with an adapter", "POST", "/ollama/api/create", jsonType, `{"model":"llama3-alias","modelfile":"FROM llama3\nADAPTER ./lora.gguf"}`},
		{"copy", "POST", "/ollama/api/copy", jsonType, `{"source":"registry.ollama.ai/library/llama3:latest","destination":"llama3-copy"}`},
		{"pull", "POST", "/ollama/api/pull", jsonType, `{"model":"library/llama3:70b"}`},
		{"show, legacy name", "POST", "/ollama/api/show", jsonType, `{"name":"llama3"}`},
		{"chat", "POST", "/ollama/api/chat", jsonType, `{"model":"llama3","messages":[],"stream":false}`},
		{"responses", "POST", "/openai/v1/responses", jsonType, `{"model":"llama3","input":"x","tools":[{"type":"function","name":"f"}]}`},
		{"embeddings", "POST", "/openai/v1/embeddings", jsonType, `{"model":"llama3-embed","input":"x"}`},
	}
	for _, c := range allowed {
		calls := up.calls.Load()
		status, body := send(key, c.method, c.path, c.contentType, c.body)
		if status == 403 || status == 400 || up.calls.Load() != calls+1 {
			t.Errorf("%s: %d %s, want it passed to the upstream", c.what, status, body)
		}
	}
	calls := up.calls.Load()
	status, body := send(key, "GET", "/openai/v1/realtime?model=llama3", "", "", "Connection", "Upgrade", "Upgrade", "websocket",
		"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if status == 403 || up.calls.Load() != calls+1 {
		t.Errorf("realtime upgrade for llama3: %d %s, want it passed to the upstream", status, body)
	}
	// A key without models is not held to any of this, though a route
	// with tokens still reads only JSON bodies.
	calls = up.calls.Load()
	if status, body := send(open, "POST", "/ollama/api/create", jsonType, `{"model":"x","from":"gpt-4o"}`); status == 403 || up.calls.Load() != calls+1 {
		t.Errorf("create, key without models: %d %s, want it passed to the upstream", status, body)
	}
	if status, body := send(open, "POST", "/openai/v1/audio/transcriptions", multipart, transcription); status != 400 || !strings.Contains(body, `"reason":"body"`) {
		t.Errorf("multipart, key without models: %d %s, want 400 reason body", status, body)
	}
}
