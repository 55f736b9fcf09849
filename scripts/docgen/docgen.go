// Package docgen keeps the generated parts of Phantom's documentation in
// step with the code. A generated part sits in a Markdown file between two
// HTML comments,
//
//	<!-- BEGIN GENERATED name: ... -->
//	<!-- END GENERATED name -->
//
// and the test of the package that owns its source renders it and calls
// Sync: the test fails while the file differs from what the code would
// write, and rewrites the part when PHANTOM_UPDATE_DOCS=1 (make docs). The
// generated parts are the error table of docs/agents.md
// (internal/resolve, from reason.go) and docs/api.md (plugin, from the
// engine's paths). TestDocLinks checks the docs' relative links.
package docgen

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unicode"
)

// UpdateEnv, set to 1, makes Sync rewrite the files instead of failing.
const UpdateEnv = "PHANTOM_UPDATE_DOCS"

// Root is the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

func begin(name string) string { return "<!-- BEGIN GENERATED " + name + ":" }
func end(name string) string   { return "<!-- END GENERATED " + name + " -->" }

// Replace returns doc with the part called name replaced by body (which
// ends in a newline), keeping both markers as they are.
func Replace(doc, name, body string) (string, error) {
	b := strings.Index(doc, begin(name))
	if b < 0 {
		return "", fmt.Errorf("no %q marker", begin(name))
	}
	nl := strings.Index(doc[b:], "\n")
	if nl < 0 {
		return "", fmt.Errorf("the %q marker ends the file", begin(name))
	}
	start := b + nl + 1
	e := strings.Index(doc[start:], end(name))
	if e < 0 {
		return "", fmt.Errorf("no %q marker after the BEGIN one", end(name))
	}
	if strings.Count(doc, begin(name)) != 1 || strings.Count(doc, end(name)) != 1 {
		return "", fmt.Errorf("the markers of %s appear more than once", name)
	}
	return doc[:start] + body + doc[start+e:], nil
}

// Sync checks that the part called name of file (relative to the root)
// is body, or rewrites it when UpdateEnv is 1.
func Sync(t testing.TB, file, name, body string) {
	t.Helper()
	path := filepath.Join(Root(), filepath.FromSlash(file))
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Replace(string(old), name, body)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if doc == string(old) {
		return
	}
	if os.Getenv(UpdateEnv) == "1" {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: rewrote the generated part %s", file, name)
		return
	}
	t.Errorf("%s: the generated part %s differs from what the code writes; run make docs (first difference at line %d)",
		file, name, firstDiffLine(string(old), doc))
}

// firstDiffLine is the 1-based line of a where a and b first differ.
func firstDiffLine(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

// Cell escapes text for a cell of a Markdown table (or a paragraph): one
// line, no bare |, and < and > as entities, so that <name> is shown rather
// than taken for HTML.
func Cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

// Slug is the anchor GitHub gives a heading: lower case, spaces as -,
// everything but letters, digits, - and _ dropped. (A heading that repeats
// an earlier one gets -1, -2, ...: see Anchors.)
func Slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
