package apikey

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// llmUpstream is a real HTTP server that speaks OpenAI's chat completions
// (/v1/chat/completions, streamed or not, with or without include_usage) and
// Ollama's /api/chat and /api/generate (NDJSON streams or one object), and
// reports usage the way each does. It answers completion tokens words of
// "tok", at most max_tokens/num_predict (default 5), and counts prompt
// tokens as the body's bytes / 8, so reports are below the gateway's
// estimate; gap spaces the streamed chunks.
type llmUpstream struct {
	*httptest.Server
	gap       time.Duration
	calls     atomic.Int64
	mu        sync.Mutex
	reported  int64 // tokens reported in all answers
	lastUsage bool  // whether the last OpenAI request asked for usage
	lastBody  []byte
}

func newLLMUpstream(t *testing.T, gap time.Duration) *llmUpstream {
	u := &llmUpstream{gap: gap}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *llmUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Model         string `json:"model"`
		MaxTokens     int64  `json:"max_tokens"`
		Stream        *bool  `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		Options *struct {
			NumPredict int64 `json:"num_predict"`
		} `json:"options"`
	}
	json.Unmarshal(body, &req)
	prompt := int64(len(body) / 8)
	completion := int64(5)
	if req.MaxTokens > 0 {
		completion = min(completion, req.MaxTokens)
	}
	if req.Options != nil && req.Options.NumPredict > 0 {
		completion = min(completion, req.Options.NumPredict)
	}
	u.mu.Lock()
	u.lastBody = body
	u.mu.Unlock()
	flush := func() {
		w.(http.Flusher).Flush()
		if u.gap > 0 {
			time.Sleep(u.gap)
		}
	}
	report := func() {
		u.mu.Lock()
		u.reported += prompt + completion
		u.mu.Unlock()
	}
	switch {
	case r.URL.Path == "/v1/models":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"llama3","object":"model","created":1,"owned_by":"test"}]}`)
	case strings.HasSuffix(r.URL.Path, "/chat/completions"):
		stream := req.Stream != nil && *req.Stream
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		u.mu.Lock()
		u.lastUsage = includeUsage
		u.mu.Unlock()
		if !stream {
			w.Header().Set("Content-Type", "application/json")
			report()
			fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
				req.Model, strings.TrimSpace(strings.Repeat("tok ", int(completion))), prompt, completion, prompt+completion)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		usageField := ""
		if includeUsage {
			usageField = `,"usage":null`
		}
		for i := int64(0); i < completion; i++ {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]%s}\n\n", req.Model, usageField)
			flush()
		}
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]%s}\n\n", req.Model, usageField)
		if includeUsage {
			report()
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", req.Model, prompt, completion, prompt+completion)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	case r.URL.Path == "/api/chat" || r.URL.Path == "/api/generate":
		stream := req.Stream == nil || *req.Stream
		chat := r.URL.Path == "/api/chat"
		piece := func(text string, done bool) string {
			if chat {
				return fmt.Sprintf(`{"model":%q,"created_at":"2026-11-27T00:00:00Z","message":{"role":"assistant","content":%q},"done":%v`, req.Model, text, done)
			}
			return fmt.Sprintf(`{"model":%q,"created_at":"2026-11-27T00:00:00Z","response":%q,"done":%v`, req.Model, text, done)
		}
		final := fmt.Sprintf(`,"done_reason":"stop","total_duration":1,"load_duration":1,"prompt_eval_count":%d,"prompt_eval_duration":1,"eval_count":%d,"eval_duration":1}`, prompt, completion)
		report()
		if !stream {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			fmt.Fprint(w, piece(strings.TrimSpace(strings.Repeat("tok ", int(completion))), true)+final)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := int64(0); i < completion; i++ {
			fmt.Fprint(w, piece("tok ", false)+"}\n")
			flush()
		}
		fmt.Fprint(w, piece("", true)+final+"\n")
	default:
		http.NotFound(w, r)
	}
}
