package apikey

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// The documentation's tests: every Caddyfile and JSON block of README.md and
// docs/ adapts or parses, every link between them is alive, and every
// directive, JSON field, metric and event the code has is in its reference
// page. The names are read from the running module registry and from the
// module's Go source as a whole (every directory), never from a file path,
// so moving code between files or packages keeps these tests true.

// docPages are the Markdown files whose blocks and links are checked.
func docPages(t *testing.T) []string {
	t.Helper()
	pages := []string{"README.md", "CHANGELOG.md", "CONTRIBUTING.md", "SECURITY.md"}
	more, err := filepath.Glob("docs/*.md")
	if err != nil || len(more) < 15 {
		t.Fatalf("docs/ has %d pages (%v)", len(more), err)
	}
	return append(pages, more...)
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// fencedBlocks returns the contents of the page's ``` blocks of a language.
func fencedBlocks(page, lang string) []string {
	var out []string
	for _, m := range regexp.MustCompile("(?ms)^```"+regexp.QuoteMeta(lang)+"\n(.*?)^```").FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestDocsCaddyfiles adapts every Caddyfile example in README.md, docs/ and
// examples/, so the manual cannot show a directive or form the plugin does
// not take. Snippets that are a route or a handler are put in a site
// first; syntax summaries (with <placeholders>) are left out.
func TestDocsCaddyfiles(t *testing.T) {
	checked := 0
	check := func(where, text string) {
		t.Helper()
		if strings.Contains(text, "<") || strings.Contains(text, "...") {
			return // syntax, not an example
		}
		if strings.Contains(text, " exec ") {
			return // needs the caddy-events-exec plugin, as the page says
		}
		checked++
		first := strings.TrimSpace(strings.SplitN(strings.TrimSpace(text), "\n", 2)[0])
		switch {
		case strings.HasPrefix(first, "handle_path"), strings.HasPrefix(first, "handle "), strings.HasPrefix(first, "apikey"):
			text = "example.com {\n" + text + "\n}\n"
		}
		if _, err := gatewaytest.Adapt(text); err != nil {
			t.Errorf("%s (starting %q): %v", where, first, err)
		}
	}
	for _, path := range docPages(t) {
		for i, b := range fencedBlocks(readDoc(t, path), "caddyfile") {
			check(path+" example "+strconv.Itoa(i+1), b)
		}
	}
	_ = filepath.WalkDir("examples", func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "Caddyfile" {
			check(path, readDoc(t, path))
		}
		return nil
	})
	if checked < 25 {
		t.Errorf("adapted only %d Caddyfile examples", checked)
	}
}

// TestDocsJSON parses every JSON block of README.md and docs/; a handler's
// config ("handler": "apikey" or "apikey_portal") and the apikey app are
// decoded into their modules strictly, so a misspelt field fails.
func TestDocsJSON(t *testing.T) {
	checked := 0
	for _, path := range docPages(t) {
		for i, b := range fencedBlocks(readDoc(t, path), "json") {
			where := path + " JSON block " + strconv.Itoa(i+1)
			checked++
			if !json.Valid([]byte(b)) {
				t.Errorf("%s is not JSON:\n%s", where, b)
				continue
			}
			var obj map[string]json.RawMessage
			if json.Unmarshal([]byte(b), &obj) != nil {
				continue
			}
			strict := func(id string, raw []byte) {
				mod, err := caddy.GetModule(id)
				if err != nil {
					t.Fatal(err)
				}
				v := mod.New()
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.DisallowUnknownFields()
				if err := dec.Decode(v); err != nil {
					t.Errorf("%s does not decode as %s: %v", where, id, err)
				}
			}
			if h, ok := obj["handler"]; ok {
				var name string
				_ = json.Unmarshal(h, &name)
				var rest map[string]json.RawMessage
				_ = json.Unmarshal([]byte(b), &rest)
				delete(rest, "handler")
				raw, _ := json.Marshal(rest)
				strict("http.handlers."+name, raw)
			}
			if apps, ok := obj["apps"]; ok {
				var a map[string]json.RawMessage
				_ = json.Unmarshal(apps, &a)
				if raw, ok := a["apikey"]; ok {
					strict("apikey", raw)
				}
			}
		}
	}
	if checked < 5 {
		t.Errorf("parsed only %d JSON blocks", checked)
	}
}

// anchorsOf returns the anchors GitHub makes of a page's headings.
func anchorsOf(page string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fence := false
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			anchors[a+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	return anchors
}

// TestDocsLinks: every relative link in README.md and docs/ leads to a file
// that exists and, with a #fragment into a Markdown page, to a heading of it.
func TestDocsLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	checked := 0
	for _, path := range docPages(t) {
		page := readDoc(t, path)
		// Links inside code are code, not links.
		prose := regexp.MustCompile("(?ms)^```.*?^```").ReplaceAllString(page, "")
		prose = regexp.MustCompile("`[^`\n]*`").ReplaceAllString(prose, "")
		for _, m := range link.FindAllStringSubmatch(prose, -1) {
			target := m[1]
			if regexp.MustCompile(`^[a-z]+:`).MatchString(target) {
				continue
			}
			checked++
			file, frag, _ := strings.Cut(target, "#")
			dest := path
			if file != "" {
				dest = filepath.Join(filepath.Dir(path), file)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s links to %s, which does not exist", path, target)
					continue
				}
			}
			if frag != "" && strings.HasSuffix(dest, ".md") && !anchorsOf(readDoc(t, dest))[frag] {
				t.Errorf("%s links to %s: %s has no heading #%s", path, target, dest, frag)
			}
		}
	}
	if checked < 100 {
		t.Errorf("checked only %d links", checked)
	}
}

