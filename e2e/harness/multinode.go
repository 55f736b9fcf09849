package harness

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/testutil"
)

// Addrs is the nodes' addresses as one -vault-addr list.
func Addrs(nodes []*Vault) string {
	addrs := make([]string, len(nodes))
	for i, v := range nodes {
		addrs[i] = v.Addr
	}
	return strings.Join(addrs, ",")
}

// RestartNode stops a node of a Raft cluster gracefully (SIGTERM: an
// active node steps down), leaves it down for down, starts it again and
// unseals it, then waits until it serves as the active node or a standby.
func (v *Vault) RestartNode(t testing.TB, down time.Duration) {
	t.Helper()
	v.stop()
	time.Sleep(down)
	v.start(t)
	testutil.Eventually(t, 15*time.Second, v.listening, "vault did not restart; its log:\n%s", v.Log)
	v.MustCLI(t, "operator", "unseal", v.unsealKey)
	testutil.Eventually(t, 60*time.Second, v.Serving, "the node did not serve again; its log:\n%s", v.Log)
}

// Serving reports whether the node is unsealed and active, or a standby
// (sys/health?standbyok=true answers 200).
func (v *Vault) Serving() bool {
	resp, err := pollClient.Get(v.Addr + "/v1/sys/health?standbyok=true")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Active reports whether the node is the active node of its cluster.
func (v *Vault) Active() bool { return v.healthy() }
