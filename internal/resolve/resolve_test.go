package resolve

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// wire decodes JSON into generic values, as any reader of the wire sees it.
func wire(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDataIsTheWireJSON: the map the engine returns encodes exactly as the
// types the proxy decodes, for every shape of answer.
func TestDataIsTheWireJSON(t *testing.T) {
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	grant := &RouteGrant{Upstream: "https://api.example.com/base", Credential: "k", AuthType: AuthHeader,
		AuthName: "x-api-key", AuthFormat: "Key " + Placeholder, Headers: map[string]string{"v": "1"}}
	withUses := Allow("r", "pha_1", expires)
	withUses.UsesRemaining = new(0)
	single := Allow("r", "pha_1", expires)
	single.RouteGrant = grant
	limited := Allow("r", "pha_1", expires)
	limited.Limits = &Limits{UsageFormat: UsageOpenAI, AllowedModels: []string{"gpt-4o*"}, MaxOutputTokens: 512, BudgetRemaining: new(int64(0))}
	sigv4 := Allow("r", "pha_1", expires)
	sigv4.RouteGrant = &RouteGrant{Upstream: "https://s3.us-east-1.amazonaws.com", Credential: strings.Repeat("ab", 32),
		AuthType: AuthAWSSigV4, Headers: map[string]string{}, AWS: &AWSGrant{AccessKeyID: "AKID", Region: "us-east-1", Service: "s3", Date: "20261207", SessionToken: "st"}}
	throttled := Deny(ReasonRateLimited, "slow down")
	throttled.RetryAfterMS = 1500
	known := Deny(ReasonRevoked, "token was revoked")
	known.Route, known.Accessor = "r", "pha_2"
	signed := Allow("r", "pha_1", expires)
	signed.HMACSignature = &HMACSignature{Timestamp: "1700000000", Signature: "c2ln"}
	signed.RouteGrant = &RouteGrant{Upstream: "https://api.example.com", AuthType: AuthHMAC, Headers: map[string]string{},
		HMAC: &HMACGrant{SignatureHeader: "CB-ACCESS-SIGN", KeyID: "key-id-1234", KeyIDHeader: "CB-ACCESS-KEY", Body: HMACBodyRaw, MaxBody: 65536}}
	needs := Deny(ReasonHMACInputs, "send hmac")
	needs.HMACNeeds = &HMACNeeds{Body: HMACBodySHA256}
	answers := map[string]*Answer{
		"hmac signed":          signed,
		"hmac inputs required": needs,
		"denial":               Deny(ReasonBadRequest, "token is required"),
		"denial, known token":  known,
		"allowed in a batch":   Allow("r", "pha_1", expires),
		"last use":             withUses,
		"allowed alone":        single,
		"with limits":          limited,
		"sigv4":                sigv4,
		"rate limited":         throttled,
	}
	for name, a := range answers {
		if got, want := wire(t, a.Data()), wire(t, a); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Data encodes as\n%v\nthe type as\n%v", name, got, want)
		}
	}
	batch := &BatchAnswer{Results: []*Answer{answers["allowed in a batch"], answers["denial"]}, Routes: map[string]*RouteGrant{"r": grant}}
	if got, want := wire(t, batch.Data()), wire(t, batch); !reflect.DeepEqual(got, want) {
		t.Errorf("batch: Data encodes as\n%v\nthe type as\n%v", got, want)
	}
	// headers is always an object, never null.
	if h, ok := (&RouteGrant{}).Data()["headers"].(map[string]string); !ok || h == nil {
		t.Errorf("nil headers give %#v", (&RouteGrant{}).Data()["headers"])
	}
}