// codeWords returns every word inside the page's code spans and blocks:
// where a reference page names a directive, field, metric or event.
func codeWords(page string) map[string]bool {
	words := map[string]bool{}
	code := regexp.MustCompile("(?ms)^```.*?^```|`[^`\n]+`").FindAllString(page, -1)
	for _, c := range code {
		for _, w := range regexp.MustCompile(`[A-Za-z0-9_.]+`).FindAllString(c, -1) {
			words[w] = true
		}
	}
	return words
}

// jsonFields returns the JSON field names of a type and of the plugin's
// types it holds (embedded structs flattened, pointers, slices and maps
// followed).
func jsonFields(t reflect.Type, into map[string]string, seen map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || !strings.HasPrefix(t.PkgPath(), "github.com/moodmnky/caddy-apikey") {
		return
	}
	seen[t] = true
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			jsonFields(f.Type, into, seen)
			continue
		}
		if name == "-" || name == "" {
			continue
		}
		into[name] = t.String() + "." + f.Name
		jsonFields(f.Type, into, seen)
	}
}

// TestCaddyfileReferenceHasEveryField: every JSON field of every module the
// plugin registers (the handler, the portal, the apikey app, key sources,
// counter stores, the admin API) is named in docs/caddyfile.md.
func TestCaddyfileReferenceHasEveryField(t *testing.T) {
	words := codeWords(readDoc(t, "docs/caddyfile.md"))
	fields := map[string]string{}
	var ids []string
	for _, id := range caddy.Modules() {
		if id == "apikey" || strings.HasPrefix(id, "http.apikey.") || strings.HasSuffix(id, ".apikey") || strings.Contains(id, ".apikey_") {
			ids = append(ids, id)
			mod, err := caddy.GetModule(id)
			if err != nil {
				t.Fatal(err)
			}
			jsonFields(reflect.TypeOf(mod.New()), fields, map[reflect.Type]bool{})
		}
	}
	for _, want := range []string{"apikey", "http.handlers.apikey", "http.handlers.apikey_portal", "http.apikey.sources.file", "http.apikey.counters.redis"} {
		if !strings.Contains(" "+strings.Join(ids, " ")+" ", " "+want+" ") {
			t.Errorf("module %s is not registered (found %v)", want, ids)
		}
	}
	if len(fields) < 50 {
		t.Errorf("found only %d JSON fields in %v", len(fields), ids)
	}
	for name, where := range fields {
		if !words[name] {
			t.Errorf("JSON field %q (%s) is not in docs/caddyfile.md", name, where)
		}
	}
}

