package keystore

import "testing"

func TestModelMatching(t *testing.T) {
	k, err := Compile(Record{ID: "k", Hash: Sum("DEV_API_x").Encode(), Role: "reader",
		Models:            []string{"llama3*", "gpt-4o-mini", "hf.co/org/*"},
		ModelTokensPerDay: map[string]int64{"*": 2000, "llama3:70b": 3000, "gpt-4*": 100}})
	if err != nil {
		t.Fatal(err)
	}
	for model, want := range map[string]bool{
		"llama3": true, "LLAMA3:70B": true, "registry.ollama.ai/library/llama3:latest": true, "library/llama3:8b": true,
		"gpt-4o-mini": true, "GPT-4o-mini": true, "gpt-4o": false, "hf.co/org/model": true, "hf.co/other/model": false, "": false,
		// A pattern without a host matches only the default registry, one
		// without a namespace only its library.
		"llama3.evil.example/x/big": false, "llama3-fan/big": false, "registry.ollama.ai/llama3x/big": false,
		"https://registry.ollama.ai/library/llama3": true, "registry.ollama.ai/library/llama3/x": false,
		"evil.example/library/llama3": false, "hf.co/org/sub/model": false,
	} {
		if got := k.AllowsModel(model); got != want {
			t.Errorf("AllowsModel(%q) = %v, want %v", model, got, want)
		}
	}
	for model, want := range map[string]string{
		"llama3:70b": "llama3:70b", "LLAMA3:70B": "llama3:70b", "registry.ollama.ai/library/llama3:70b": "llama3:70b",
		"gpt-4o": "gpt-4*", "library/mistral": "*", "hf.co/x/y": "", "someone/model": "",
	} {
		if got, _, ok := k.ModelBudget(model); ok != (want != "") || got != want {
			t.Errorf("ModelBudget(%q) = %q, want %q", model, got, want)
		}
	}
	// Patterns with a host, or * for each part, reach other registries.
	any, err := Compile(Record{ID: "k", Hash: Sum("DEV_API_x").Encode(), Role: "reader", Models: []string{"*/*/*", "hf.co/*/*gguf*"}})
	if err != nil {
		t.Fatal(err)
	}
	for model, want := range map[string]bool{"llama3": true, "x/y": true, "evil.example/x/y": true, "hf.co/org/model-gguf": true} {
		if got := any.AllowsModel(model); got != want {
			t.Errorf("*/*/*: AllowsModel(%q) = %v, want %v", model, got, want)
		}
	}
	for name, want := range map[string]string{"REGISTRY.ollama.ai/library/Llama3:latest": "llama3", "library/x:8b": "x:8b",
		"someone/x": "someone/x", "https://hf.co/org/m": "hf.co/org/m"} {
		if got := ModelName(name); got != want {
			t.Errorf("ModelName(%q) = %q, want %q", name, got, want)
		}
	}
	for _, bad := range []string{"", " ", "a[b]", `a\b`} {
		if _, err := Compile(Record{ID: "k", Hash: Sum("DEV_API_x").Encode(), Role: "reader", Models: []string{bad}}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}
