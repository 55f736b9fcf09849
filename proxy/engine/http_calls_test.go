package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
)

func TestParseDecision(t *testing.T) {
	parse := func(answer string) (*Decision, error) {
		var out struct{ Data *resolve.Answer }
		if err := json.Unmarshal([]byte(answer), &out); err != nil {
			return nil, err
		}
		return parseDecision(out.Data)
	}
	d, err := parse(allowJSON)
	if err != nil || !*d.Allowed || d.Grant.Credential != "k" || d.Grant.Upstream.Host != "api.example.com" || d.Grant.ExpiresAt.Year() != 2030 {
		t.Fatalf("good answer: %+v %v", d, err)
	}
	for name, mutate := range map[string][2]string{
		"no allowed":        {`"allowed":true,`, ``},
		"no credential":     {`"credential":"k",`, ``},
		"bad upstream":      {`"https://api.example.com"`, `"ftp://x"`},
		"no placeholder":    {`"Bearer {{credential}}"`, `"Bearer"`},
		"bad header":        {`"headers":{}`, `"headers":{"a":1}`},
		"denial, no reason": {`"allowed":true`, `"allowed":false`},
	} {
		answer := strings.Replace(allowJSON, mutate[0], mutate[1], 1)
		if answer == allowJSON {
			t.Fatalf("%s: the mutation changed nothing", name)
		}
		if _, err := parse(answer); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if d, err := parse(`{"data":{"allowed":false,"reason":"revoked"}}`); err != nil || *d.Allowed || d.Reason != "revoked" {
		t.Fatalf("denial: %+v %v", d, err)
	}
}

// TestBatchAnswer: a batch's decisions pair with the grants of their routes;
// an allowed decision whose route has no grant fails the whole call.
func TestBatchAnswer(t *testing.T) {
	answer := `{"data":{"results":[
		{"allowed":true,"route":"a","accessor":"pha_1","expires_at":"2030-01-01T00:00:00Z"},
		{"allowed":false,"reason":"revoked","route":"b","accessor":"pha_2"},
		{"allowed":true,"route":"c","accessor":"pha_3"}],
	"routes":{
		"a":{"upstream":"https://a.example.com","credential":"ka","auth_type":"bearer","auth_name":"Authorization","auth_format":"Bearer {{credential}}","headers":{}},
		"c":{"upstream":"https://c.example.com","credential":"kc","auth_type":"header","auth_name":"x-api-key","auth_format":"{{credential}}","headers":{"v":"1"}}}}}`
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, answer) }))
	t.Cleanup(vault.Close)
	v, err := New(Config{Addr: vault.URL, RoleIDFile: "x", SecretIDFile: "x"}, testMetrics(t), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]resolve.Request, 3)
	ds, err := v.calls.resolve(context.Background(), "t", reqs)
	if err != nil {
		t.Fatal(err)
	}
	if g := ds[0].Grant; !*ds[0].Allowed || g.Credential != "ka" || g.Upstream.Host != "a.example.com" || g.ExpiresAt.Year() != 2030 {
		t.Errorf("first: %+v %+v", ds[0], g)
	}
	if *ds[1].Allowed || ds[1].Reason != "revoked" || ds[1].Grant != nil {
		t.Errorf("second: %+v", ds[1])
	}
	if g := ds[2].Grant; g.Credential != "kc" || g.AuthName != "x-api-key" || g.Headers["v"] != "1" {
		t.Errorf("third: %+v", g)
	}

	answer = strings.Replace(answer, `"c":{`, `"d":{`, 1)
	if _, err := v.calls.resolve(context.Background(), "t", reqs); err == nil || !strings.Contains(err.Error(), `no grant for route "c"`) {
		t.Fatalf("a decision without its grant: %v", err)
	}
	if _, err := v.calls.resolve(context.Background(), "t", reqs[:2]); err == nil {
		t.Fatal("3 decisions for 2 requests were accepted")
	}
}

// The answer's retry_after_ms and limits survive batching: each result of a
// batch carries its own.
func TestLimitsSurviveBatching(t *testing.T) {
	raw := `{"results":[{"allowed":false,"reason":"rate_limited","retry_after_ms":1234,"route":"r","accessor":"a1"},
		{"allowed":true,"route":"r","accessor":"a2","limits":{"usage_format":"openai","max_output_tokens":7}}],
		"routes":{"r":{"upstream":"https://x","credential":"c","auth_type":"bearer","auth_name":"Authorization","auth_format":"Bearer {{credential}}","headers":{}}}}`
	var reply resolve.Reply
	if err := json.Unmarshal([]byte(raw), &reply); err != nil {
		t.Fatal(err)
	}
	answers, err := reply.Answers(2)
	if err != nil {
		t.Fatal(err)
	}
	d0, err0 := parseDecision(answers[0])
	d1, err1 := parseDecision(answers[1])
	if err0 != nil || err1 != nil || d0.RetryAfterMS != 1234 || d1.Grant.Limits == nil || d1.Grant.Limits.MaxOutputTokens != 7 {
		t.Fatalf("%+v %v; %+v %v", d0, err0, d1, err1)
	}
}

// TestIsMalformed: only a 400 that is not about X-Vault-Forward means the
// engine refused a call as malformed (a usage report then is dropped, not
// sent again).
func TestIsMalformed(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("reporting usage to Vault: %w", &vaultError{status: http.StatusBadRequest, errors: []string{"bad report"}}), true},
		{&vaultError{status: http.StatusBadRequest, errors: []string{"forwarding via header X-Vault-Forward disabled in configuration"}}, false},
		{&vaultError{status: http.StatusForbidden}, false},
		{io.ErrUnexpectedEOF, false},
	} {
		if got := IsMalformed(c.err); got != c.want {
			t.Errorf("IsMalformed(%v) = %v", c.err, got)
		}
	}
}