// goFiles parses every non-test Go file of the module (every directory but
// testdata and node_modules).
func goFiles(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && path != ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fset, files
}

func stringLit(e ast.Expr) (string, bool) {
	if b, ok := e.(*ast.BasicLit); ok && b.Kind == token.STRING {
		s, err := strconv.Unquote(b.Value)
		return s, err == nil
	}
	return "", false
}

// constStrings maps every string constant of the files (package level and
// in functions) to its value, by name.
func constStrings(files []*ast.File) map[string]string {
	consts := map[string]string{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if g, ok := n.(*ast.GenDecl); ok && g.Tok == token.CONST {
				for _, s := range g.Specs {
					vs := s.(*ast.ValueSpec)
					for i, name := range vs.Names {
						if i < len(vs.Values) {
							if v, ok := stringLit(vs.Values[i]); ok {
								consts[name.Name] = v
							}
						}
					}
				}
			}
			return true
		})
	}
	return consts
}

// takesDispenser reports whether a function reads a Caddyfile.
func takesDispenser(fn *ast.FuncDecl) bool {
	for _, p := range fn.Type.Params.List {
		typ := p.Type
		if s, ok := typ.(*ast.StarExpr); ok {
			typ = s.X
		}
		if sel, ok := typ.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Dispenser" || sel.Sel.Name == "Helper") {
			return true
		}
	}
	return false
}

// parserTable reports whether lit is a map from names to functions that
// read a Caddyfile.
func parserTable(lit *ast.CompositeLit) bool {
	m, ok := lit.Type.(*ast.MapType)
	if !ok {
		return false
	}
	ft, ok := m.Value.(*ast.FuncType)
	return ok && takesDispenser(&ast.FuncDecl{Type: ft})
}

// TestCaddyfileReferenceHasEveryDirective: every directive and global
// option the plugin registers, and every subdirective its Caddyfile
// parsers take (the cases they switch on, the keys of their tables of
// subdirective parsers, and the names of the extra settings they hand on),
// is named in docs/caddyfile.md.
func TestCaddyfileReferenceHasEveryDirective(t *testing.T) {
	fset, files := goFiles(t)
	words := codeWords(readDoc(t, "docs/caddyfile.md"))
	names := map[string]string{}
	for _, f := range files {
		for _, decl := range f.Decls {
			if g, ok := decl.(*ast.GenDecl); ok {
				// Tables of subdirective parsers: map[string]func(…, *caddyfile.Dispenser) error{…}.
				ast.Inspect(g, func(n ast.Node) bool {
					if lit, ok := n.(*ast.CompositeLit); ok && parserTable(lit) {
						for _, e := range lit.Elts {
							if kv, ok := e.(*ast.KeyValueExpr); ok {
								if s, ok := stringLit(kv.Key); ok {
									names[s] = fset.Position(kv.Pos()).String()
								}
							}
						}
					}
					return true
				})
			}
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			parsing := takesDispenser(fn)
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok && len(n.Args) > 0 &&
						(sel.Sel.Name == "RegisterHandlerDirective" || sel.Sel.Name == "RegisterDirective" || sel.Sel.Name == "RegisterGlobalOption") {
						if s, ok := stringLit(n.Args[0]); ok {
							names[s] = fset.Position(n.Pos()).String()
						}
					}
				case *ast.CaseClause:
					if parsing {
						for _, e := range n.List {
							if s, ok := stringLit(e); ok {
								names[s] = fset.Position(e.Pos()).String()
							}
						}
					}
				case *ast.KeyValueExpr:
					if _, isFunc := n.Value.(*ast.FuncLit); parsing && isFunc {
						if s, ok := stringLit(n.Key); ok {
							names[s] = fset.Position(n.Pos()).String()
						}
					}
				}
				return true
			})
		}
	}
	for _, want := range []string{"apikey", "apikey_portal", "keys", "token_quota", "max_inflight_body", "on_failure", "key_prefix", "playground_url", "master_name"} {
		if _, ok := names[want]; !ok {
			t.Errorf("the parsers' names lack %q: the scan of the source is broken (found %d)", want, len(names))
		}
	}
	for name, where := range names {
		if !words[name] {
			t.Errorf("Caddyfile name %q (%s) is not in docs/caddyfile.md", name, where)
		}
	}
}