// TestRequestFieldNames: the JSON names of a request are the names the
// engine's path declares.
func TestRequestFieldNames(t *testing.T) {
	var tags []string
	rt := reflect.TypeFor[Request]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		tags = append(tags, name)
	}
	if want := []string{FieldToken, FieldMethod, FieldPath, FieldClientIP, FieldAction, FieldHMAC}; !reflect.DeepEqual(tags, want) {
		t.Errorf("Request's JSON names are %v, the fields %v", tags, want)
	}
	if tag := reflect.TypeFor[BatchRequest]().Field(0).Tag.Get("json"); tag != FieldRequests {
		t.Errorf("BatchRequest's JSON name is %q, the field %q", tag, FieldRequests)
	}
}

func TestRefusal(t *testing.T) {
	for reason, want := range map[string]int{
		ReasonUnknownToken: 401, ReasonExpired: 401, ReasonRevoked: 401, ReasonRouteDeleted: 401, ReasonUsesExhausted: 401,
		ReasonCIDRDenied: 403, ReasonMethodNotAllowed: 403, ReasonPathNotAllowed: 403, ReasonBadRequest: 400,
		ReasonRateLimited: 429, ReasonBudgetExhausted: 401, ReasonModelNotAllowed: 403, ReasonOutputCapExceeded: 403,
		ReasonOriginNotAllowed: 403, ReasonBudgetPending: 429, ReasonActionNotAllowed: 403, ReasonHMACInputs: 502,
		ReasonCredentialExchange: 502,
	} {
		status, message := Refusal(reason)
		if status != want || message == "" || !Known(reason) {
			t.Errorf("%s: %d %q known=%v, want %d", reason, status, message, Known(reason), want)
		}
	}
	if len(Reasons()) != 18 {
		t.Errorf("reasons: %v", Reasons())
	}
	// The proxy's own are answered from the same table, and are no deny
	// reasons of the engine.
	for reason, want := range map[string]int{
		ReasonOverloaded: 503, ReasonVaultUnavailable: 503, ReasonBodyTooLarge: 413,
		ReasonBodyTimeout: 408, ReasonUpstreamError: 502, ReasonUpstreamTimeout: 504,
	} {
		if status, message := Refusal(reason); status != want || message == "" || Known(reason) {
			t.Errorf("%s: %d %q known=%v, want %d and not an engine reason", reason, status, message, Known(reason), want)
		}
	}
	// A reason from a newer engine is refused as out of scope, saying nothing.
	if status, message := Refusal("rate_limited_by_engine"); status != http.StatusForbidden || message != "the request was refused" || Known("rate_limited_by_engine") {
		t.Errorf("unknown reason: %d %q", status, message)
	}
}

func TestValidMethod(t *testing.T) {
	for m, want := range map[string]bool{
		"GET": true, "PATCH": true, "PROPFIND": true,
		"": false, "get": false, "M-SEARCH": false, "X_Y": false, "GET ": false, "GÉT": false, "G1": false,
	} {
		if ValidMethod(m) != want {
			t.Errorf("ValidMethod(%q) = %v", m, !want)
		}
	}
	if !NeverAllowed("CONNECT") || !NeverAllowed("TRACE") || NeverAllowed("GET") {
		t.Error("NeverAllowed")
	}
}

func TestInjectionDefaults(t *testing.T) {
	for _, tc := range []struct{ authType, header, param, format, wantName, wantFormat string }{
		{AuthBearer, "", "", "", "Authorization", "Bearer {{credential}}"},
		{AuthBasic, "", "", "", "Authorization", "{{credential}}:"},
		{AuthBasic, "", "", "user:{{credential}}", "Authorization", "user:{{credential}}"},
		{AuthHeader, "x-api-key", "", "", "x-api-key", "{{credential}}"},
		{AuthQuery, "", "key", "k-{{credential}}", "key", "k-{{credential}}"},
	} {
		name, format := Injection(tc.authType, tc.header, tc.param, tc.format)
		if name != tc.wantName || format != tc.wantFormat {
			t.Errorf("%+v: %q %q", tc, name, format)
		}
	}
	g := &Grant{Credential: "sk_1", AuthFormat: "Bearer " + Placeholder}
	if g.AuthValue() != "Bearer sk_1" {
		t.Errorf("AuthValue: %q", g.AuthValue())
	}
}

