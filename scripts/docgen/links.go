package docgen

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	headingRe    = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	codeSpanRe   = regexp.MustCompile("`[^`]*`")
	linkTargetRe = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
)

// prose returns the lines of a Markdown file outside fenced code blocks,
// numbered from 1 (the lines inside a fence are empty).
func prose(doc string) []string {
	lines := strings.Split(doc, "\n")
	fence := ""
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		switch {
		case fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			fence = trimmed[:3]
			lines[i] = ""
		case fence != "":
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			lines[i] = ""
		}
	}
	return lines
}

// Anchors lists the anchors GitHub makes for a Markdown file's headings,
// a repeated heading's with -1, -2, ...
func Anchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range prose(doc) {
		m := headingRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := Slug(m[2])
		if n := seen[slug]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

// CheckLinks checks every relative link of the Markdown file at path (a
// file or directory that exists, and a heading for its #anchor in a
// Markdown target) and returns what is broken.
func CheckLinks(path string) ([]string, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var broken []string
	for n, line := range prose(string(doc)) {
		line = codeSpanRe.ReplaceAllString(line, "")
		for _, m := range linkTargetRe.FindAllStringSubmatch(line, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			dest := path
			if file != "" {
				dest = filepath.Join(filepath.Dir(path), filepath.FromSlash(file))
			}
			if _, err := os.Stat(dest); err != nil {
				broken = append(broken, fmt.Sprintf("%s:%d: %s: no such file", path, n+1, target))
				continue
			}
			if anchor == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			body, err := os.ReadFile(dest)
			if err != nil {
				return nil, err
			}
			if !Anchors(string(body))[anchor] {
				broken = append(broken, fmt.Sprintf("%s:%d: %s: no such heading", path, n+1, target))
			}
		}
	}
	return broken, nil
}
