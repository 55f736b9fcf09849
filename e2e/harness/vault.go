package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/testutil"
)

// Vault is a real Vault server on loopback with Phantom installed at
// phantom/ by bootstrap/bootstrap.sh: a dev server, or a persistent one (Raft
// storage on disk, unsealed with its key) that survives Restart.
type Vault struct {
	Addr  string // http://127.0.0.1:port
	Token string // root
	Home  string // HOME for the server and the CLI: ~/.vault-token stays untouched
	Log   *testutil.LockedBuffer

	// RoleIDFile and SecretIDFile are the proxy's AppRole credentials that
	// the bootstrap wrote.
	RoleIDFile, SecretIDFile string

	tools     *Tools
	plugins   string
	pid       int      // of the running server
	args      []string // the server's command line
	unsealKey string
	stop      func()
}

// StartDevVault starts `vault server -dev` and bootstraps Phantom.
func StartDevVault(t testing.TB) *Vault {
	t.Helper()
	v := newVault(t, "")
	v.Token = "root"
	v.args = []string{"bash", filepath.Join(v.tools.Root, "scripts", "stack.sh"), "vault-dev", v.hostPort(), v.PluginDir()}
	v.start(t)
	v.waitActive(t)
	v.Bootstrap(t)
	return v
}

// StartPersistentVault starts a single-node Raft server, initialises and
// unseals it, and bootstraps Phantom.
func StartPersistentVault(t testing.TB) *Vault {
	t.Helper()
	v := newVault(t, "")
	v.startRaftNode(t, "node1", "")
	init := v.JSON(t, "operator", "init", "-key-shares=1", "-key-threshold=1")
	v.unsealKey = init["unseal_keys_b64"].([]any)[0].(string)
	v.Token = init["root_token"].(string)
	v.unseal(t)
	v.Bootstrap(t)
	return v
}

// StartRaftCluster starts an n-node Vault HA cluster with integrated
// storage: node 0 is initialised and bootstrapped, the others join it
// (sharing its plugin directory, as identical nodes would) and are unsealed.
func StartRaftCluster(t testing.TB, n int) []*Vault {
	t.Helper()
	first := StartPersistentVault(t)
	nodes := []*Vault{first}
	for i := 1; i < n; i++ {
		v := newVault(t, first.PluginDir())
		v.Token, v.unsealKey = first.Token, first.unsealKey
		v.RoleIDFile, v.SecretIDFile = first.RoleIDFile, first.SecretIDFile
		v.startRaftNode(t, fmt.Sprintf("node%d", i+1), first.Addr)
		testutil.Eventually(t, 30*time.Second, func() bool { _, _, err := v.Run(t, "operator", "unseal", v.unsealKey); return err == nil },
			"node %d could not be unsealed; its log:\n%s", i+1, v.Log)
		nodes = append(nodes, v)
	}
	testutil.Eventually(t, 60*time.Second, func() bool { return first.voters(t) == n },
		"the cluster did not form; the first node's log:\n%s", first.Log)
	return nodes
}

// voters counts the Raft cluster's voters, 0 when Vault does not answer.
func (v *Vault) voters(t testing.TB) int {
	t.Helper()
	out, _, err := v.RunAs(t, v.Token, "json", "", "operator", "raft", "list-peers")
	var peers struct {
		Data struct {
			Config struct {
				Servers []struct{ Voter bool }
			}
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &peers) != nil {
		return 0
	}
	n := 0
	for _, s := range peers.Data.Config.Servers {
		if s.Voter {
			n++
		}
	}
	return n
}

// startRaftNode writes a Raft server config (joining join unless empty)
// and starts the server.
func (v *Vault) startRaftNode(t testing.TB, nodeID, join string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(v.hostPort())
	config, err := v.tools.stackCommand("raft-config", nodeID, v.Home, port, v.PluginDir(), join).Output()
	if err != nil {
		t.Fatalf("scripts/stack.sh raft-config: %v", err)
	}
	cfgFile := filepath.Join(v.Home, "vault.hcl")
	if err := os.MkdirAll(filepath.Join(v.Home, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, config, 0o600); err != nil {
		t.Fatal(err)
	}
	v.args = []string{v.tools.Vault, "server", "-config=" + cfgFile}
	v.start(t)
	testutil.Eventually(t, 15*time.Second, v.listening, "vault did not start; its log:\n%s", v.Log)
}

// newVault prepares a server's directories; plugins is its plugin
// directory, or "" for one of its own.
func newVault(t testing.TB, plugins string) *Vault {
	t.Helper()
	tl := Require(t)
	v := &Vault{Home: t.TempDir(), Log: new(testutil.LockedBuffer), tools: tl, plugins: plugins}
	v.Addr = "http://127.0.0.1:" + strconv.Itoa(freePortPair(t)) // Vault also takes port+1
	if plugins == "" {
		v.plugins = filepath.Join(v.Home, "plugins")
		if err := os.Mkdir(v.plugins, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *Vault) hostPort() string { return strings.TrimPrefix(v.Addr, "http://") }

// PluginDir is the server's plugin_directory.
func (v *Vault) PluginDir() string { return v.plugins }
