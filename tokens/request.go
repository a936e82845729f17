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
	"io"
	"strings"
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
	// MaxTokens is the most completion tokens the request allows: the
	// largest of OpenAI's max_tokens, max_completion_tokens and
	// max_output_tokens (upstreams honour different ones), or Ollama's
	// options.num_predict; 0 when it sets no limit.
	MaxTokens int64
	// Stream is whether the answer is streamed. Ollama streams unless the
	// body says "stream": false; OpenAI only when it says "stream": true.
	Stream bool
	// IncludeUsage is OpenAI's stream_options.include_usage.
	IncludeUsage bool
	// Copies is how many completions the request asks for (OpenAI n or
	// best_of); at least 1.
	Copies int64
	// Models is every model the body names, Model first when given: the
	// fields of ModelFields and every FROM line of an Ollama Modelfile
	// ("modelfile"); nil when it names none.
	Models []string
	// Unnamed is set when the body asks for a model the gateway cannot
	// name: an Ollama create from uploaded files ("files").
	Unnamed bool
}

// ErrNotJSON is wrapped by ParseRequest's errors for a body that is not a
// JSON object with fields of the expected types.
var ErrNotJSON = errors.New("the request body is not a JSON object")

// ErrAmbiguous is wrapped by ParseRequest's errors for a body whose fields
// could be read one way by the gateway and another by the upstream: a
// field the gateway reads given twice, or written in another case
// ("Model", "MAX_TOKENS"), which Go would match and most upstreams would not.
var ErrAmbiguous = errors.New("the request body is ambiguous")

// watched are the fields ParseRequest reads, top level and nested (the
// model fields' objects are watched by modelWatch).
var watched = map[string][]string{
	"":               {"model", "max_tokens", "max_completion_tokens", "max_output_tokens", "stream", "stream_options", "options", "n", "best_of"},
	"stream_options": {"include_usage"},
	"options":        {"num_predict"},
}

// ModelFields are the fields besides the top-level "model" that name
// models, in every body of a format: the gateway reads them on every
// endpoint, since a route's prefix or rewrites do not change what a body
// names. OpenAI: the Responses API's tools (image_generation has a
// "model"), realtime sessions, client secrets and transcription sessions;
// and, on both formats, Ollama's create ("from"; "modelfile" is read for
// its FROM lines) and copy ("source", "destination"), so that a route of
// either format in front of Ollama checks them. Ollama routes also read
// the legacy "name" of show, pull, push, delete and create (OpenAI bodies
// use "name" for other things).
//
// A path is field names joined by "."; "[]" after a name reads each
// element of an array.
var ModelFields = [...][]string{
	OpenAI: {"from", "source", "destination", "tools[].model", "session.model", "session.audio.input.transcription.model",
		"input_audio_transcription.model"},
	Ollama: {"name", "from", "source", "destination", "tools[].model", "session.model",
		"session.audio.input.transcription.model", "input_audio_transcription.model"},
}

// modelPaths are ModelFields split at "."; topWatch and modelWatch are
// the fields ParseRequest watches per format: at the top level, and in the
// objects ModelFields go into (keyed by the path to them, e.g.
// "session.audio").
var modelPaths, topWatch, modelWatch = func() ([Ollama + 1][][]string, [Ollama + 1][]string, [Ollama + 1]map[string][]string) {
	var paths [Ollama + 1][][]string
	var top [Ollama + 1][]string
	var nested [Ollama + 1]map[string][]string
	for _, f := range []Format{OpenAI, Ollama} {
		top[f] = append(append([]string{}, watched[""]...), "modelfile", "files")
		nested[f] = map[string][]string{}
		for _, path := range ModelFields[f] {
			segs := strings.Split(path, ".")
			paths[f] = append(paths[f], segs)
			top[f] = appendNew(top[f], strings.TrimSuffix(segs[0], "[]"))
			for i := 1; i < len(segs); i++ {
				at := strings.Join(segs[:i], ".")
				nested[f][at] = appendNew(nested[f][at], strings.TrimSuffix(segs[i], "[]"))
			}
		}
	}
	return paths, top, nested
}()

func appendNew(list []string, s string) []string {
	for _, have := range list {
		if have == s {
			return list
		}
	}
	return append(list, s)
}

