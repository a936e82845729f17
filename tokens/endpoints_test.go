package tokens

import (
	"strings"
	"testing"
)

func TestTakesStreamOptions(t *testing.T) {
	for path, want := range map[string]bool{
		"/v1/chat/completions":                         true,
		"/v1/completions":                              true,
		"/openai/deployments/gpt4/chat/completions":    true,
		"/v1/chat/completions/":                        true,
		"/v1/responses":                                false,
		"/v1/embeddings":                               false,
		"/api/chat":                                    false,
		"/v1/chat/completions/chatcmpl-1/messages":     false,
		"/v1/responses/resp_1/input_items":             false,
		"/v1/audio/transcriptions":                     false,
		"/openai/deployments/x/completions-not-really": false,
	} {
		if got := TakesStreamOptions(path); got != want {
			t.Errorf("TakesStreamOptions(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestReports(t *testing.T) {
	for _, c := range []struct {
		f            Format
		method, path string
		want         bool
	}{
		{OpenAI, "POST", "/v1/chat/completions", true},
		{OpenAI, "POST", "/v1/completions", true},
		{OpenAI, "POST", "/v1/responses", true},
		{OpenAI, "POST", "/v1/embeddings", true},
		{OpenAI, "POST", "/openai/deployments/gpt4/chat/completions", true},
		{OpenAI, "GET", "/v1/models", false},
		{OpenAI, "GET", "/v1/responses", false},
		{OpenAI, "POST", "/v1/moderations", false},
		{OpenAI, "POST", "/v1/images/generations", false},
		{Ollama, "POST", "/api/chat", true},
		{Ollama, "POST", "/api/generate", true},
		{Ollama, "POST", "/api/embed", true},
		{Ollama, "POST", "/api/embeddings", false}, // the legacy endpoint reports no counts
		{Ollama, "POST", "/api/pull", false},
		{Ollama, "GET", "/api/tags", false},
		{Ollama, "POST", "/v1/chat/completions", false}, // Ollama's OpenAI endpoints belong on a tokens openai route
	} {
		if got := Reports(c.f, c.method, c.path); got != c.want {
			t.Errorf("Reports(%s, %s %s) = %v, want %v", c.f, c.method, c.path, got, c.want)
		}
	}
}

// responsesStream is the Responses API's event stream, as api.openai.com
// sends it: an "event:" line and a "data:" line per event, the usage in
// response.completed's response.
const responsesStream = "event: response.created\n" +
	"data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n" +
	"event: response.output_item.added\n" +
	"data: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[]}}\n\n" +
	"event: response.output_text.delta\n" +
	"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hel\"}\n\n" +
	"event: response.output_text.delta\n" +
	"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"lo\"}\n\n" +
	"event: response.output_text.done\n" +
	"data: {\"type\":\"response.output_text.done\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"text\":\"Hello\"}\n\n" +
	"event: response.completed\n" +
	"data: {\"type\":\"response.completed\",\"sequence_number\":5,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hello\"}]}],\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":11}}}\n\n"

// TestScanResponsesStream: the Responses API's stream passes byte for byte,
// its usage is read from response.completed, and only its deltas count as
// content chunks (the floor of a cut stream).
func TestScanResponsesStream(t *testing.T) {
	for _, n := range []int{1, 7, 64, 1 << 20} {
		s := NewScanner(OpenAI, true, false)
		if got := feed(s, responsesStream, n); got != responsesStream {
			t.Fatalf("n=%d: the stream changed:\n%s", n, got)
		}
		if p, c, ok := s.Usage(); !ok || p != 9 || c != 2 {
			t.Errorf("n=%d: usage %d %d %v, want 9 2", n, p, c, ok)
		}
		if s.Chunks() != 2 {
			t.Errorf("n=%d: %d content chunks, want 2 (the deltas)", n, s.Chunks())
		}
		s.Release()
	}
	// Cut after the deltas: no report, two chunks.
	cut := responsesStream[:strings.Index(responsesStream, "event: response.output_text.done")]
	s := NewScanner(OpenAI, true, false)
	feed(s, cut, 5)
	if _, _, ok := s.Usage(); ok || s.Chunks() != 2 {
		t.Errorf("cut: reported %v, %d chunks, want none and 2", ok, s.Chunks())
	}
}

func BenchmarkScanResponsesDelta(b *testing.B) {
	chunk := []byte("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" word\"}\n\n")
	s := NewScanner(OpenAI, true, false)
	b.ReportAllocs()
	for b.Loop() {
		s.Feed(chunk)
	}
}
