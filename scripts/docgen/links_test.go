package docgen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocLinks checks every relative link, and its #anchor, in the
// repository's Markdown files at the top and in docs/.
func TestDocLinks(t *testing.T) {
	root := Root()
	var files []string
	for _, pattern := range []string{"*.md", "docs/*.md"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d Markdown files under %s", len(files), root)
	}
	for _, f := range files {
		broken, err := CheckLinks(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range broken {
			t.Error(strings.TrimPrefix(b, root+string(os.PathSeparator)))
		}
	}
}

// TestCheckLinksFindsBrokenOnes: the checker must fail a missing file and
// a missing heading, and pass good links, code spans and fences.
func TestCheckLinksFindsBrokenOnes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("b.md", "# B\n\n## Limits: rate, budget, models\n\n## Twice\n\n## Twice\n\n```sh\n# not a heading\n```\n")
	a := write("a.md", "# A\n\n## Here `code`\n\n"+
		"[ok](b.md) [ok](b.md#limits-rate-budget-models) [ok](b.md#twice-1) [ok](#here-code) [ok](https://example.com/x)\n"+
		"`[not a link](missing.md)`\n\n```\n[not a link](missing.md)\n```\n"+
		"[bad](missing.md) [bad](b.md#not-a-heading) [bad](b.md#twice-2) [bad](#nowhere) [bad](b.md#not-a-heading-1)\n")
	broken, err := CheckLinks(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(broken) != 5 {
		t.Fatalf("broken = %d, want 5:\n%s", len(broken), strings.Join(broken, "\n"))
	}
	for _, b := range broken {
		if !strings.Contains(b, "a.md:11:") {
			t.Errorf("reported %q, want only line 11's links", b)
		}
	}
}

func TestReplace(t *testing.T) {
	doc := "x\n<!-- BEGIN GENERATED t: note -->\nold\n<!-- END GENERATED t -->\ny\n"
	got, err := Replace(doc, "t", "new\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "x\n<!-- BEGIN GENERATED t: note -->\nnew\n<!-- END GENERATED t -->\ny\n"; got != want {
		t.Fatalf("Replace = %q, want %q", got, want)
	}
	if _, err := Replace("no markers", "t", "new\n"); err == nil {
		t.Fatal("Replace without markers did not fail")
	}
}
