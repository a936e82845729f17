package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, c := range []struct {
		f    Format
		body string
		want Request
	}{
		{OpenAI, `{"model":"gpt-4o","messages":[],"max_tokens":100}`, Request{Model: "gpt-4o", MaxTokens: 100, Copies: 1, Models: []string{"gpt-4o"}}},
		{OpenAI, `{"model":"o1","max_completion_tokens":50,"max_tokens":9,"stream":true}`, Request{Model: "o1", MaxTokens: 50, Stream: true, Copies: 1, Models: []string{"o1"}}},
		{OpenAI, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, Request{Model: "m", Stream: true, IncludeUsage: true, Copies: 1, Models: []string{"m"}}},
		{OpenAI, `{"model":"m","max_tokens":-1}`, Request{Model: "m", Copies: 1, Models: []string{"m"}}},
		{OpenAI, ` {"messages":[]}`, Request{Copies: 1}},
		{Ollama, `{"model":"llama3","messages":[]}`, Request{Model: "llama3", Stream: true, Copies: 1, Models: []string{"llama3"}}},
		{Ollama, `{"model":"llama3","stream":false,"options":{"num_predict":64}}`, Request{Model: "llama3", MaxTokens: 64, Copies: 1, Models: []string{"llama3"}}},
		{Ollama, `{"model":"llama3","options":{"num_predict":-1}}`, Request{Model: "llama3", Stream: true, Copies: 1, Models: []string{"llama3"}}},
		{OpenAI, `{"model":"m","max_completion_tokens":1,"max_tokens":2900}`, Request{Model: "m", MaxTokens: 2900, Copies: 1, Models: []string{"m"}}},
		{OpenAI, `{"model":"m","max_output_tokens":300}`, Request{Model: "m", MaxTokens: 300, Copies: 1, Models: []string{"m"}}},
		{OpenAI, `{"model":"m","max_tokens":10,"n":100,"best_of":3}`, Request{Model: "m", MaxTokens: 10, Copies: 100, Models: []string{"m"}}},
		{OpenAI, `{"model":"m","Messages":[],"metadata":{"Model":"x"}}`, Request{Model: "m", Copies: 1, Models: []string{"m"}}},
	} {
		got, err := ParseRequest(c.f, []byte(c.body))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %s: got %+v, %v; want %+v", c.f, c.body, got, err, c.want)
		}
	}
	for _, body := range []string{``, `not json`, `[1,2]`, `{"model": 7}`, `{"stream":"yes"}`, `{"max_tokens":"many"}`, `{"model":"m"`,
		`{"model":"m"} {}`, `{"max_tokens":1e3}`, `{"stream_options":5}`} {
		if _, err := ParseRequest(OpenAI, []byte(body)); !errors.Is(err, ErrNotJSON) {
			t.Errorf("%q: got %v, want ErrNotJSON", body, err)
		}
	}
	// Fields another parser could read differently are refused.
	for _, body := range []string{`{"model":"gpt-4o","Model":"gpt-4o-mini"}`, `{"model":"a","model":"b"}`, `{"MAX_TOKENS":1}`,
		`{"stream":true,"Stream_options":{"include_usage":true}}`, `{"stream_options":{"Include_Usage":true}}`,
		`{"options":{"NUM_PREDICT":1}}`, `{"max_tokens":1,"max_tokens":5000}`, `{"ſtream":true}`} {
		if _, err := ParseRequest(Ollama, []byte(body)); !errors.Is(err, ErrAmbiguous) {
			t.Errorf("%q: got %v, want ErrAmbiguous", body, err)
		}
	}
	// The error never quotes the body.
	_, err := ParseRequest(OpenAI, []byte(`{"model": ["DEV_API_secret"]}`))
	if err == nil || strings.Contains(err.Error(), "DEV_API") {
		t.Errorf("error %v", err)
	}
}

