package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
		"the cluster did not form; the nodes' logs:\n%s", nodeLogs(nodes))
	return nodes
}

// nodeLogs prints, when a failure message is written, each node's log.
type nodeLogs []*Vault

func (ns nodeLogs) String() string {
	var b strings.Builder
	for i, v := range ns {
		fmt.Fprintf(&b, "--- node %d (%s):\n%s\n", i+1, v.Addr, v.Log)
	}
	return b.String()
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

// start runs the server in its own process group, so stopping it also
// reaches the plugin processes Vault starts.
func (v *Vault) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(v.args[0], v.args[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+v.Home, "VAULT_ADDR=", "VAULT_TOKEN=", "VAULT_BIN="+v.tools.Vault)
	cmd.Stdout, cmd.Stderr = v.Log, v.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting vault: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	v.pid = cmd.Process.Pid
	var once sync.Once
	v.stop = func() { once.Do(func() { stopGroup(cmd.Process.Pid, done) }) }
	t.Cleanup(v.stop)
}

// PluginPIDs returns the processes of the Phantom plugin that this server
// started (children of the server running the plugin binary).
func (v *Vault) PluginPIDs(t testing.TB) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ')'.
		s := string(stat)
		comm := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(v.pid) && strings.HasPrefix(PluginName, comm) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Crash kills the server and its plugins at once, with no graceful step-down.
func (v *Vault) Crash() { syscall.Kill(-v.pid, syscall.SIGKILL) }

// Stop stops the server (and its plugins).
func (v *Vault) Stop() { v.stop() }

// Restart stops a persistent server and starts it again, unsealed.
func (v *Vault) Restart(t testing.TB) {
	t.Helper()
	v.stop()
	v.start(t)
	testutil.Eventually(t, 15*time.Second, v.listening, "vault did not restart; its log:\n%s", v.Log)
	v.unseal(t)
}

// Unseal unseals a persistent server sealed with `vault operator seal`.
func (v *Vault) Unseal(t testing.TB) { v.unseal(t) }

func (v *Vault) unseal(t testing.TB) {
	t.Helper()
	v.MustCLI(t, "operator", "unseal", v.unsealKey)
	v.waitActive(t)
}

func (v *Vault) waitActive(t testing.TB) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, v.healthy, "vault did not become active; its log:\n%s", v.Log)
}

func (v *Vault) healthy() bool {
	resp, err := pollClient.Get(v.Addr + "/v1/sys/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (v *Vault) listening() bool {
	c, err := net.DialTimeout("tcp", v.hostPort(), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stopGroup ends a process group we started: politely, then firmly.
func stopGroup(pid int, done <-chan struct{}) {
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}