// object reads a JSON object's fields as they are written, refusing a
// watched field given twice or in another case. The values are parts of
// data, not copies: a body's large fields (messages, prompts) are read in
// place, never copied.
func object(data []byte, watch []string) (map[string]json.RawMessage, error) {
	if !json.Valid(data) {
		return objectDecoded(data, watch) // says where and why
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, ErrNotJSON
	}
	fields := map[string]json.RawMessage{}
	// data is valid JSON: every index below is within it.
	for i = skipSpace(data, i+1); data[i] != '}'; {
		end := stringEnd(data, i)
		name := keyName(data[i : end+1])
		i = skipSpace(data, skipSpace(data, end+1)+1) // past the colon
		vend := valueEnd(data, i)
		if err := checkWatched(fields, name, watch); err != nil {
			return nil, err
		}
		fields[name] = data[i:vend:vend]
		if i = skipSpace(data, vend); data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return fields, nil
}

// checkWatched refuses name, a field about to be read, when it is a watched
// field already read, or one written in another case.
func checkWatched(fields map[string]json.RawMessage, name string, watch []string) error {
	for _, w := range watch {
		switch {
		case name == w:
			if _, dup := fields[name]; dup {
				return fmt.Errorf("%w: %q is given twice", ErrAmbiguous, w)
			}
		case strings.EqualFold(name, w):
			return fmt.Errorf("%w: %q is written %q", ErrAmbiguous, w, clip(name))
		}
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index of the quote that closes the string opened
// at b[i], in valid JSON.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(b) - 1
}

// valueEnd returns the index after the value at b[i], in valid JSON.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i) + 1
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}

// keyName decodes a member name, quotes included, as encoding/json does.
func keyName(quoted []byte) string {
	plain := true
	for _, c := range quoted {
		if c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return string(quoted[1 : len(quoted)-1])
	}
	var name string
	_ = json.Unmarshal(quoted, &name) // valid: it was checked
	return name
}

// objectDecoded is object through encoding/json's decoder, which copies data
// but says where it is not JSON: for the error of a body that is not.
func objectDecoded(data []byte, watch []string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, ErrNotJSON
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrNotJSON, describe(err))
		}
		name, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrNotJSON, describe(err))
		}
		if err := checkWatched(fields, name, watch); err != nil {
			return nil, err
		}
		fields[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotJSON, describe(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the object", ErrNotJSON)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the object", ErrNotJSON)
	}
	return fields, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// field decodes fields[name] into v when present and not null.
func field(fields map[string]json.RawMessage, name string, v any) (bool, error) {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("%w: %q is not a %s", ErrNotJSON, name, kind(v))
	}
	return true, nil
}

func kind(v any) string {
	switch v.(type) {
	case *string:
		return "string"
	case *bool:
		return "boolean"
	case *int64:
		return "whole number"
	}
	return "value"
}

// ParseRequest reads a request body in format f.
func ParseRequest(f Format, body []byte) (Request, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Request{}, ErrNotJSON
	}
	top, err := object(trimmed, topWatch[f])
	if err != nil {
		return Request{}, err
	}
	var r Request
	hasModel, err := field(top, "model", &r.Model)
	if err != nil {
		return Request{}, err
	}
	if hasModel {
		r.Models = append(r.Models, r.Model)
	}
	if err := r.readModels(f, top); err != nil {
		return Request{}, err
	}
	var stream bool
	hasStream, err := field(top, "stream", &stream)
	if err != nil {
		return Request{}, err
	}
	// Every limit the upstream may honour: the largest bounds the answer.
	var limit int64
	for _, name := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
		var v int64
		if _, err := field(top, name, &v); err != nil {
			return Request{}, err
		}
		limit = max(limit, v)
	}
	// n and best_of ask for that many completions.
	copies := int64(1)
	for _, name := range []string{"n", "best_of"} {
		var v int64
		if _, err := field(top, name, &v); err != nil {
			return Request{}, err
		}
		copies = max(copies, v)
	}
	for _, nested := range []string{"stream_options", "options"} {
		raw, ok := top[nested]
		if !ok || string(raw) == "null" {
			continue
		}
		inner, err := object(raw, watched[nested])
		if err != nil {
			if errors.Is(err, ErrAmbiguous) {
				return Request{}, err
			}
			return Request{}, fmt.Errorf("%w: %q is not an object", ErrNotJSON, nested)
		}
		switch nested {
		case "stream_options":
			if _, err := field(inner, "include_usage", &r.IncludeUsage); err != nil {
				return Request{}, err
			}
		case "options":
			var v int64
			if _, err := field(inner, "num_predict", &v); err != nil {
				return Request{}, err
			}
			if f == Ollama {
				limit = max(limit, v) // -1 or -2 mean "until done": no limit
			}
		}
	}
	if limit > 0 {
		r.MaxTokens = limit
	}
	r.Copies = copies
	switch f {
	case OpenAI:
		r.Stream = hasStream && stream
	case Ollama:
		r.Stream = !hasStream || stream
	}
	return r, nil
}

