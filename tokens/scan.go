package tokens

import (
	"bytes"
	"encoding/json"
	"sync"
)

// Bounds on what a Scanner keeps: the end of a plain answer (where both
// formats put their counts), and the longest streamed line it reads.
const (
	tailSize    = 64 << 10
	maxLineSize = 1 << 20
	// MaxReported is the most tokens one answer may report; more is taken
	// as absurd and not believed.
	MaxReported = 10_000_000
)

// Scanner reads the tokens an upstream reports as its answer passes to the
// client: the answer goes on unchanged and unbuffered, except that an
// OpenAI stream's usage chunk is held back when the client did not ask for
// it (Hide).
type Scanner struct {
	format Format
	stream bool
	hide   bool

	line []byte // the start of a line not yet ended, while streaming
	long bool   // the current line is past maxLineSize: passed on unread
	skip bool   // the blank line after a hidden chunk is hidden too
	tail []byte // the end of a plain answer
	out  []byte // what Feed returns while hiding, reused

	prompt, completion int64
	reported           bool
	absurd             bool
	chunks             int64 // content events seen in a stream
	// lifecycle: the last "event:" line named a Responses API event that
	// carries no content (response.created, ….done): its data is not a
	// content chunk.
	lifecycle bool
}

// NewScanner reads an answer in format f; stream says whether it is an
// event stream (OpenAI) or NDJSON (Ollama) rather than one JSON document;
// hide drops OpenAI's usage-only chunks from the stream.
func NewScanner(f Format, stream, hide bool) *Scanner {
	s := scanners.Get().(*Scanner)
	line, tail, out := s.line[:0], s.tail[:0], s.out[:0]
	*s = Scanner{format: f, stream: stream, hide: hide && stream && f == OpenAI, line: line, tail: tail, out: out}
	return s
}

// scanners keeps scanners, and the buffers they grew, for the next answers.
var scanners = sync.Pool{New: func() any { return new(Scanner) }}

// Release gives the scanner back for another answer; it must not be used
// after. Buffers grown past maxLineSize are dropped rather than kept.
func (s *Scanner) Release() {
	if cap(s.line) > maxLineSize || cap(s.out) > maxLineSize {
		s.line, s.out = nil, nil
	}
	scanners.Put(s)
}

// Feed reads p and returns the bytes to send to the client now: p itself,
// unless chunks are hidden, in which case complete lines are sent and the
// start of a line is held until it ends.
func (s *Scanner) Feed(p []byte) []byte {
	if !s.stream {
		s.keepTail(p)
		return p
	}
	if !s.hide {
		s.readLines(p, nil)
		return p
	}
	// The bytes to send are written before the next Feed, so one buffer
	// serves every call.
	out := s.out[:0]
	s.readLines(p, &out)
	s.out = out
	return out
}

// keepTail keeps the last tailSize bytes of a plain answer.
func (s *Scanner) keepTail(p []byte) {
	if len(p) >= tailSize {
		s.tail = append(s.tail[:0], p[len(p)-tailSize:]...)
		return
	}
	if over := len(s.tail) + len(p) - tailSize; over > 0 {
		s.tail = append(s.tail[:0], s.tail[over:]...)
	}
	s.tail = append(s.tail, p...)
}

// readLines reads every line p ends; out, when not nil, gets what to pass on.
func (s *Scanner) readLines(p []byte, out *[]byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.carry(p, out)
			return
		}
		chunk := p[:i+1]
		p = p[i+1:]
		if s.long {
			// The end of a line too long to read: passed on as it came.
			s.long = false
			if out != nil {
				*out = append(*out, chunk...)
			}
			continue
		}
		line := chunk
		if len(s.line) > 0 {
			s.line = append(s.line, chunk...)
			line = s.line
		}
		keep := s.readLine(line)
		if out != nil && keep {
			*out = appendWithoutNullUsage(*out, line)
		}
		s.line = s.line[:0]
	}
}

// carry holds the start of a line until it ends (or passes it on when it
// grows past maxLineSize).
func (s *Scanner) carry(p []byte, out *[]byte) {
	if s.long {
		if out != nil {
			*out = append(*out, p...)
		}
		return
	}
	if len(s.line)+len(p) > maxLineSize {
		if out != nil {
			*out = append(*out, s.line...)
			*out = append(*out, p...)
		}
		s.line, s.long = s.line[:0], true
		return
	}
	s.line = append(s.line, p...)
	if out == nil {
		return // a copy for reading only; p itself was passed on
	}
}