func TestCheck(t *testing.T) {
	good := Request{Token: "x", Method: "GET", Path: "/v1/a", ClientIP: "::ffff:10.1.2.3"}
	if _, reason, _ := good.Check(); reason != ReasonUnknownToken {
		t.Fatalf("a malformed token: %q", reason)
	}
	for name, mutate := range map[string]func(*Request){
		"no token":      func(r *Request) { r.Token = "" },
		"lower method":  func(r *Request) { r.Method = "get" },
		"dash method":   func(r *Request) { r.Method = "M-SEARCH" },
		"dot segment":   func(r *Request) { r.Path = "/v1/../a" },
		"no slash":      func(r *Request) { r.Path = "v1" },
		"bad client ip": func(r *Request) { r.ClientIP = "10.1.2.300" },
	} {
		r := good
		mutate(&r)
		if _, reason, message := r.Check(); reason != ReasonBadRequest || message == "" {
			t.Errorf("%s: %q %q", name, reason, message)
		}
	}
}

const allowJSON = `{"allowed":true,"route":"r","accessor":"pha_1","upstream":"https://api.example.com","credential":"k",
	"auth_type":"bearer","auth_name":"Authorization","auth_format":"Bearer {{credential}}","headers":{},"expires_at":"2030-01-01T00:00:00Z"}`

func TestValidate(t *testing.T) {
	parse := func(s string) (*Grant, error) {
		var a Answer
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			return nil, err
		}
		return a.Validate()
	}
	g, err := parse(allowJSON)
	if err != nil || g.Credential != "k" || g.Upstream.Host != "api.example.com" || g.ExpiresAt.Year() != 2030 || g.Route != "r" || g.Accessor != "pha_1" {
		t.Fatalf("good answer: %+v %v", g, err)
	}
	for name, mutate := range map[string][2]string{
		"no allowed":        {`"allowed":true,`, ``},
		"no credential":     {`"credential":"k",`, ``},
		"no auth name":      {`"auth_name":"Authorization",`, ``},
		"bad upstream":      {`"https://api.example.com"`, `"ftp://x"`},
		"no host":           {`"https://api.example.com"`, `"https://"`},
		"no placeholder":    {`"Bearer {{credential}}"`, `"Bearer"`},
		"denial, no reason": {`"allowed":true`, `"allowed":false`},
		"a short mask":      {`"headers":{},`, `"headers":{},"mask":["short"],`},
		"too many masks":    {`"headers":{},`, `"headers":{},"mask":["` + strings.Repeat(`at_0000000X","`, MaxMask) + `at_0000000Y"],`},
	} {
		answer := strings.Replace(allowJSON, mutate[0], mutate[1], 1)
		if answer == allowJSON {
			t.Fatalf("%s: the mutation changed nothing", name)
		}
		if _, err := parse(answer); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	masked := strings.Replace(allowJSON, `"headers":{},`, `"headers":{},"mask":["at_EARLIER0001"],`, 1)
	if g, err := parse(masked); err != nil || len(g.Mask) != 1 || g.Mask[0] != "at_EARLIER0001" {
		t.Errorf("an answer with an earlier credential to mask: %+v %v", g, err)
	}
	if g, err := parse(`{"allowed":false,"reason":"revoked"}`); g != nil || err != nil {
		t.Errorf("denial: %+v %v", g, err)
	}
	if _, err := parse(`{"allowed":true,"route":"r"}`); err == nil {
		t.Error("an allowed answer without a grant was accepted")
	}
}

