package portal

import (
	"strconv"
	"strings"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// snippet is ready-to-paste code that calls a service with a new key.
type snippet struct {
	Service, Language, Label, Code string
}

// snippets show how to call each of the key's services with it, in the
// header format each service's route reads. baseURL is where the gateway
// is reached, as the developer sees it.
func (s *Server) snippets(key, baseURL string, rec keystore.Record) []snippet {
	var out []snippet
	for _, name := range rec.Services {
		svc, ok := s.policy.service(name)
		if !ok || svc.Path == "" {
			continue
		}
		url := baseURL + svc.Path
		value := key
		if svc.Scheme != "" {
			value = svc.Scheme + " " + key
		}
		q := strconv.Quote
		out = append(out,
			snippet{name, "shell", "curl", "curl -H " + shellQuote(svc.Header+": "+value) + " " + shellQuote(url)},
			snippet{name, "typescript", "TypeScript (fetch)",
				"const res = await fetch(" + q(url) + ", {\n  headers: { " + q(svc.Header) + ": " + q(value) + " },\n});\nconsole.log(res.status, await res.text());"},
			snippet{name, "python", "Python (requests)",
				"import requests\n\nres = requests.get(" + q(url) + ", headers={" + q(svc.Header) + ": " + q(value) + "})\nprint(res.status_code, res.text)"})
		root := baseURL + strings.TrimSuffix(serviceRoot(svc), "/")
		bearer := strings.EqualFold(svc.Header, "Authorization") && strings.EqualFold(svc.Scheme, "Bearer")
		if name == "ollama" || strings.Contains(svc.Path, "/api/") {
			out = append(out, snippet{name, "python", "Python (Ollama SDK)",
				"from ollama import Client\n\nclient = Client(host=" + q(root) + ", headers={" + q(svc.Header) + ": " + q(value) + "})\nprint(client.list())"})
		}
		if bearer && strings.Contains(svc.Path, "/v1/") {
			out = append(out,
				snippet{name, "typescript", "TypeScript (OpenAI SDK)",
					"import OpenAI from \"openai\";\n\nconst client = new OpenAI({ baseURL: " + q(root+"/v1") + ", apiKey: " + q(key) + " });\nfor await (const model of client.models.list()) console.log(model.id);"},
				snippet{name, "python", "Python (OpenAI SDK)",
					"from openai import OpenAI\n\nclient = OpenAI(base_url=" + q(root+"/v1") + ", api_key=" + q(key) + ")\nfor model in client.models.list():\n    print(model.id)"})
		}
	}
	return out
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