// readLine reads one whole line (with its newline) and reports whether it
// goes on to the client.
func (s *Scanner) readLine(line []byte) bool {
	body := bytes.TrimRight(line, "\r\n")
	if len(body) == 0 {
		if s.skip {
			s.skip = false
			return false
		}
		return true
	}
	s.skip = false
	switch s.format {
	case OpenAI:
		data, ok := bytes.CutPrefix(body, []byte("data:"))
		if !ok {
			if name, ok := bytes.CutPrefix(body, []byte("event:")); ok {
				name = bytes.TrimSpace(name)
				s.lifecycle = bytes.HasPrefix(name, []byte("response.")) && !bytes.HasSuffix(name, []byte(".delta"))
			}
			return true
		}
		lifecycle := s.lifecycle
		s.lifecycle = false
		hasUsage := s.readOpenAIUsage(data)
		if hasUsage && usageOnly(data) {
			if s.hide {
				s.skip = true
				return false
			}
			return true
		}
		if !lifecycle && !bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
			s.chunks++
		}
	case Ollama:
		s.chunks++
		if bytes.Contains(body, []byte(`"done"`)) {
			s.readOllama(body, true)
		}
	}
	return true
}

// usageOnly reports whether an OpenAI chunk carries nothing but usage: the
// extra chunk include_usage adds, with no choices.
func usageOnly(data []byte) bool {
	i := bytes.Index(data, []byte(`"choices"`))
	if i < 0 {
		return true
	}
	rest := bytes.TrimLeft(data[i+len(`"choices"`):], " \t")
	rest, ok := bytes.CutPrefix(rest, []byte(":"))
	return ok && bytes.HasPrefix(bytes.TrimLeft(rest, " \t"), []byte("[]"))
}

// readOpenAIUsage reads a "usage" object from JSON text, when it has one.
func (s *Scanner) readOpenAIUsage(text []byte) bool {
	// Most chunks have no usage: a forward search (vectorized) says so
	// faster than the backward one.
	i := bytes.Index(text, []byte(`"usage"`))
	if i < 0 {
		return false
	}
	i += bytes.LastIndex(text[i:], []byte(`"usage"`))
	rest := bytes.TrimLeft(text[i+len(`"usage"`):], " \t\r\n")
	rest, ok := bytes.CutPrefix(rest, []byte(":"))
	rest = bytes.TrimLeft(rest, " \t\r\n")
	if !ok || len(rest) == 0 || rest[0] != '{' {
		return false // "usage": null, in the chunks before the last
	}
	var u struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		TotalTokens      *int64 `json:"total_tokens"`
		// The Responses API's names.
		InputTokens  *int64 `json:"input_tokens"`
		OutputTokens *int64 `json:"output_tokens"`
	}
	if json.NewDecoder(bytes.NewReader(rest)).Decode(&u) != nil {
		return false
	}
	if u.PromptTokens == nil && u.InputTokens != nil {
		u.PromptTokens, u.CompletionTokens = u.InputTokens, u.OutputTokens
	}
	if u.PromptTokens == nil {
		return false
	}
	completion := int64(0)
	switch {
	case u.CompletionTokens != nil:
		completion = *u.CompletionTokens
	case u.TotalTokens != nil:
		completion = *u.TotalTokens - *u.PromptTokens // embeddings report prompt and total
	}
	s.report(*u.PromptTokens, completion)
	return true
}