// TestParseRequestModels: every field that names a model is read, on every
// endpoint; one given twice or in another case is ambiguous.
func TestParseRequestModels(t *testing.T) {
	for _, c := range []struct {
		f       Format
		body    string
		models  []string
		unnamed bool
	}{
		{Ollama, `{"model":"llama3-alias","from":"gpt-4o"}`, []string{"llama3-alias", "gpt-4o"}, false},
		{Ollama, `{"model":"a","modelfile":"FROM gpt-4o\nADAPTER ./x.gguf\r\n\tfrom  \"b c\"\nFROMAGE x\nPARAMETER from 1"}`, []string{"a", "gpt-4o", "b c"}, false},
		{Ollama, `{"model":"a","files":{"m.gguf":"sha256:00"}}`, []string{"a"}, true},
		{Ollama, `{"model":"a","files":{}}`, []string{"a"}, false},
		{Ollama, `{"model":"a","files":["m.gguf"]}`, []string{"a"}, true},
		{Ollama, `{"source":"x","destination":"y"}`, []string{"x", "y"}, false},
		{Ollama, `{"name":"x"}`, []string{"x"}, false},
		{OpenAI, `{"name":"my assistant","model":"m"}`, []string{"m"}, false},
		{OpenAI, `{"from":"x","source":"y","destination":"z","modelfile":"FROM w"}`, []string{"x", "y", "z", "w"}, false},
		{OpenAI, `{"model":"m","tools":[{"type":"image_generation","model":"gpt-image-1"},{"type":"function","name":"f"},"x",{"model":null}]}`, []string{"m", "gpt-image-1"}, false},
		{OpenAI, `{"session":{"type":"realtime","model":"r","audio":{"input":{"transcription":{"model":"w"}}}}}`, []string{"r", "w"}, false},
		{OpenAI, `{"model":"r","input_audio_transcription":{"model":"w"}}`, []string{"r", "w"}, false},
		{OpenAI, `{"metadata":{"model":"x"},"session":null,"tools":null}`, nil, false},
	} {
		r, err := ParseRequest(c.f, []byte(c.body))
		if err != nil || !reflect.DeepEqual(r.Models, c.models) || r.Unnamed != c.unnamed {
			t.Errorf("%s %s: models %q, unnamed %v, %v; want %q, %v", c.f, c.body, r.Models, r.Unnamed, err, c.models, c.unnamed)
		}
	}
	for _, body := range []string{`{"model":"a","From":"b"}`, `{"source":"a","source":"b"}`, `{"MODELFILE":"FROM x"}`,
		`{"tools":[{"model":"a","Model":"b"}]}`, `{"session":{"Model":"b"}}`, `{"session":{"audio":{"Input":{}}}}`, `{"Files":{}}`} {
		if _, err := ParseRequest(Ollama, []byte(body)); !errors.Is(err, ErrAmbiguous) {
			t.Errorf("%s: got %v, want ErrAmbiguous", body, err)
		}
	}
	for _, body := range []string{`{"from":5}`, `{"tools":{"model":"x"}}`, `{"tools":[{"model":7}]}`, `{"modelfile":["FROM x"]}`} {
		if _, err := ParseRequest(Ollama, []byte(body)); !errors.Is(err, ErrNotJSON) {
			t.Errorf("%s: got %v, want ErrNotJSON", body, err)
		}
	}
}

func TestAskUsage(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"<hi>"}]}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}`,
		`{"model":"m","stream":true,"stream_options":null}`,
	} {
		out, err := AskUsage([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseRequest(OpenAI, out)
		if err != nil || !r.IncludeUsage || r.Model != "m" || !r.Stream {
			t.Errorf("%s → %s: %+v %v", body, out, r, err)
		}
		var before, after map[string]any
		json.Unmarshal([]byte(body), &before)
		json.Unmarshal(out, &after)
		for k, v := range before {
			if k != "stream_options" && !jsonEqual(v, after[k]) {
				t.Errorf("%s: field %s changed to %v", body, k, after[k])
			}
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// feed passes an answer through a scanner in pieces of size n, as a
// network would cut it, and returns what the client got.
func feed(s *Scanner, answer string, n int) string {
	var out strings.Builder
	for i := 0; i < len(answer); i += n {
		out.Write(s.Feed([]byte(answer[i:min(i+n, len(answer))])))
	}
	out.Write(s.Finish())
	return out.String()
}

const openAIStream = "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n" +
	"data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n" +
	"data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}\n\n" +
	"data: [DONE]\n\n"

func TestScanOpenAIStream(t *testing.T) {
	for _, n := range []int{1, 7, 64, 1 << 20} {
		s := NewScanner(OpenAI, true, false)
		if got := feed(s, openAIStream, n); got != openAIStream {
			t.Fatalf("pieces of %d: the stream changed", n)
		}
		if p, c, ok := s.Usage(); !ok || p != 12 || c != 2 {
			t.Errorf("pieces of %d: usage %d %d %v", n, p, c, ok)
		}
		// Hidden: the client that did not ask never sees the usage chunk,
		// nor the "usage":null the others gained.
		s = NewScanner(OpenAI, true, true)
		got := feed(s, openAIStream, n)
		want := strings.Replace(openAIStream, "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}\n\n", "", 1)
		want = strings.ReplaceAll(want, `,"usage":null`, "")
		if got != want {
			t.Fatalf("pieces of %d, hidden: got %q", n, got)
		}
		if p, c, ok := s.Usage(); !ok || p != 12 || c != 2 {
			t.Errorf("pieces of %d, hidden: usage %d %d %v", n, p, c, ok)
		}
	}
}

func TestScanPlainAnswers(t *testing.T) {
	big := strings.Repeat("x", 3*tailSize)
	for _, c := range []struct {
		f        Format
		answer   string
		p, c     int64
		reported bool
	}{
		{OpenAI, `{"id":"1","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`, 9, 3, true},
		{OpenAI, `{"id":"1","choices":[{"message":{"content":"` + big + `"}}],"usage": {"prompt_tokens": 9, "completion_tokens": 30000}}`, 9, 30000, true},
		{OpenAI, `{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}`, 8, 0, true},
		{OpenAI, `{"id":"1","choices":[]}`, 0, 0, false},
		{OpenAI, `{"usage":{"prompt_tokens":-5,"completion_tokens":3}}`, 0, 0, false},
		{OpenAI, `{"usage":{"prompt_tokens":1,"completion_tokens":99999999999}}`, 0, 0, false},
		{Ollama, `{"model":"llama3","message":{"content":"hi"},"done":true,"prompt_eval_count":26,"eval_count":290}`, 26, 290, true},
		{Ollama, `{"model":"llama3","response":"` + big + `","done":true,"context":[1,2,3],"prompt_eval_count":26,"eval_count":5}`, 26, 5, true},
		{Ollama, `{"error":"model not found"}`, 0, 0, false},
	} {
		s := NewScanner(c.f, false, false)
		if got := feed(s, c.answer, 4096); got != c.answer {
			t.Fatalf("the answer changed")
		}
		p, comp, ok := s.Usage()
		if p != c.p || comp != c.c || ok != c.reported {
			t.Errorf("%s %.80s: got %d %d %v", c.f, c.answer, p, comp, ok)
		}
	}
}