// readModels adds the models named by ModelFields, a Modelfile's FROM
// lines, and marks a create from files.
func (r *Request) readModels(f Format, top map[string]json.RawMessage) error {
	for _, segs := range modelPaths[f] {
		if err := r.readModelField(f, top, "", segs); err != nil {
			return err
		}
	}
	var modelfile string
	if _, err := field(top, "modelfile", &modelfile); err != nil {
		return err
	}
	r.Models = append(r.Models, ModelfileFroms(modelfile)...)
	if raw, ok := top["files"]; ok && string(raw) != "null" {
		files, err := object(raw, nil)
		r.Unnamed = err != nil || len(files) > 0
	}
	return nil
}

// readModelField adds the models at path segs in fields, the object at
// "at" (a path itself).
func (r *Request) readModelField(f Format, fields map[string]json.RawMessage, at string, segs []string) error {
	name, each := strings.CutSuffix(segs[0], "[]")
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	if len(segs) == 1 {
		var m string
		if _, err := field(fields, name, &m); err != nil {
			return err
		}
		r.Models = append(r.Models, m)
		return nil
	}
	if at != "" {
		at += "."
	}
	at += segs[0]
	elems := []json.RawMessage{raw}
	if each {
		elems = nil
		if err := json.Unmarshal(raw, &elems); err != nil {
			return fmt.Errorf("%w: %q is not an array", ErrNotJSON, name)
		}
	}
	for _, elem := range elems {
		if len(elem) == 0 || elem[0] != '{' {
			continue // not an object: names no model (the upstream refuses it)
		}
		inner, err := object(elem, modelWatch[f][at])
		if err != nil {
			return err
		}
		if err := r.readModelField(f, inner, at, segs[1:]); err != nil {
			return err
		}
	}
	return nil
}

// ModelfileFroms returns the model of every FROM line of an Ollama
// Modelfile (the command in any case, its argument unquoted). Lines of a
// multi-line string that begin with FROM count too: reading too many
// names only refuses more.
func ModelfileFroms(modelfile string) []string {
	var froms []string
	for len(modelfile) > 0 {
		line, rest, _ := strings.Cut(modelfile, "\n")
		modelfile = rest
		line = strings.TrimSpace(line)
		if len(line) < 5 || !strings.EqualFold(line[:4], "from") || (line[4] != ' ' && line[4] != '\t') {
			continue
		}
		arg := strings.TrimSpace(line[5:])
		if len(arg) >= 2 && arg[0] == '"' && arg[len(arg)-1] == '"' {
			arg = arg[1 : len(arg)-1]
		}
		froms = append(froms, arg)
	}
	return froms
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

// usageField ends a body AskUsage adds the field to.
const usageField = `"stream_options":{"include_usage":true}}`

// AskUsageRoom is the room AskUsage needs after a body's last byte to add
// the field in place.
const AskUsageRoom = len(usageField) + 1

// AskUsage rewrites an OpenAI streaming request's body so that the answer
// ends with a usage chunk (stream_options.include_usage: true), keeping every
// other field as it was. In the common case it adds the field in place when
// body has the room for it after its end (see AskUsageRoom), so that the
// body is not copied; body must not be used afterwards.
func AskUsage(body []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if !bytes.Contains(body, []byte(`"stream_options"`)) && len(trimmed) > 1 && trimmed[len(trimmed)-1] == '}' {
		// The common case, without decoding: add the field at the end.
		// The body parsed as an object, so its last byte closes it.
		comma := len(bytes.TrimSpace(trimmed[1:len(trimmed)-1])) > 0
		out := trimmed[:len(trimmed)-1]
		if cap(out)-len(out) < AskUsageRoom {
			out = append(make([]byte, 0, len(out)+AskUsageRoom), out...)
		}
		if comma {
			out = append(out, ',')
		}
		out = append(out, usageField...)
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
