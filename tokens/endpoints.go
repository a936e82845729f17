package tokens

import "strings"

// What the gateway knows of the endpoints behind a route with tokens, by
// the end of the request's path (so a route's own prefix, or Azure's
// /openai/deployments/{name}/…, does not matter).

// TakesStreamOptions reports whether an OpenAI endpoint takes
// stream_options.include_usage: chat completions and the legacy
// completions. Other endpoints (the Responses API, which reports usage in
// its response.completed event anyway) refuse the field, so the gateway
// leaves their bodies alone.
func TakesStreamOptions(path string) bool {
	return strings.HasSuffix(strings.TrimSuffix(path, "/"), "/completions") // "/chat/completions" too
}

// Reports reports whether an answer from this endpoint carries the tokens it
// used: OpenAI's chat completions, completions, responses and embeddings;
// Ollama's chat, generate and embed. Only POSTs generate. A 2xx answer from
// one of them that reports nothing (a stream cut before its last event, an
// upstream that does not count) is a missing report; other endpoints
// (GET /v1/models, /api/tags, /api/pull) never report, and are not.
func Reports(f Format, method, path string) bool {
	if method != "POST" {
		return false
	}
	path = strings.TrimSuffix(path, "/")
	switch f {
	case OpenAI:
		return strings.HasSuffix(path, "/completions") || strings.HasSuffix(path, "/responses") ||
			strings.HasSuffix(path, "/embeddings")
	case Ollama:
		return strings.HasSuffix(path, "/api/chat") || strings.HasSuffix(path, "/api/generate") ||
			strings.HasSuffix(path, "/api/embed")
	}
	return false
}