func TestScanOllamaStream(t *testing.T) {
	stream := "{\"model\":\"llama3\",\"message\":{\"content\":\"He\"},\"done\":false}\n" +
		"{\"model\":\"llama3\",\"message\":{\"content\":\"llo\"},\"done\":false}\n" +
		"{\"model\":\"llama3\",\"message\":{\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":26,\"eval_count\":2}\n"
	for _, n := range []int{1, 13, 1 << 20} {
		s := NewScanner(Ollama, true, true) // hide means nothing for Ollama
		if got := feed(s, stream, n); got != stream {
			t.Fatal("the stream changed")
		}
		if p, c, ok := s.Usage(); !ok || p != 26 || c != 2 {
			t.Errorf("pieces of %d: %d %d %v", n, p, c, ok)
		}
	}
	// A stream cut before its last object reports nothing.
	s := NewScanner(Ollama, true, false)
	feed(s, stream[:len(stream)-40], 5)
	if _, _, ok := s.Usage(); ok {
		t.Error("a cut stream reported usage")
	}
}

// TestScanLongLines: a line past maxLineSize passes through whole, unread,
// while hiding, and the scanner keeps working after it.
func TestScanLongLines(t *testing.T) {
	long := "data: {\"x\":\"" + strings.Repeat("y", maxLineSize+10) + "\"}\n\n"
	stream := long + openAIStream
	s := NewScanner(OpenAI, true, true)
	got := feed(s, stream, 4096)
	if !strings.HasPrefix(got, long) || strings.Contains(got, "prompt_tokens") {
		t.Fatal("the long line was not passed on whole, or the usage chunk was not hidden")
	}
	if p, _, ok := s.Usage(); !ok || p != 12 {
		t.Error("usage after a long line was not read")
	}
}

func FuzzScanner(f *testing.F) {
	f.Add([]byte(openAIStream), uint8(3), true)
	f.Add([]byte(`{"usage":{"prompt_tokens":1}}`), uint8(1), false)
	f.Fuzz(func(t *testing.T, answer []byte, piece uint8, hide bool) {
		n := int(piece%64) + 1
		for _, f := range []Format{OpenAI, Ollama} {
			for _, stream := range []bool{false, true} {
				s := NewScanner(f, stream, hide)
				got := feed(s, string(answer), n)
				if !(stream && hide && f == OpenAI) && got != string(answer) {
					t.Fatalf("%s stream=%v changed the answer", f, stream)
				}
				if p, c, ok := s.Usage(); ok && (p < 0 || c < 0 || p+c > MaxReported) {
					t.Fatalf("absurd usage believed: %d %d", p, c)
				}
			}
		}
	})
}

