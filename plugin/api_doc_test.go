package plugin

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/scripts/docgen"
)

// TestAPIReferenceDoc keeps docs/api.md what the engine's paths declare:
// each path's operations, fields, synopsis and help, as `vault path-help`
// shows them. PHANTOM_UPDATE_DOCS=1 (make docs) rewrites it.
func TestAPIReferenceDoc(t *testing.T) {
	docgen.Sync(t, "docs/api.md", "api", apiReference(newBackend(time.Now, rand.Reader).Backend))
}

// apiReference renders the backend's help, an index of its paths, each
// path in the backend's order, and its lease type.
func apiReference(b *framework.Backend) string {
	var out strings.Builder
	out.WriteString("```text\n" + strings.TrimSpace(b.Help) + "\n```\n\n")
	out.WriteString("| path | operations | what |\n|---|---|---|\n")
	for _, p := range b.Paths {
		title := "phantom/" + displayPattern(p.Pattern)
		fmt.Fprintf(&out, "| [`%s`](#%s) | %s | %s |\n", title, docgen.Slug(title),
			strings.Join(operations(p), ", "), docgen.Cell(p.HelpSynopsis))
	}
	for _, p := range b.Paths {
		title := "phantom/" + displayPattern(p.Pattern)
		fmt.Fprintf(&out, "\n## `%s`\n\n%s\n\n", title, docgen.Cell(p.HelpSynopsis))
		var ops []string
		for _, op := range operations(p) {
			ops = append(ops, op+" ("+httpMethod[op]+")")
		}
		fmt.Fprintf(&out, "Operations: %s.\n\n", strings.Join(ops, ", "))
		out.WriteString(fieldTable(p.Fields))
		if help := strings.TrimSpace(p.HelpDescription); help != "" {
			out.WriteString("```text\n" + help + "\n```\n")
		}
	}
	for _, s := range b.Secrets {
		fmt.Fprintf(&out, "\n## Leases: `%s`\n\n", s.Type)
		out.WriteString("A mint's answer is a Vault lease of this secret type: " +
			"`vault lease renew` and `vault lease revoke` act on it. Its data:\n\n")
		out.WriteString(fieldTable(s.Fields))
	}
	return out.String()
}

// displayPattern writes a path pattern as a reader would: (?P<name>...)
// as <name>, an optional trailing slash as a slash, no anchors.
func displayPattern(p string) string {
	var out strings.Builder
	for i := 0; i < len(p); i++ {
		if !strings.HasPrefix(p[i:], "(?P<") {
			out.WriteByte(p[i])
			continue
		}
		name := p[i+4 : i+4+strings.IndexByte(p[i+4:], '>')]
		depth := 0
		for ; i < len(p); i++ { // to the group's closing parenthesis
			if p[i] == '\\' {
				i++
				continue
			}
			if p[i] == '(' {
				depth++
			} else if p[i] == ')' {
				if depth--; depth == 0 {
					break
				}
			}
		}
		out.WriteString("<" + name + ">")
	}
	s := strings.TrimSuffix(out.String(), "$")
	if strings.HasSuffix(s, "/?") {
		s = strings.TrimSuffix(s, "?")
	}
	return s
}

// operationOrder is the order operations are listed in; httpMethod how a
// client sends each (Vault's CLI: vault list, read, write, patch, delete).
var operationOrder = []logical.Operation{logical.ListOperation, logical.ReadOperation,
	logical.CreateOperation, logical.UpdateOperation, logical.PatchOperation, logical.DeleteOperation}

var httpMethod = map[string]string{
	"list": "`LIST`", "read": "`GET`", "create": "`POST`", "update": "`POST`",
	"patch": "`PATCH`", "delete": "`DELETE`",
}

func operations(p *framework.Path) []string {
	var ops []string
	for _, op := range operationOrder {
		_, handler := p.Operations[op]
		_, callback := p.Callbacks[op]
		if handler || callback {
			ops = append(ops, string(op))
		}
	}
	return ops
}

// fieldTable lists fields by name, with their type, default and
// description; nothing when there are none.
func fieldTable(fields map[string]*framework.FieldSchema) string {
	if len(fields) == 0 {
		return ""
	}
	var out strings.Builder
	out.WriteString("| field | type | default | description |\n|---|---|---|---|\n")
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		f := fields[name]
		typ := typeName(f.Type)
		if f.Required {
			typ += ", required"
		}
		desc := docgen.Cell(f.Description)
		if len(f.AllowedValues) > 0 {
			var vals []string
			for _, v := range f.AllowedValues {
				if v == "" {
					vals = append(vals, "empty")
				} else {
					vals = append(vals, fmt.Sprintf("`%v`", v))
				}
			}
			desc += " One of " + strings.Join(vals, ", ") + "."
		}
		fmt.Fprintf(&out, "| `%s` | %s | %s | %s |\n", name, typ, defaultValue(f), desc)
	}
	out.WriteString("\n")
	return out.String()
}

func typeName(t framework.FieldType) string {
	switch t {
	case framework.TypeString:
		return "string"
	case framework.TypeBool:
		return "bool"
	case framework.TypeInt, framework.TypeInt64:
		return "integer"
	case framework.TypeDurationSecond:
		return "duration (seconds, or a Go duration such as 1h)"
	case framework.TypeCommaStringSlice:
		return "list (comma-separated)"
	case framework.TypeSlice, framework.TypeStringSlice:
		return "list"
	case framework.TypeKVPairs:
		return "key=value pairs"
	case framework.TypeMap:
		return "map"
	default:
		return t.String()
	}
}

func defaultValue(f *framework.FieldSchema) string {
	if f.Default == nil {
		return ""
	}
	if f.Type == framework.TypeDurationSecond {
		if secs, ok := f.DefaultOrZero().(int); ok {
			d := (time.Duration(secs) * time.Second).String() // 24h0m0s
			if strings.HasSuffix(d, "m0s") {
				d = strings.TrimSuffix(d, "0s")
			}
			if strings.HasSuffix(d, "h0m") {
				d = strings.TrimSuffix(d, "0m")
			}
			return "`" + d + "`"
		}
	}
	return fmt.Sprintf("`%v`", f.Default)
}
