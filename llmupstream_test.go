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
//
// Some model names change what it answers, for the tests of odd upstreams:
//
//	no-usage        answers without any usage (no usage object, no usage
//	                chunk, no prompt_eval_count/eval_count)
//	absurd-negative reports prompt tokens -5
//	absurd-huge     reports 1e12 completion tokens
//	upstream-error  answers 500 with an error body and no usage
//
// reported sums what the answers reported and the client could have read
// (odd reports are not added); a stream whose client went away stops, and
// reports nothing.
type llmUpstream struct {
	*httptest.Server
	gapNs     atomic.Int64
	calls     atomic.Int64
	mu        sync.Mutex
	reported  int64 // tokens reported in all answers (sane reports only)
	lastUsage bool  // whether the last OpenAI request asked for usage
	lastBody  []byte
	// lastPrompt and lastCompletion are the last sane report.
	lastPrompt, lastCompletion int64
	// cut counts streams that stopped because the client went away.
	cut atomic.Int64
	// inflight is the requests being answered; maxInflight the most at once.
	inflight, maxInflight atomic.Int64
}

func newLLMUpstream(t *testing.T, gap time.Duration) *llmUpstream {
	u := &llmUpstream{}
	u.gapNs.Store(int64(gap))
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

// setGap changes the pause between streamed chunks.
func (u *llmUpstream) setGap(gap time.Duration) { u.gapNs.Store(int64(gap)) }

// total is what all answers reported so far.
func (u *llmUpstream) total() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reported
}

// last is the last sane report: prompt and completion tokens.
func (u *llmUpstream) last() (int64, int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastPrompt, u.lastCompletion
}

func (u *llmUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	n := u.inflight.Add(1)
	defer u.inflight.Add(-1)
	for m := u.maxInflight.Load(); n > m && !u.maxInflight.CompareAndSwap(m, n); m = u.maxInflight.Load() {
	}
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
	// What the answer reports, which odd models change.
	repPrompt, repCompletion, withUsage, sane := prompt, completion, true, true
	switch req.Model {
	case "no-usage":
		withUsage, sane = false, false
	case "ignores-limit":
		// Streams 300 chunks whatever the limit, and reports nothing.
		completion, withUsage, sane = 300, false, false
	case "absurd-negative":
		repPrompt, sane = -5, false
	case "absurd-huge":
		repCompletion, sane = 1_000_000_000_000, false
	case "upstream-error":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error":{"message":"the model crashed","type":"server_error","param":null,"code":null}}`)
		return
	}
	u.mu.Lock()
	u.lastBody = body
	u.mu.Unlock()
	// flush sends what was written and pauses; false when the client went
	// away, which ends the stream without a report.
	flush := func() bool {
		w.(http.Flusher).Flush()
		gap := time.Duration(u.gapNs.Load())
		if gap <= 0 {
			return r.Context().Err() == nil
		}
		select {
		case <-time.After(gap):
			return true
		case <-r.Context().Done():
			u.cut.Add(1)
			return false
		}
	}
	report := func() {
		if !sane {
			return
		}
		u.mu.Lock()
		u.reported += prompt + completion
		u.lastPrompt, u.lastCompletion = prompt, completion
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
		usageObject := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, repPrompt, repCompletion, repPrompt+repCompletion)
		if !stream {
			w.Header().Set("Content-Type", "application/json")
			report()
			usage := ""
			if withUsage {
				usage = `,"usage":` + usageObject
			}
			fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}]%s}`,
				req.Model, strings.TrimSpace(strings.Repeat("tok ", int(completion))), usage)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		usageField := ""
		if includeUsage {
			usageField = `,"usage":null`
		}
		for i := int64(0); i < completion; i++ {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]%s}\n\n", req.Model, usageField)
			if !flush() {
				return
			}
		}
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]%s}\n\n", req.Model, usageField)
		if includeUsage && withUsage {
			report()
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[],\"usage\":%s}\n\n", req.Model, usageObject)
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
		final := `,"done_reason":"stop","total_duration":1,"load_duration":1}`
		if withUsage {
			final = fmt.Sprintf(`,"done_reason":"stop","total_duration":1,"load_duration":1,"prompt_eval_count":%d,"prompt_eval_duration":1,"eval_count":%d,"eval_duration":1}`, repPrompt, repCompletion)
		}
		if !stream {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			report()
			fmt.Fprint(w, piece(strings.TrimSpace(strings.Repeat("tok ", int(completion))), true)+final)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := int64(0); i < completion; i++ {
			fmt.Fprint(w, piece("tok ", false)+"}\n")
			if !flush() {
				return
			}
		}
		report()
		fmt.Fprint(w, piece("", true)+final+"\n")
	default:
		http.NotFound(w, r)
	}
}
