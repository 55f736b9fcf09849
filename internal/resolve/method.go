package resolve

import "net/http"

// ValidMethod reports whether m is a method a route may allow and the proxy
// forwards: one or more upper-case letters. HTTP allows any token, but
// every registered method is letters only, and a rule shared by both sides
// means a route cannot allow a method the proxy would always refuse.
func ValidMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return m != ""
}

// NeverAllowed reports whether m may never be allowed: CONNECT would turn
// the proxy into a tunnel, and TRACE echoes the request, injected key
// included, back to the caller.
func NeverAllowed(m string) bool {
	return m == http.MethodConnect || m == http.MethodTrace
}
