// Package tokens reads what the gateway needs for token budgets from LLM
// traffic: the model and the most tokens a request may use from its JSON
// body, and the tokens the upstream reports using from its answer, streamed
// or not, as it passes.
package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Format is how an upstream speaks: which request fields ask for a limit and
// where its answer reports usage.
type Format uint8

// Formats.
const (
	// OpenAI: max_tokens or max_completion_tokens; usage.prompt_tokens and
	// usage.completion_tokens, in the answer or, streamed, in a last chunk
	// when stream_options.include_usage is set.
	OpenAI Format = iota + 1
	// Ollama: options.num_predict; prompt_eval_count and eval_count in the
	// answer or the last object of an NDJSON stream ("done": true).
	Ollama
)

// ParseFormat reads "openai" or "ollama".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "openai":
		return OpenAI, nil
	case "ollama":
		return Ollama, nil
	}
	return 0, fmt.Errorf("%q: want openai or ollama", s)
}

func (f Format) String() string {
	switch f {
	case OpenAI:
		return "openai"
	case Ollama:
		return "ollama"
	}
	return ""
}

// Request is what the gateway reads from an LLM request's body.
type Request struct {
	// Model is the model asked for; "" when the body names none.
	Model string
	// MaxTokens is the most completion tokens the request allows (OpenAI
	// max_tokens or max_completion_tokens, Ollama options.num_predict);
	// 0 when it sets no limit.
	MaxTokens int64
	// Stream is whether the answer is streamed. Ollama streams unless the
	// body says "stream": false; OpenAI only when it says "stream": true.
	Stream bool
	// IncludeUsage is OpenAI's stream_options.include_usage.
	IncludeUsage bool
}

// ErrNotJSON is wrapped by ParseRequest's errors for a body that is not a
// JSON object with fields of the expected types.
var ErrNotJSON = errors.New("the request body is not a JSON object")

// ParseRequest reads a request body in format f.
func ParseRequest(f Format, body []byte) (Request, error) {
	var b struct {
		Model               json.RawMessage `json:"model"`
		MaxTokens           *int64          `json:"max_tokens"`
		MaxCompletionTokens *int64          `json:"max_completion_tokens"`
		Stream              *bool           `json:"stream"`
		StreamOptions       *struct {
			IncludeUsage *bool `json:"include_usage"`
		} `json:"stream_options"`
		Options *struct {
			NumPredict *int64 `json:"num_predict"`
		} `json:"options"`
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Request{}, ErrNotJSON
	}
	if err := json.Unmarshal(trimmed, &b); err != nil {
		return Request{}, fmt.Errorf("%w: %s", ErrNotJSON, describe(err))
	}
	var r Request
	if len(b.Model) > 0 && string(b.Model) != "null" {
		if err := json.Unmarshal(b.Model, &r.Model); err != nil {
			return Request{}, fmt.Errorf("%w: \"model\" is not a string", ErrNotJSON)
		}
	}
	switch f {
	case OpenAI:
		for _, v := range []*int64{b.MaxCompletionTokens, b.MaxTokens} {
			if v != nil && *v > 0 {
				r.MaxTokens = *v
				break
			}
		}
		r.Stream = b.Stream != nil && *b.Stream
		r.IncludeUsage = b.StreamOptions != nil && b.StreamOptions.IncludeUsage != nil && *b.StreamOptions.IncludeUsage
	case Ollama:
		// num_predict -1 (or -2) means "until done": no limit.
		if b.Options != nil && b.Options.NumPredict != nil && *b.Options.NumPredict > 0 {
			r.MaxTokens = *b.Options.NumPredict
		}
		r.Stream = b.Stream == nil || *b.Stream
	}
	return r, nil
}

// describe names a JSON error without quoting the body (which may hold
// anything, secrets included).
func describe(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("%q is a %s, not a %s", typeErr.Field, typeErr.Value, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("invalid JSON at byte %d", syntaxErr.Offset)
	}
	return "invalid JSON"
}

// AskUsage rewrites an OpenAI streaming request's body so that the answer
// ends with a usage chunk (stream_options.include_usage: true), keeping every
// other field as it was.
func AskUsage(body []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if !bytes.Contains(body, []byte(`"stream_options"`)) && len(trimmed) > 1 && trimmed[len(trimmed)-1] == '}' {
		// The common case, without decoding: add the field at the end.
		// The body parsed as an object, so its last byte closes it.
		out := make([]byte, 0, len(trimmed)+len(`,"stream_options":{"include_usage":true}`))
		out = append(out, trimmed[:len(trimmed)-1]...)
		if len(bytes.TrimSpace(trimmed[1:len(trimmed)-1])) > 0 {
			out = append(out, ',')
		}
		out = append(out, `"stream_options":{"include_usage":true}}`...)
		return out, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotJSON, describe(err))
	}
	opts := map[string]json.RawMessage{}
	if raw, ok := fields["stream_options"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &opts); err != nil {
			return nil, fmt.Errorf("%w: \"stream_options\" is not an object", ErrNotJSON)
		}
	}
	opts["include_usage"] = json.RawMessage("true")
	raw, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	fields["stream_options"] = raw
	return json.Marshal(fields)
}
