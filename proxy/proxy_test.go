package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestInjectionStyles(t *testing.T) {
	tests := []struct {
		name   string
		adjust func(*Grant)
		check  func(t *testing.T, r *http.Request)
	}{
		{"bearer", nil, func(t *testing.T, r *http.Request) {
			if got := r.Header.Get("Authorization"); got != "Bearer "+realKey {
				t.Fatalf("Authorization %q", got)
			}
		}},
		{"header with format", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "header", "Authorization", "Token {{credential}}"
		}, func(t *testing.T, r *http.Request) {
			if got := r.Header.Get("Authorization"); got != "Token "+realKey {
				t.Fatalf("Authorization %q", got)
			}
		}},
		{"x-api-key", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "header", "x-api-key", "{{credential}}"
			g.Headers = map[string]string{"anthropic-version": "2023-06-01"}
		}, func(t *testing.T, r *http.Request) {
			if r.Header.Get("X-Api-Key") != realKey || r.Header.Get("Anthropic-Version") != "2023-06-01" {
				t.Fatalf("headers %v", r.Header)
			}
		}},
		{"basic", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "basic", "Authorization", "{{credential}}:"
		}, func(t *testing.T, r *http.Request) {
			user, pass, ok := r.BasicAuth()
			if !ok || user != realKey || pass != "" {
				t.Fatalf("basic auth %q %q %v", user, pass, ok)
			}
		}},
		{"query", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "query", "key", "{{credential}}"
		}, func(t *testing.T, r *http.Request) {
			if got := r.URL.Query()["key"]; len(got) != 1 || got[0] != realKey {
				t.Fatalf("key %v", got)
			}
			if r.URL.Query().Get("alt") != "json" {
				t.Fatalf("other parameters lost: %v", r.URL.RawQuery)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, seen := recordingUpstream(t)
			p := newTestProxy(t, up.URL, tt.adjust)
			resp, body := get(t, p.url+"/v1/models?alt=json&key=attacker", map[string]string{"Authorization": "Bearer " + p.token})
			if resp.StatusCode != 200 || body != `{"ok":true}` {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			r := seen.last(t)
			tt.check(t, r)
			assertNoToken(t, r, p.token)
		})
	}
}

// assertNoToken fails if the phantom token reached the upstream anywhere.
func assertNoToken(t *testing.T, r *http.Request, tok string) {
	t.Helper()
	var dump bytes.Buffer
	r.Header.Write(&dump)
	dump.WriteString(r.RequestURI)
	body, _ := io.ReadAll(r.Body)
	dump.Write(body)
	if strings.Contains(dump.String(), tok) || strings.Contains(dump.String(), base64.StdEncoding.EncodeToString([]byte(tok))) {
		t.Fatalf("the upstream received the phantom token:\n%s", dump.String())
	}
}

func TestTokenFoundWhereverSDKsPutIt(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	p.srv.finder = newTokenFinder([]string{"X-Custom-Key"}, DefaultQueryParams)
	basicUser := base64.StdEncoding.EncodeToString([]byte(p.token + ":"))
	basicPass := base64.StdEncoding.EncodeToString([]byte("user:" + p.token))
	for name, tc := range map[string]struct {
		header map[string]string
		query  string
	}{
		"bearer":         {header: map[string]string{"Authorization": "Bearer " + p.token}},
		"basic user":     {header: map[string]string{"Authorization": "Basic " + basicUser}},
		"basic password": {header: map[string]string{"Authorization": "Basic " + basicPass}},
		"x-api-key":      {header: map[string]string{"x-api-key": p.token}},
		"api-key":        {header: map[string]string{"api-key": p.token}},
		"x-goog-api-key": {header: map[string]string{"x-goog-api-key": p.token}},
		"configured":     {header: map[string]string{"X-Custom-Key": p.token}},
		"query key":      {query: "key=" + p.token},
		"query api_key":  {query: "api_key=" + p.token},
		"same twice":     {header: map[string]string{"x-api-key": p.token, "Authorization": "Bearer " + p.token}},
	} {
		t.Run(name, func(t *testing.T) {
			before := seen.count()
			target := p.url + "/v1/x"
			if tc.query != "" {
				target += "?" + tc.query + "&keep=1"
			}
			resp, body := get(t, target, tc.header)
			if resp.StatusCode != 200 || seen.count() != before+1 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			r := seen.last(t)
			assertNoToken(t, r, p.token)
			if r.Header.Get("Authorization") != "Bearer "+realKey {
				t.Fatalf("Authorization %q", r.Header.Get("Authorization"))
			}
			if tc.query != "" && r.URL.RawQuery != "keep=1" {
				t.Fatalf("query %q", r.URL.RawQuery)
			}
		})
	}
}