// readOllama reads the counts of Ollama's last object: the one with
// "done": true in a stream (or a chat/generate answer); a plain answer of
// another endpoint (/api/embed) reports prompt_eval_count without "done".
func (s *Scanner) readOllama(text []byte, needDone bool) {
	var o struct {
		Done            bool   `json:"done"`
		PromptEvalCount *int64 `json:"prompt_eval_count"`
		EvalCount       *int64 `json:"eval_count"`
	}
	if json.Unmarshal(text, &o) != nil {
		// The end of an answer too long to keep whole: its last fields.
		o.Done = valueAfter(text, `"done"`) == "true"
		if n, ok := numberAfter(text, `"prompt_eval_count"`); ok {
			o.PromptEvalCount = &n
		}
		if n, ok := numberAfter(text, `"eval_count"`); ok {
			o.EvalCount = &n
		}
	}
	if (needDone && !o.Done) || (o.PromptEvalCount == nil && o.EvalCount == nil) {
		return
	}
	var prompt, completion int64
	if o.PromptEvalCount != nil {
		prompt = *o.PromptEvalCount
	}
	if o.EvalCount != nil {
		completion = *o.EvalCount
	}
	s.report(prompt, completion)
}

func (s *Scanner) report(prompt, completion int64) {
	if prompt < 0 || completion < 0 || prompt > MaxReported || completion > MaxReported || prompt+completion > MaxReported {
		s.absurd = true
		return
	}
	s.prompt, s.completion, s.reported = prompt, completion, true
}

// Finish ends the answer: it returns what a hidden stream still holds (a
// last line without its newline) and reads a plain answer's counts.
func (s *Scanner) Finish() []byte {
	if !s.stream {
		text := s.tail
		if s.format == OpenAI {
			s.readOpenAIUsage(text)
		} else {
			s.readOllama(bytes.TrimSpace(text), false)
		}
		return nil
	}
	rest := s.line
	if len(rest) > 0 && !s.long {
		keep := s.readLine(append(rest, '\n'))
		s.line = s.line[:0]
		if s.hide {
			if keep {
				return rest
			}
			return nil
		}
	}
	return nil
}

// Usage is what the answer reported: prompt and completion tokens, and
// whether it reported any (a report with absurd numbers is not one).
func (s *Scanner) Usage() (prompt, completion int64, ok bool) {
	return s.prompt, s.completion, s.reported
}

// Chunks is how many content events a stream passed (OpenAI data events
// other than usage, [DONE] and the Responses API's events around the
// content, such as response.created; Ollama lines): each carried at least one
// token, so it is a floor for an answer cut before its report.
func (s *Scanner) Chunks() int64 { return s.chunks }

// Absurd reports whether the answer reported impossible numbers (negative,
// or over MaxReported), which were not believed.
func (s *Scanner) Absurd() bool { return s.absurd }

// valueAfter is the text of the scalar after the last `name:` in text.
func valueAfter(text []byte, name string) string {
	i := bytes.LastIndex(text, []byte(name))
	if i < 0 {
		return ""
	}
	rest := bytes.TrimLeft(text[i+len(name):], " \t\r\n")
	rest, ok := bytes.CutPrefix(rest, []byte(":"))
	if !ok {
		return ""
	}
	rest = bytes.TrimLeft(rest, " \t\r\n")
	end := bytes.IndexAny(rest, ",}] \t\r\n")
	if end < 0 {
		end = len(rest)
	}
	return string(rest[:end])
}

func numberAfter(text []byte, name string) (int64, bool) {
	var n int64
	v := valueAfter(text, name)
	if v == "" || json.Unmarshal([]byte(v), &n) != nil {
		return 0, false
	}
	return n, true
}

// appendWithoutNullUsage appends an OpenAI stream line without the
// "usage":null that include_usage adds to every chunk, so that a client
// that did not ask for usage gets the chunks it would have got.
func appendWithoutNullUsage(out, line []byte) []byte {
	for {
		i := bytes.Index(line, []byte(`"usage"`))
		if i < 0 {
			return append(out, line...)
		}
		// `, "usage" : null`, in any spacing, is cut with its comma.
		end := i + len(`"usage"`)
		rest := bytes.TrimLeft(line[end:], " \t")
		if after, ok := bytes.CutPrefix(rest, []byte(":")); ok {
			rest = bytes.TrimLeft(after, " \t")
			if after, ok := bytes.CutPrefix(rest, []byte("null")); ok {
				start := i
				for start > 0 && (line[start-1] == ' ' || line[start-1] == '\t') {
					start--
				}
				if start > 0 && line[start-1] == ',' {
					out = append(out, line[:start-1]...)
					line = after
					continue
				}
			}
		}
		out = append(out, line[:end]...)
		line = line[end:]
	}
}
