package resolve

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/scripts/docgen"
)

// TestReasonTableDoc keeps the error table of docs/agents.md what the
// tables of reason.go say: every reason an agent can get, its status and
// its message. PHANTOM_UPDATE_DOCS=1 (make docs) rewrites it.
func TestReasonTableDoc(t *testing.T) {
	docgen.Sync(t, "docs/agents.md", "reasons", reasonTable())
}

// reasonTable renders both tables, ordered by status and, within one
// status, as reason.go lists them; then what a reason this proxy does not
// know gets.
func reasonTable() string {
	type row struct {
		reasonEntry
		from string
	}
	var rows []row
	for _, r := range reasons {
		rows = append(rows, row{r, "resolve"})
	}
	for _, r := range proxyReasons {
		rows = append(rows, row{r, "proxy"})
	}
	slices.SortStableFunc(rows, func(a, b row) int { return a.status - b.status })

	var b strings.Builder
	b.WriteString("| status | `reason` | message | from |\n|---:|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | `%s` | %s | %s |\n", r.status, r.reason, docgen.Cell(r.message), r.from)
	}
	status, message := Refusal("")
	fmt.Fprintf(&b, "| %d | any other (a newer engine's) | %s | proxy |\n", status, docgen.Cell(message))
	return b.String()
}