// TestCaddyfileReferenceHasAnEntryForEverySubdirective: named in passing
// (in a syntax block) is not enough: each subdirective the apikey block's
// table of parsers reads has its own heading (#### `name`) in
// docs/caddyfile.md, and each the apikey_portal block's table reads has a
// row (| `name …` |) of the table in that directive's section.
func TestCaddyfileReferenceHasAnEntryForEverySubdirective(t *testing.T) {
	page := readDoc(t, "docs/caddyfile.md")
	at := strings.Index(page, "\n### `apikey_portal`\n")
	if at < 0 {
		t.Fatal("docs/caddyfile.md has no ### `apikey_portal` section")
	}
	portal := page[at+1:]
	if end := strings.Index(portal, "\n### "); end >= 0 {
		portal = portal[:end]
	}
	entries := func(text, pattern string) map[string]bool {
		found := map[string]bool{}
		for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(text, -1) {
			found[m[1]] = true
		}
		return found
	}
	headings := entries(page[:at], "(?m)^#### `([a-z_]+)`\\s*$")
	for name := range handlerSubdirectives {
		if !headings[name] {
			t.Errorf("apikey subdirective %q has no heading #### `%s` in docs/caddyfile.md", name, name)
		}
	}
	rows := entries(portal, "(?m)^\\| `([a-z_]+)")
	for name := range portalSubdirectives {
		if !rows[name] {
			t.Errorf("apikey_portal subdirective %q has no row | `%s …` | in the apikey_portal table of docs/caddyfile.md", name, name)
		}
	}
}

// referenceRows are the names of a page's reference entries: the table
// rows whose first cell starts with code (| `name` …) and the headings that
// name one thing (#### `name`), as TestReferenceEntriesAreNotRepeated
// counts them.
func referenceRows(page string) map[string]bool {
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^(?:\\| |#### )`([^`]+)`").FindAllStringSubmatch(page, -1) {
		rows[m[1]] = true
	}
	return rows
}

// TestObservabilityReferenceHasEveryMetricAndEvent: every Prometheus metric
// the plugin defines and every Caddy event it emits (an emit call's name,
// or an event… constant) has its reference entry, a row of a table, in
// docs/observability.md: named in passing is not enough.
func TestObservabilityReferenceHasEveryMetricAndEvent(t *testing.T) {
	_, files := goFiles(t)
	consts := constStrings(files)
	value := func(e ast.Expr) string {
		if s, ok := stringLit(e); ok {
			return s
		}
		if id, ok := e.(*ast.Ident); ok {
			return consts[id.Name]
		}
		return ""
	}
	fq := func(parts ...string) string {
		var out []string
		for _, p := range parts {
			if p != "" {
				out = append(out, p)
			}
		}
		return strings.Join(out, "_")
	}
	metrics, events := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				sel, ok := n.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				parts := map[string]string{}
				for _, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok {
							parts[k.Name] = value(kv.Value)
						}
					}
				}
				if parts["Name"] != "" {
					metrics[fq(parts["Namespace"], parts["Subsystem"], parts["Name"])] = true
				}
			case *ast.CallExpr:
				name := ""
				switch fun := n.Fun.(type) {
				case *ast.SelectorExpr:
					name = fun.Sel.Name
				case *ast.Ident:
					name = fun.Name
				}
				if name == "BuildFQName" && len(n.Args) == 3 {
					metrics[fq(value(n.Args[0]), value(n.Args[1]), value(n.Args[2]))] = true
				}
				if strings.HasPrefix(strings.ToLower(name), "emit") && len(n.Args) > 0 {
					if v := value(n.Args[0]); strings.HasPrefix(v, "apikey_") {
						events[v] = true
					}
				}
			}
			return true
		})
	}
	for name, v := range consts {
		if strings.HasPrefix(name, "event") && strings.HasPrefix(v, "apikey_") {
			events[v] = true
		}
	}
	if len(metrics) < 8 || len(events) < 5 {
		t.Fatalf("found %d metrics and %d events: the scan of the source is broken", len(metrics), len(events))
	}
	words := referenceRows(readDoc(t, "docs/observability.md"))
	check := func(kind string, names map[string]bool) {
		sorted := make([]string, 0, len(names))
		for n := range names {
			sorted = append(sorted, n)
		}
		sort.Strings(sorted)
		for _, n := range sorted {
			if !strings.HasPrefix(n, "caddy_apikey_") && kind == "metric" {
				t.Errorf("metric %q is not named caddy_apikey_…", n)
			}
			if !words[n] {
				t.Errorf("%s %q has no row in a table of docs/observability.md", kind, n)
			}
		}
	}
	check("metric", metrics)
	check("event", events)
}