func BenchmarkFindToken(b *testing.B) {
	f := newTokenFinder(nil, DefaultQueryParams)
	h := http.Header{"Authorization": {"Bearer " + mintToken(b)}, "Content-Type": {"application/json"}}
	for b.Loop() {
		if _, err := f.find(h, "limit=10"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRefusedBeforeVault(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	other := mintToken(t)
	tampered := p.token[:len(p.token)-1] + map[bool]string{true: "A", false: "B"}[p.token[len(p.token)-1] != 'A']
	for name, tc := range map[string]struct {
		header map[string]string
		path   string
		status int
		typ    string
	}{
		"no token":          {nil, "/v1/x", 401, errUnauthorized},
		"a real key":        {map[string]string{"Authorization": "Bearer " + realKey}, "/v1/x", 401, errUnauthorized},
		"tampered checksum": {map[string]string{"Authorization": "Bearer " + tampered}, "/v1/x", 401, errUnauthorized},
		"two tokens":        {map[string]string{"Authorization": "Bearer " + p.token, "x-api-key": other}, "/v1/x", 400, errBadRequest},
		"token and garbage": {map[string]string{"Authorization": "Bearer " + p.token, "x-api-key": "junk"}, "/v1/x", 401, errUnauthorized},
		"encoded slash":     {map[string]string{"Authorization": "Bearer " + p.token}, "/v1/a%2Fb", 400, errBadRequest},
		"encoded dots":      {map[string]string{"Authorization": "Bearer " + p.token}, "/v1/%2e%2e/admin", 400, errBadRequest},
		"double slash":      {map[string]string{"Authorization": "Bearer " + p.token}, "//v1/x", 400, errBadRequest},
		"semicolon":         {map[string]string{"Authorization": "Bearer " + p.token}, "/v1/x;a=b", 400, errBadRequest},
		"upgrade":           {map[string]string{"Authorization": "Bearer " + p.token, "Connection": "Upgrade", "Upgrade": "websocket"}, "/v1/x", 400, errBadRequest},
	} {
		t.Run(name, func(t *testing.T) {
			calls := len(p.engine.Resolves())
			req, _ := http.NewRequest("GET", p.url+"/", nil)
			req.URL.Opaque = tc.path // sent as is, not cleaned
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, body := do(t, req)
			wantError(t, resp, body, tc.status, tc.typ)
			// Only a request without credentials is asked for them (git
			// sends its remote URL's only then).
			if got, want := resp.Header.Get("WWW-Authenticate"), map[bool]string{true: `Basic realm="phantom"`}[tc.header == nil]; got != want {
				t.Fatalf("WWW-Authenticate %q, want %q", got, want)
			}
			if len(p.engine.Resolves()) != calls {
				t.Fatal("the engine was asked about a request refused locally")
			}
		})
	}
	if seen.count() != 0 {
		t.Fatal("a refused request reached the upstream")
	}
}

func TestDecisionsMapToStatuses(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	for reason, want := range map[string]struct {
		status int
		typ    string
	}{
		"unknown_token": {401, errUnauthorized}, "expired": {401, errUnauthorized}, "revoked": {401, errUnauthorized},
		"uses_exhausted": {401, errUnauthorized}, "route_deleted": {401, errUnauthorized},
		"method_not_allowed": {403, errForbidden}, "path_not_allowed": {403, errForbidden}, "cidr_denied": {403, errForbidden},
		"bad_request": {400, errBadRequest},
	} {
		tok := mintToken(t)
		p.engine.Deny(tok, reason)
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + tok})
		wantError(t, resp, body, want.status, want.typ)
		if !strings.Contains(body, `"reason":"`+reason+`"`) {
			t.Errorf("%s: body %s", reason, body)
		}
	}
	p.engine.Fail(errors.New("dial tcp 10.0.0.1:8200: connection refused"))
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	wantError(t, resp, body, 503, errUnavailable)
	if strings.Contains(body, "10.0.0.1") {
		t.Fatalf("internal error text reached the agent: %s", body)
	}
	if seen.count() != 0 {
		t.Fatal("a denied request reached the upstream")
	}
}

func TestResolveGetsExactRequest(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL+"/base", nil)
	req, _ := http.NewRequest("POST", p.url+"/", strings.NewReader(`{"a":1}`))
	req.URL.Opaque = "/v1/files/report%20final.pdf:meta"
	req.URL.RawQuery = "b=2&a=%2F1"
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, _ := do(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	call := p.engine.Resolves()[0]
	if call.Method != "POST" || call.Path != "/v1/files/report%20final.pdf:meta" || call.ClientIP != "127.0.0.1" {
		t.Fatalf("resolve request %+v", call)
	}
	if got := seen.raw[0]; got != "/base/v1/files/report%20final.pdf:meta?b=2&a=%2F1" {
		t.Fatalf("upstream request target %q", got)
	}
	r := seen.last(t)
	if r.Header.Get("X-Forwarded-For") != "" {
		t.Fatalf("forwarded a client-supplied X-Forwarded-For: %q", r.Header.Get("X-Forwarded-For"))
	}
	if body, _ := io.ReadAll(r.Body); string(body) != `{"a":1}` {
		t.Fatalf("body %q", body)
	}
}

func TestConnectionHeaderCannotStripTheKey(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, func(g *Grant) {
		g.AuthType, g.AuthName, g.AuthFormat = "header", "x-api-key", "{{credential}}"
	})
	for _, conn := range []string{"Authorization", "X-Api-Key", "x-api-key, Authorization"} {
		resp, body := get(t, p.url+"/v1/x", map[string]string{"x-api-key": p.token, "Connection": conn})
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if got := seen.last(t).Header.Get("X-Api-Key"); got != realKey {
			t.Fatalf("Connection: %s stripped the injected key (got %q)", conn, got)
		}
	}
}
