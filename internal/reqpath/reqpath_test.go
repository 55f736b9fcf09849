package reqpath

import "testing"

func TestValidate(t *testing.T) {
	valid := []string{
		"/", "/v1/customers", "/v1/customers/", "/v1/customers/cus_123",
		"/v1/files/report%20final.pdf", "/v1/names/%C3%A9t%C3%A9", "/a-b_c~d.e", "/v1/models/gpt-4o:generate",
		"/v1/x*y", "/...", "/a/.hidden", "/a/b..c",
	}
	for _, p := range valid {
		if err := Validate(p); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", p, err)
		}
	}
	invalid := []string{
		"", "v1/customers", "*",
		"/v1/../admin", "/v1/./customers", "/v1/customers/..", "/v1/customers/.", "/..", "/.",
		"//v1/customers", "/v1//customers",
		"/v1/customers%2Fadmin", "/v1/customers%2fadmin", "/v1%5Cadmin", "/v1%5cadmin",
		"/v1/%2e%2e/admin", "/v1/%2E%2E/admin", "/v1/%2e/x", "/v1/%00", "/v1/a%252e%252e",
		"/v1/%C0%AE%C0%AE/admin", "/v1/%c0%af", "/v1/%E0%80%AE", // overlong UTF-8
		"/v1/%ff", "/v1/%", "/v1/%2", "/v1/%zz",
		"/v1\\admin", "/v1/customers;jsessionid=1", "/v1/customers#frag", "/v1/customers?x=1",
		"/v1/cus tomers", "/v1/\x00", "/v1/\r\n", "/v1/\x7f", "/v1/caf\xc3\xa9", "/v1/%0d%0a",
	}
	for _, p := range invalid {
		if err := Validate(p); err == nil {
			t.Errorf("Validate(%q) = nil, want an error", p)
		}
	}
}