// TestKeyFileReferenceHasEveryField: every field of a key record, read from
// the record type, is in docs/key-file.md.
func TestKeyFileReferenceHasEveryField(t *testing.T) {
	fields := map[string]string{}
	jsonFields(reflect.TypeOf(keystore.Record{}), fields, map[reflect.Type]bool{})
	if len(fields) < 20 {
		t.Fatalf("found only %d record fields", len(fields))
	}
	words := codeWords(readDoc(t, "docs/key-file.md"))
	for name, where := range fields {
		if !words[name] {
			t.Errorf("key record field %q (%s) is not in docs/key-file.md", name, where)
		}
	}
}

// TestDocsTemplate: every subject page of docs/ follows one template: a
// title, a summary, then Syntax, Example, JSON and Notes, in that order
// and alone at their level. (choices.md, benchmarks.md and
// method-overrides.md are design notes, not subject pages.)
func TestDocsTemplate(t *testing.T) {
	notes := map[string]bool{"docs/choices.md": true, "docs/benchmarks.md": true, "docs/method-overrides.md": true}
	want := []string{"## Syntax", "## Example", "## JSON", "## Notes"}
	for _, path := range docPages(t) {
		if !strings.HasPrefix(path, "docs/") || notes[path] {
			continue
		}
		page := readDoc(t, path)
		if !strings.HasPrefix(page, "# ") || !strings.Contains(strings.SplitN(page, "\n## ", 2)[0], "**Summary.**") {
			t.Errorf("%s does not start with a title and a **Summary.** paragraph", path)
		}
		prose := regexp.MustCompile("(?ms)^```.*?^```").ReplaceAllString(page, "")
		got := regexp.MustCompile(`(?m)^## .*$`).FindAllString(prose, -1)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s has the sections %q, want %q", path, got, want)
		}
	}
}

