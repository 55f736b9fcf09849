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

// TestValidateCompatibilityForms: characters that an NFKC-normalising
// upstream reads as separators, dots or escapes are refused; letters that
// merely normalise to other letters are not.
func TestValidateCompatibilityForms(t *testing.T) {
	refused := []string{
		"/v1/public/%EF%BC%8E%EF%BC%8E/admin",  // U+FF0E FULLWIDTH FULL STOP, twice
		"/v1/public%EF%BC%8Fadmin",             // U+FF0F FULLWIDTH SOLIDUS
		"/v1/public/%E2%80%A5/admin",           // U+2025 TWO DOT LEADER
		"/v1/public/%E2%80%A4%E2%80%A4",        // U+2024 ONE DOT LEADER
		"/v1/public%EF%B9%A8admin",             // U+FE68 SMALL REVERSE SOLIDUS
		"/v1/public%EF%BC%BCadmin",             // U+FF3C FULLWIDTH REVERSE SOLIDUS
		"/v1/a%EF%BC%852e",                     // U+FF05 FULLWIDTH PERCENT SIGN
		"/v1/a%EF%BC%9Bx",                      // U+FF1B FULLWIDTH SEMICOLON
		"/v1/a%EF%BC%9Fx",                      // U+FF1F FULLWIDTH QUESTION MARK
		"/v1/a%EF%BC%83x",                      // U+FF03 FULLWIDTH NUMBER SIGN
		"/v1/models/m%EF%BC%9AgenerateContent", // U+FF1A FULLWIDTH COLON
		"/v1/a%EF%B9%92x",                      // U+FE52 SMALL FULL STOP
	}
	for _, p := range refused {
		if err := Validate(p); err == nil {
			t.Errorf("Validate(%q) = nil, want an error", p)
		}
	}
	allowed := []string{
		"/v1/names/%EF%BD%81", // U+FF41 FULLWIDTH LATIN SMALL LETTER A: still one segment
		"/v1/names/%EF%AC%80", // U+FB00 LATIN SMALL LIGATURE FF
		"/v1/names/%C3%A9t%C3%A9",
		"/v1/names/e%CC%81", // e + COMBINING ACUTE: composes to é
	}
	for _, p := range allowed {
		if err := Validate(p); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", p, err)
		}
	}
}
