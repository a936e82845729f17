package apikey

import (
	"compress/gzip"
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

	"github.com/klauspost/compress/zstd"
)

// llmUpstream is a real HTTP server that speaks OpenAI's chat completions
// (/v1/chat/completions, streamed or not, with or without include_usage),
// legacy completions (/v1/completions, likewise), the Responses API
// (/v1/responses: one response object, or the event stream, each event an
// "event:" line and a "data:" line, the usage in response.completed's
// response) and embeddings (/v1/embeddings, float or base64), and Ollama's
// /api/chat and /api/generate (NDJSON streams or one object) and /api/embed,
// and reports usage the way each does. It answers completion tokens words of
// "tok", at most max_tokens/max_output_tokens/num_predict (default 5), and
// counts prompt tokens as the body's bytes / 8, so reports are below the
// gateway's estimate (embeddings report the prompt only); gap spaces the
// streamed chunks. With setEncoding it compresses its answers (see
// upstreamEncoding).
//
// Some model names change what it answers, for the tests of odd upstreams:
//
//	no-usage        answers without any usage (no usage object, no usage
//	                chunk, no prompt_eval_count/eval_count)
//	absurd-negative reports prompt tokens -5
//	absurd-huge     reports 1e12 completion tokens
//	upstream-error  answers 500 with an error body and no usage
//	long            streams (or answers) 300 tokens whatever the limit, and
//	                reports them at the end
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
	// encoding is how answers are compressed (an upstreamEncoding).
	encoding atomic.Int32
	// lastAccept is the Accept-Encoding of the last request; lastPath its path.
	lastAccept, lastPath string
	// chunksSent counts the chunks streamed (all streams).
	chunksSent atomic.Int64
	// holdAt, when above 0, makes a stream stop after that many chunks
	// until its client goes away (at most holdFor), so that a test can cut
	// it at a known point.
	holdAt atomic.Int64
}

// holdFor bounds a held stream's wait for its client to go away.
const holdFor = 10 * time.Second

// upstreamEncoding is how llmUpstream compresses its answers.
type upstreamEncoding int32

const (
	encodeNever     upstreamEncoding = iota
	encodeGzipAsked                  // gzip when the request's Accept-Encoding names it, as api.openai.com does
	encodeGzip                       // gzip always, whatever the request asked
	encodeZstd                       // zstd always
	encodeBrotli                     // labelled br always (the body is not really brotli: nothing here reads it)
)

// setEncoding changes how answers are compressed.
func (u *llmUpstream) setEncoding(e upstreamEncoding) { u.encoding.Store(int32(e)) }

// compressWriter compresses an answer as it is written; Flush flushes the
// compressor, so a compressed stream stays a stream.
type compressWriter struct {
	http.ResponseWriter
	enc interface {
		io.Writer
		Flush() error
		Close() error
	}
}

func (c *compressWriter) Write(p []byte) (int, error) { return c.enc.Write(p) }
func (c *compressWriter) Flush() {
	c.enc.Flush()
	c.ResponseWriter.(http.Flusher).Flush()
}