// TestReferenceEntriesAreNotRepeated: a directive, field, command, endpoint,
// metric or event has one reference entry in the docs, so that it is
// described once and cannot be described two ways. Entries are the headings
// that name one thing (#### `name`) and the table rows whose first cell
// starts with code (| `name` …). Other pages link to the entry. The
// exceptions are names that stand for different things on different pages
// (listed with why), troubleshooting.md (one row per message a user can
// meet, and one code may have several), and benchmarks.md and choices.md
// (measurements and decisions, not reference).
func TestReferenceEntriesAreNotRepeated(t *testing.T) {
	different := map[string]string{
		"rate":   "the rate directive (caddyfile.md) and a key record's rate field (key-file.md)",
		"ollama": "a service preset (caddyfile.md) and an error_format value (responses.md)",
		"openai": "a service preset (caddyfile.md) and an error_format value (responses.md)",
	}
	heading := regexp.MustCompile("^#{4} `([^`]+)`\\s*$")
	directiveHeading := regexp.MustCompile("^### `([a-z_]+)`\\s*$")
	row := regexp.MustCompile("^\\| `([^`]+)`")
	entries := map[string][]string{}
	for _, page := range docPages(t) {
		switch filepath.Base(page) {
		case "troubleshooting.md", "benchmarks.md", "choices.md":
			continue
		}
		// In caddyfile.md, each directive of its own (### `name`) has a
		// table of its options: an option is that directive's.
		directive := ""
		lines := strings.Split(readDoc(t, page), "\n")
		for i, line := range lines {
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|--") {
				continue // a table's header row
			}
			if m := directiveHeading.FindStringSubmatch(line); m != nil && filepath.Base(page) == "caddyfile.md" {
				directive = m[1]
				continue
			}
			if m := heading.FindStringSubmatch(line); m != nil {
				entries[m[1]] = append(entries[m[1]], fmt.Sprintf("%s:%d", filepath.Base(page), i+1))
			}
			if m := row.FindStringSubmatch(line); m != nil {
				name := m[1]
				if directive != "" {
					name = directive + " › " + name
				}
				entries[name] = append(entries[name], fmt.Sprintf("%s:%d", filepath.Base(page), i+1))
			}
		}
	}
	if len(entries) < 100 {
		t.Fatalf("found only %d reference entries", len(entries))
	}
	// An option of a directive's table has no entry of its own elsewhere.
	for name, at := range entries {
		if _, option, ok := strings.Cut(name, " › "); ok {
			if elsewhere := entries[option]; len(elsewhere) > 0 {
				entries[name] = append(at, elsewhere...)
			}
		}
	}
	for name, at := range entries {
		if len(at) > 1 && different[name] == "" {
			t.Errorf("%q has %d reference entries (%s); keep one and link to it", name, len(at), strings.Join(at, ", "))
		}
	}
}

// TestLayoutTableIsTrue: the table in docs/development.md's Layout section
// lists every package directory and every root source file, and every path
// it lists exists, so that a newcomer's map of the tree is the tree.
func TestLayoutTableIsTrue(t *testing.T) {
	page := readDoc(t, "docs/development.md")
	_, section, ok := strings.Cut(page, "### Layout\n")
	if !ok {
		t.Fatal("docs/development.md has no ### Layout section")
	}
	section, _, _ = strings.Cut(section, "\n#")
	listed := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cells[1], -1) {
			listed[strings.TrimSuffix(m[1], "/")] = true
		}
	}
	if len(listed) < 20 {
		t.Fatalf("read %d paths from the Layout table: the table's format changed", len(listed))
	}
	for path := range listed {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("the Layout table lists %s, which does not exist", path)
		}
	}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && path != ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		switch {
		case dir == "." && !strings.HasSuffix(path, "_test.go") && !listed[path]:
			t.Errorf("root file %s is not in docs/development.md's Layout table", path)
		case dir != "." && !listed[dir]:
			t.Errorf("package directory %s/ is not in docs/development.md's Layout table", dir)
			listed[dir] = true // once per directory
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLayoutDependenciesPointDown holds the Layout section's rules against
// the imports: no package imports the root but cmd/caddy (which builds Caddy
// with it), and the root imports the commands and the admin API only blank,
// so that no root file, the request path's least of all, reaches into them.
func TestLayoutDependenciesPointDown(t *testing.T) {
	const root = "github.com/moodmnky/caddy-apikey"
	fset, files := goFiles(t)
	checked := 0
	for _, f := range files {
		path := filepath.ToSlash(fset.Position(f.Package).Filename)
		dir := filepath.ToSlash(filepath.Dir(path))
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			checked++
			switch {
			case p == root && dir != "cmd/caddy":
				t.Errorf("%s imports the root package; only cmd/caddy may", path)
			case dir == "." && (p == root+"/admin" || p == root+"/command") && (imp.Name == nil || imp.Name.Name != "_"):
				t.Errorf("root file %s imports %s by name; the root imports it only blank", path, p)
			}
		}
	}
	if checked < 100 {
		t.Fatalf("read %d imports: the tree was not read", checked)
	}
}