func BenchmarkScanStreamChunk(b *testing.B) {
	chunk := []byte("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"}}],\"usage\":null}\n\n")
	for _, hide := range []bool{false, true} {
		name := "pass"
		if hide {
			name = "hide"
		}
		b.Run(name, func(b *testing.B) {
			s := NewScanner(OpenAI, true, hide)
			b.ReportAllocs()
			for b.Loop() {
				s.Feed(chunk)
			}
		})
	}
}

// FuzzParseRequest: any body either parses or is refused with ErrNotJSON;
// a body that parses can always be given include_usage, keeping its model.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","stream":true,"max_tokens":5}`))
	f.Add([]byte(`{"model":"m","stream_options":{"x":1},"options":{"num_predict":3}}`))
	f.Add([]byte(` {} `))
	f.Add([]byte(`{"model":"a","from":"b","modelfile":"FROM c\nfrom d","files":{"x":"y"}}`))
	f.Add([]byte(`{"source":"a","destination":"b","name":"c"}`))
	f.Add([]byte(`{"model":"m","tools":[{"type":"image_generation","model":"i"}],"session":{"model":"r","audio":{"input":{"transcription":{"model":"w"}}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, format := range []Format{OpenAI, Ollama} {
			r, err := ParseRequest(format, body)
			if err != nil {
				if !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrAmbiguous) {
					t.Fatalf("%v is neither ErrNotJSON nor ErrAmbiguous", err)
				}
				continue
			}
			if r.MaxTokens < 0 {
				t.Fatalf("negative max tokens %d", r.MaxTokens)
			}
			if r.Model != "" && (len(r.Models) == 0 || r.Models[0] != r.Model) {
				t.Fatalf("model %q is not first in %q", r.Model, r.Models)
			}
			out, err := AskUsage(body)
			if err != nil {
				continue // e.g. "stream_options" that is not an object
			}
			again, err := ParseRequest(OpenAI, out)
			if err != nil || !again.IncludeUsage || again.Model != r.Model || (format == OpenAI && !reflect.DeepEqual(again.Models, r.Models)) {
				t.Fatalf("AskUsage(%q) = %q: %+v %v", body, out, again, err)
			}
		}
	})
}

func TestScanFloorsAndShapes(t *testing.T) {
	// A stream cut before its usage: the content chunks passed are a floor.
	s := NewScanner(OpenAI, true, true)
	feed(s, strings.SplitAfter(openAIStream, "\n\n")[0]+strings.SplitAfter(openAIStream, "\n\n")[1], 9)
	if _, _, ok := s.Usage(); ok || s.Chunks() != 2 {
		t.Errorf("cut stream: reported %v, %d chunks, want none and 2", ok, s.Chunks())
	}
	// Python's json.dumps spacing: "usage": null is removed for hidden streams too.
	spaced := "data: {\"id\": \"1\", \"choices\": [{\"delta\": {\"content\": \"x\"}}], \"usage\": null}\n\n"
	s = NewScanner(OpenAI, true, true)
	if got := feed(s, spaced, 5); strings.Contains(got, "usage") || !strings.Contains(got, `"content": "x"`) {
		t.Errorf("spaced null usage: %q", got)
	}
	// The Responses API's usage names.
	s = NewScanner(OpenAI, false, false)
	feed(s, `{"id":"resp_1","output":[],"usage":{"input_tokens":7,"output_tokens":50,"total_tokens":57}}`, 100)
	if p, c, ok := s.Usage(); !ok || p != 7 || c != 50 {
		t.Errorf("responses usage: %d %d %v", p, c, ok)
	}
	// Ollama's /api/embed answers report prompt_eval_count without done.
	s = NewScanner(Ollama, false, false)
	feed(s, `{"model":"all-minilm","embeddings":[[0.1,0.2]],"total_duration":1,"load_duration":1,"prompt_eval_count":8}`, 100)
	if p, c, ok := s.Usage(); !ok || p != 8 || c != 0 {
		t.Errorf("embed usage: %d %d %v", p, c, ok)
	}
}

// BenchmarkParseRequest: a chat body of about 1 KiB, the model fields
// that are absent costing map lookups only.
func BenchmarkParseRequest(b *testing.B) {
	body := []byte(`{"model":"llama3","max_tokens":256,"stream":true,"messages":[{"role":"system","content":"` +
		strings.Repeat("be brief. ", 50) + `"},{"role":"user","content":"` + strings.Repeat("hello ", 80) + `"}]}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseRequest(OpenAI, body); err != nil {
			b.Fatal(err)
		}
	}
}