// compress wraps w as the encoding asks for this request; the returned
// func ends the compressed body.
func (u *llmUpstream) compress(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, func()) {
	e := upstreamEncoding(u.encoding.Load())
	switch {
	case e == encodeGzipAsked && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip"), e == encodeGzip:
		w.Header().Set("Content-Encoding", "gzip")
		cw := &compressWriter{ResponseWriter: w, enc: gzip.NewWriter(w)}
		return cw, func() { cw.enc.Close() }
	case e == encodeZstd:
		w.Header().Set("Content-Encoding", "zstd")
		zw, _ := zstd.NewWriter(w)
		cw := &compressWriter{ResponseWriter: w, enc: zw}
		return cw, func() { cw.enc.Close() }
	case e == encodeBrotli:
		w.Header().Set("Content-Encoding", "br")
	}
	return w, func() {}
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
	u.mu.Lock()
	u.lastAccept, u.lastPath = r.Header.Get("Accept-Encoding"), r.URL.Path
	u.mu.Unlock()
	w, end := u.compress(w, r)
	defer end()
	var req struct {
		Model           string `json:"model"`
		MaxTokens       int64  `json:"max_tokens"`
		MaxOutputTokens int64  `json:"max_output_tokens"`
		EncodingFormat  string `json:"encoding_format"`
		Stream          *bool  `json:"stream"`
		StreamOptions   *struct {
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
	if req.MaxOutputTokens > 0 {
		completion = min(completion, req.MaxOutputTokens)
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
	case "long":
		completion = 300
		repCompletion = completion
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
	sent := int64(0)
	flush := func() bool {
		u.chunksSent.Add(1)
		w.(http.Flusher).Flush()
		if sent++; sent == u.holdAt.Load() {
			select {
			case <-time.After(holdFor):
			case <-r.Context().Done():
				u.cut.Add(1)
				return false
			}
		}
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
	if strings.HasSuffix(r.URL.Path, "/embeddings") || strings.HasSuffix(r.URL.Path, "/api/embed") {
		completion, repCompletion = 0, 0
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
	case strings.HasSuffix(r.URL.Path, "/v1/completions"):
		u.legacyCompletions(w, req.Model, req.Stream != nil && *req.Stream,
			req.StreamOptions != nil && req.StreamOptions.IncludeUsage, completion, repPrompt, repCompletion, withUsage, report, flush)
	case strings.HasSuffix(r.URL.Path, "/v1/responses"):
		if req.StreamOptions != nil {
			// The real API refuses fields it does not know.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"message":"Unknown parameter: 'stream_options'.","type":"invalid_request_error","param":"stream_options","code":"unknown_parameter"}}`)
			return
		}
		u.responses(w, req.Model, req.Stream != nil && *req.Stream, completion, repPrompt, repCompletion, withUsage, report, flush)
	case strings.HasSuffix(r.URL.Path, "/v1/embeddings"):
		w.Header().Set("Content-Type", "application/json")
		report()
		vector := `[0.5,0.25]`
		if req.EncodingFormat == "base64" {
			vector = `"AAAAPwAAgD4="` // float32 0.5, 0.25, little endian
		}
		usage := ""
		if withUsage {
			usage = fmt.Sprintf(`,"usage":{"prompt_tokens":%d,"total_tokens":%d}`, repPrompt, repPrompt)
		}
		fmt.Fprintf(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":%s}],"model":%q%s}`, vector, req.Model, usage)
	case r.URL.Path == "/api/embed":
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		report()
		counts := ""
		if withUsage {
			counts = fmt.Sprintf(`,"prompt_eval_count":%d`, repPrompt)
		}
		fmt.Fprintf(w, `{"model":%q,"embeddings":[[0.5,0.25]],"total_duration":1,"load_duration":1%s}`, req.Model, counts)
	default:
		http.NotFound(w, r)
	}
}

// legacyCompletions answers /v1/completions: one text_completion object, or
// its chunks, with a last usage chunk when include_usage asks.
func (u *llmUpstream) legacyCompletions(w http.ResponseWriter, model string, stream, includeUsage bool, completion, repPrompt, repCompletion int64, withUsage bool, report func(), flush func() bool) {
	usageObject := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, repPrompt, repCompletion, repPrompt+repCompletion)
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		report()
		usage := ""
		if withUsage {
			usage = `,"usage":` + usageObject
		}
		fmt.Fprintf(w, `{"id":"cmpl-1","object":"text_completion","created":1,"model":%q,"choices":[{"text":%q,"index":0,"logprobs":null,"finish_reason":"stop"}]%s}`,
			model, strings.TrimSpace(strings.Repeat("tok ", int(completion))), usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for i := int64(0); i < completion; i++ {
		fmt.Fprintf(w, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":%q,\"choices\":[{\"text\":\"tok \",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n", model)
		if !flush() {
			return
		}
	}
	if includeUsage && withUsage {
		report()
		fmt.Fprintf(w, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":%q,\"choices\":[],\"usage\":%s}\n\n", model, usageObject)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// responses answers /v1/responses as the Responses API does: one response
// object, or its event stream (response.created, response.in_progress, the
// output item and content part added, a response.output_text.delta per
// token, their ….done events, and response.completed, whose response holds
// the usage: input_tokens, output_tokens).
func (u *llmUpstream) responses(w http.ResponseWriter, model string, stream bool, completion, repPrompt, repCompletion int64, withUsage bool, report func(), flush func() bool) {
	text := strings.Repeat("tok ", int(completion)) // the deltas, end to end
	usage := "null"
	if withUsage {
		usage = fmt.Sprintf(`{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":%d}`,
			repPrompt, repCompletion, repPrompt+repCompletion)
	}
	part := func(text string) string {
		return fmt.Sprintf(`{"type":"output_text","text":%q,"annotations":[]}`, text)
	}
	item := func(status, content string) string {
		return fmt.Sprintf(`{"id":"msg_1","type":"message","status":%q,"role":"assistant","content":[%s]}`, status, content)
	}
	response := func(status, output, usage string) string {
		return fmt.Sprintf(`{"id":"resp_1","object":"response","created_at":1,"status":%q,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":%q,"output":[%s],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":%s,"user":null,"metadata":{}}`,
			status, model, output, usage)
	}
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		report()
		fmt.Fprint(w, response("completed", item("completed", part(text)), usage))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	seq := 0
	event := func(name, fields string) {
		fmt.Fprintf(w, "event: %s\ndata: {\"type\":%q,\"sequence_number\":%d,%s}\n\n", name, name, seq, fields)
		seq++
	}
	event("response.created", `"response":`+response("in_progress", "", "null"))
	event("response.in_progress", `"response":`+response("in_progress", "", "null"))
	event("response.output_item.added", `"output_index":0,"item":`+item("in_progress", ""))
	event("response.content_part.added", `"item_id":"msg_1","output_index":0,"content_index":0,"part":`+part(""))
	if !flush() {
		return
	}
	for i := int64(0); i < completion; i++ {
		event("response.output_text.delta", `"item_id":"msg_1","output_index":0,"content_index":0,"delta":"tok "`)
		if !flush() {
			return
		}
	}
	event("response.output_text.done", fmt.Sprintf(`"item_id":"msg_1","output_index":0,"content_index":0,"text":%q`, text))
	event("response.content_part.done", `"item_id":"msg_1","output_index":0,"content_index":0,"part":`+part(text))
	event("response.output_item.done", `"output_index":0,"item":`+item("completed", part(text)))
	report()
	event("response.completed", `"response":`+response("completed", item("completed", part(text)), usage))
}
