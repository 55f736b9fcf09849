package sdk

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/phantomvault/phantom/e2e/harness"
)

// forwardChildEnv marks the child process of TestOpenAIThroughHTTPSProxy.
const forwardChildEnv = "PHANTOM_SDK_FORWARD_CHILD"

// TestOpenAIThroughHTTPSProxy runs openai-go, configured by nothing but its
// environment (OPENAI_BASE_URL naming the real-looking API host,
// OPENAI_API_KEY holding the phantom token, HTTPS_PROXY and SSL_CERT_FILE),
// through Phantom's forward proxy. Go reads HTTPS_PROXY and SSL_CERT_FILE
// once per process, so the client runs in a child process of its own, as an
// agent's tool would.
func TestOpenAIThroughHTTPSProxy(t *testing.T) {
	if os.Getenv(forwardChildEnv) == "1" {
		openAIChild(t)
		return
	}
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	ca := harness.NewUpstreamCA(t)
	up := &fakeOpenAI{release: make(chan struct{})}
	api := harness.StartTLSUpstream(t, ca, "api.openai.phantom.test", up)
	// Forward mode serves routes whose upstream is the bare origin.
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+api.URL, "allowed_paths=/v1/chat/completions",
		"allowed_methods=POST", "credential="+openaiKey, "token_prefix=sk-proj-")
	fp := harness.StartForwardProxy(t, v, ca, []*harness.TLSUpstream{api})
	tok, _ := v.Mint(t, "openai", "ttl=1h")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestOpenAIThroughHTTPSProxy$", "-test.v")
	cmd.Env = append(fp.ClientEnv(t, ""), forwardChildEnv+"=1", "CI="+os.Getenv("CI"), "VAULT_BIN="+os.Getenv("VAULT_BIN"),
		"GOCACHE="+goEnv(t, "GOCACHE"), "GOPATH="+goEnv(t, "GOPATH"), "GOFLAGS="+os.Getenv("GOFLAGS"),
		"OPENAI_BASE_URL="+api.URL+"/v1/", "OPENAI_API_KEY="+tok)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "RELEASE" {
			close(up.release) // the child has the first chunk: the upstream finishes only now
			continue
		}
		out = append(out, line)
	}
	err := cmd.Wait()
	all := strings.Join(out, "\n")
	if err != nil || !strings.Contains(all, "COMPLETION hello from upstream") || !strings.Contains(all, "STREAM hel|hello") {
		t.Fatalf("the child: %v\n%s\n%s\nproxy output:\n%s", err, all, stderr.String(), fp.Out)
	}
	if up.leak.Load() {
		t.Fatal("the upstream received a phantom token")
	}
}

// openAIChild is the agent: the SDK as its users write it, from the
// environment only.
func openAIChild(t *testing.T) {
	client := openai.NewClient()
	params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4o, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	ctx := context.Background()
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	fmt.Println("COMPLETION " + resp.Choices[0].Message.Content)
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	if !stream.Next() {
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	first := stream.Current().Choices[0].Delta.Content
	fmt.Println("RELEASE")
	text := first
	for stream.Next() {
		if len(stream.Current().Choices) > 0 {
			text += stream.Current().Choices[0].Delta.Content
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	fmt.Println("STREAM " + first + "|" + text)
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