func TestReplyAnswers(t *testing.T) {
	const batch = `{"results":[
		{"allowed":true,"route":"a","accessor":"pha_1"},
		{"allowed":false,"reason":"revoked","route":"b","accessor":"pha_2"},
		{"allowed":true,"route":"a","accessor":"pha_3"}],
	"routes":{"a":{"upstream":"https://a.example.com","credential":"ka","auth_type":"bearer","auth_name":"Authorization","auth_format":"Bearer {{credential}}","headers":{}}}}`
	decode := func(s string) *Reply {
		var r Reply
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	as, err := decode(batch).Answers(3)
	if err != nil || as[0].RouteGrant == nil || as[0].Credential != "ka" || as[2].Credential != "ka" || as[1].RouteGrant != nil {
		t.Fatalf("answers: %v %v", as, err)
	}
	if _, err := decode(batch).Answers(2); err == nil {
		t.Error("3 decisions for 2 requests were accepted")
	}
	if _, err := decode(strings.Replace(batch, `"a":{`, `"c":{`, 1)).Answers(3); err == nil || !strings.Contains(err.Error(), `no grant for route "a"`) {
		t.Errorf("a decision without its grant: %v", err)
	}
	if _, err := decode(`{"results":[null,{"allowed":false,"reason":"x"}]}`).Answers(2); err == nil {
		t.Error("a null decision was accepted")
	}
	single := decode(allowJSON)
	if as, err := single.Answers(1); err != nil || len(as) != 1 || as[0].Credential != "k" {
		t.Errorf("single: %v %v", as, err)
	}
}

func TestMatchModel(t *testing.T) {
	for _, c := range []struct {
		pattern, model string
		want           bool
	}{
		{"gpt-4o", "gpt-4o", true},
		{"gpt-4o", "gpt-4o-mini", false},
		{"gpt-4o", "GPT-4o", false},
		{"gpt-4o*", "gpt-4o-mini", true},
		{"gpt-4o*", "gpt-4", false},
		{"*", "", true},
		{"claude-*-haiku-*", "claude-3-5-haiku-20241022", true},
		{"claude-*-haiku-*", "claude-3-5-sonnet-20241022", false},
		{"*-mini", "gpt-4o-mini", true},
		{"*-mini", "gpt-4o-mini-x", false},
		{"a*b*c", "abbbc", true},
		{"a*b*c", "acb", false},
	} {
		if got := MatchModel(c.pattern, c.model); got != c.want {
			t.Errorf("MatchModel(%q, %q) = %v, want %v", c.pattern, c.model, got, c.want)
		}
	}
	if !ModelAllowed(nil, "anything") || ModelAllowed([]string{"a"}, "b") || !ModelAllowed([]string{"b", "a*"}, "ab") {
		t.Error("ModelAllowed does not apply its patterns as a list")
	}
	for _, bad := range []string{"", "gpt 4", "gpt\\4", "a**", "x\x00"} {
		if ValidModelPattern(bad) == nil {
			t.Errorf("ValidModelPattern(%q) accepted", bad)
		}
	}
}

// TestBatchOwnGrants: a result with a grant of its own keeps it; its
// route's shared grant moves onto the route's other results, so a proxy
// that looks grants up by route alone finds none for it and fails closed.
func TestBatchOwnGrants(t *testing.T) {
	grant := func(cred string) *RouteGrant {
		return &RouteGrant{Upstream: "https://a.example.com", Credential: cred, AuthType: AuthBearer,
			AuthName: "Authorization", AuthFormat: "Bearer " + Placeholder}
	}
	allowed := func(route string, g *RouteGrant) *Answer {
		a := Allow(route, "pha_"+route, time.Now())
		a.RouteGrant = g
		return a
	}
	b := &BatchAnswer{
		Results: []*Answer{allowed("r", nil), allowed("r", grant("own")), allowed("s", nil), Deny(ReasonRevoked, "")},
		Routes:  map[string]*RouteGrant{"r": grant("shared"), "s": grant("other")},
	}
	b.InlineShared()
	raw, _ := json.Marshal(b.Data())
	var r Reply
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.Routes["r"] != nil || r.Routes["s"] == nil {
		t.Fatalf("routes: %v", r.Routes)
	}
	as, err := r.Answers(4)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"shared", "own", "other"} {
		if as[i].RouteGrant == nil || as[i].Credential != want {
			t.Errorf("result %d: %+v, want credential %q", i, as[i].RouteGrant, want)
		}
	}
}
